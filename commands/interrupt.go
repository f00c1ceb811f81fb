package commands

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/progress"
)

// Interrupted is a foreground data command (the CLI's data-sync) that its
// context stopped (SIGINT, SIGTERM): where it stopped, and the slot that
// keeps the changes since, so that running it again with that slot
// continues it.
type Interrupted struct {
	// Phase is "copy" or "stream".
	Phase string
	// Slot is the replication slot (per source shard <Slot>_<k>).
	Slot string
	// Where says how far it got.
	Where string
}

func (e *Interrupted) Error() string {
	return fmt.Sprintf("interrupted %s; the slot %s keeps every change since", e.Where, e.Slot)
}

// interrupted describes where a foreground copy or stream of job j
// stopped.
func (e *Executor) interrupted(j *job.Job, phase, slot string) *Interrupted {
	out := &Interrupted{Phase: phase, Slot: slot}
	if phase == "copy" {
		done, all := 0, 0
		for _, c := range e.Registry.Copies() {
			if c.Task != j.Task {
				continue
			}
			all++
			if c.State == progress.CopyDone {
				done++
			}
		}
		out.Where = fmt.Sprintf("during the copy, with %d of %d copy units done (finished ones are not copied again)", done, all)
		return out
	}
	out.Where = "while streaming"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conns, err := j.ConnectSources(ctx)
	if err != nil {
		return out
	}
	defer conns.Close()
	var at []string
	for i, name := range copier.SlotNames(slot, len(conns)) {
		var lsn string
		if conns[i].QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&lsn) == nil {
			at = append(at, name+" at "+lsn)
		}
	}
	if len(at) > 0 {
		out.Where = "while streaming, everything applied up to " + strings.Join(at, ", ")
	}
	return out
}
