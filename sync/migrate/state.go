package migrate

import (
	"fmt"
	"time"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/cutover"
	"github.com/reshard/reshard/sync/task"
)

// Kinds of migration, as SHOW TASKS names them.
const (
	// KindReshard is RESHARD: PRE, copy, POST, stream, cutover.
	KindReshard = "reshard"
	// KindCopyData is COPY_DATA: copy, stream, cutover.
	KindCopyData = "copy_data"
	// KindReplicate is REPLICATE: stream from an existing slot, cutover.
	KindReplicate = "replicate"
)

// Directions of the stream a migration runs.
const (
	// Forward: the old database takes the writes, the shards follow it.
	Forward = "forward"
	// Reverse: after cutover the shards take the writes and the old
	// database follows them.
	Reverse = "reverse"
)

// State is what is persisted of a migration, on its destination's shard 0
// (reshard.migrations), every time it changes: enough to continue it after
// a restart of reshard in any phase, with its id, and to remove everything
// it created.
type State struct {
	// ID is the task id; it never changes.
	ID   string
	Kind string
	// Source, Destination and Publication are the route.
	Source, Destination, Publication string
	// Phase is the SHOW TASKS state the migration is in: schema_pre,
	// copying, schema_post, streaming, cutover, reverse_streaming,
	// rollback.
	Phase string
	// Direction is the stream in force: Forward until a cutover reaches
	// its commit point, Reverse until a rollback does.
	Direction string
	// Slot is the migration's slot name: the copy's slot, and the stem of
	// the slots of later rounds.
	Slot string
	// Forward is the forward stream's slot on the source shards ("" once a
	// cutover dropped it); Reverse the reverse stream's slot on the shards
	// ("" when none). A cutover or rollback under way records the slot it
	// creates here before it starts.
	Forward, Reverse string
	// Round counts the rollbacks done: the forward slot of round r > 0 is
	// <Slot>_f<r>.
	Round int
	// Step is the last step a cutover or rollback under way reached.
	Step string
	// Copied tells that the forward slot is the copy's own (round 0 of
	// RESHARD and COPY_DATA).
	Copied bool
	// Stopped is set when the operator stopped the migration (STOP_TASK):
	// it is not continued by itself after a restart. Failed is the error
	// of a failed migration, likewise not continued by itself.
	Stopped, Failed string
	// Resume is the command that continues the migration.
	Resume string
	// Note is what SHOW TASKS says of it while it runs (why a cutover was
	// undone, ...).
	Note      string
	StartedAt time.Time
	// Version orders the writes of the state: an older one never
	// overwrites a newer one.
	Version int64
}

// initialPhase is where a new migration of a kind starts.
func initialPhase(kind string) string {
	switch kind {
	case KindReshard:
		return task.StateSchemaPre
	case KindCopyData:
		return task.StateCopying
	}
	return task.StateStreaming
}

// forwardBase is the forward slot of round r.
func (s State) forwardBase(r int) string {
	if r == 0 {
		return s.Slot
	}
	return fmt.Sprintf("%s_f%d", s.Slot, r)
}

// reverseBase is the reverse slot that follows the forward slot fwd.
func reverseBase(fwd string) string { return fwd + "_rev" }

// forwardBases are every forward slot the migration may have created: one
// per round, and the next one (a rollback under way creates it).
func (s State) forwardBases() []string {
	out := make([]string, 0, s.Round+2)
	for r := 0; r <= s.Round+1; r++ {
		out = append(out, s.forwardBase(r))
	}
	return out
}

// SlotsInUse are the slot names the migration holds now: the forward
// slot on each of sources source shards, the reverse slot on each of
// shards destination shards.
func (s State) SlotsInUse(sources, shards int) []string {
	var out []string
	if s.Forward != "" {
		out = append(out, copier.SlotNames(s.Forward, sources)...)
	}
	if s.Reverse != "" {
		out = append(out, copier.SlotNames(s.Reverse, shards)...)
	}
	return out
}

// OriginsInUse are the replication origins the migration's streams use
// now: the forward stream's on the shards, the reverse stream's on the
// source shards.
func (s State) OriginsInUse(sources, shards int) []string {
	var out []string
	if s.Forward != "" {
		for k := 0; k < shards; k++ {
			out = append(out, cutover.OriginNames(s.Forward, sources, k)...)
		}
	}
	if s.Reverse != "" {
		for i := 0; i < sources; i++ {
			out = append(out, cutover.OriginNames(s.Reverse, shards, i)...)
		}
	}
	return out
}

// message is what SHOW TASKS says of a migration that is not running.
func (s State) message() string {
	switch {
	case s.Failed != "":
		return fmt.Sprintf("%s; %s retries it, ABORT_TASK %s removes its slots and state", s.Failed, s.Resume, s.ID)
	case s.Stopped != "":
		return s.Stopped
	}
	return fmt.Sprintf("interrupted in state %s by a restart of reshard: %s continues it", s.Phase, s.Resume)
}
