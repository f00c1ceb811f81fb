// Package cutover is the last stage of resharding: it stops writes on the
// old database, lets the stream drain, finishes the schema (shard-local
// sequences, reverse publication), and prepares reverse replication (the
// new shards streaming back into the old database) so the operator can roll
// back. Rollback is the same switch the other way.
//
// A cutover is a sequence of steps, each reported to the caller (which
// persists it) before the next one starts. One step is the commit point:
// before it, a failure or a restart undoes what was done (Undo) and the old
// side keeps the writes; from it on, the cutover is completed (Complete),
// also after a restart. There is never a moment both sides take writes.
package cutover

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/ddl"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/schema"
)

// The steps of a cutover, in order, each reported once done. (The caller
// records the reverse slot's name before Run starts: an undo drops it
// whether or not it was created.)
const (
	StepWritesBlocked  = "writes_blocked"
	StepDrained        = "drained"
	StepForwardStopped = "forward_stopped"
	StepSchema         = "schema_cutover"
	StepReverseSlots   = "reverse_slots"
	// StepSourceClosed is the commit point: the old database is read-only
	// for the application; the cutover completes from here.
	StepSourceClosed = "source_closed"
	StepShardsOpen   = "shards_open"
	StepFinished     = "finished"
)

var cutoverSteps = []string{StepWritesBlocked, StepDrained, StepForwardStopped, StepSchema, StepReverseSlots,
	StepSourceClosed, StepShardsOpen, StepFinished}

// Committed tells whether a cutover that reached step is past its commit
// point (and must be completed, not undone).
func Committed(step string) bool {
	return stepIndex(cutoverSteps, step) >= stepIndex(cutoverSteps, StepSourceClosed)
}

func stepIndex(steps []string, step string) int {
	for i, s := range steps {
		if s == step {
			return i
		}
	}
	return -1
}

// Request is one cutover of a job's streaming task.
type Request struct {
	// Slot is the forward stream's slot (per source shard: <Slot>_<k> when
	// there are several).
	Slot string
	// ReverseSlot is the slot to create on the destination shards for
	// reverse replication (<ReverseSlot>_<k> when there are several).
	ReverseSlot string
	// StopForward stops the forward stream and waits for it; called once
	// the stream has drained.
	StopForward func() error
	// Step is told each step reached; Run waits for it (the caller
	// persists the step). An error before the commit point aborts the
	// cutover; after it, the cutover goes on.
	Step func(ctx context.Context, step string) error
}

func (r *Request) step(ctx context.Context, step string) error {
	if r.Step == nil {
		return nil
	}
	return r.Step(ctx, step)
}

// Result is a completed cutover.
type Result struct {
	// ReverseSlot is the slot name on the destination shards (per shard
	// <ReverseSlot>_<k> when there are several) streaming back.
	ReverseSlot string
}

// aborted is a cutover (or rollback) that did not happen: writes are
// unblocked and the stream goes on. SQLSTATE 57014, as a cancelled
// statement.
func aborted(log hclog.Logger, what, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	log.Warn(what+" aborted", "reason", msg)
	return job.Errorf("57014", "%s", what+" aborted, "+msg)
}

// lag is the bytes between the source's WAL end and what the slot confirmed.
func lag(ctx context.Context, conn *pgx.Conn, slot string) (int64, pglogrepl.LSN, error) {
	var l int64
	var confirmed string
	err := conn.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&l, &confirmed)
	if err != nil {
		return 0, 0, fmt.Errorf("lag of slot %s: %w", slot, err)
	}
	lsn, _ := pglogrepl.ParseLSN(confirmed)
	return l, lsn, nil
}

// Run performs the cutover:
//  1. wait until every forward slot's lag is under
//     cutover_traffic_stop_threshold;
//  2. block writes on the source: every published table locked in SHARE
//     mode (reads go on, writes wait);
//  3. wait until the slots have confirmed the source's WAL position taken
//     under the locks (lag 0);
//  4. stop the forward stream;
//  5. run SCHEMA_SYNC CUTOVER (sequences interleaved, shard-local id
//     generators) and POST_CUTOVER (the publication on the shards);
//  6. create the reverse slots on the shards: every write on a shard from
//     here on streams back;
//  7. make the source read-only for new sessions and end the application
//     sessions still waiting (the commit point);
//  8. open the shards to writes (a rollback closed them), release the
//     locks, drop the forward slots and their origins, run cutover_command.
//
// Before step 7 any failure or cutover_timeout aborts: Undo drops the
// reverse slots and unblocks the source; the caller streams forward again.
func Run(ctx context.Context, j *job.Job, req Request) (*Result, error) {
	log := j.Logger("cutover")
	g := j.Catalog.Config.General
	bud := newBudget(g, log)
	src := j.Source
	slots := copier.SlotNames(req.Slot, len(src.Shards))
	conns, err := j.ConnectSources(ctx)
	if err != nil {
		return nil, err
	}
	defer conns.Close()
	abort := func(format string, args ...any) error {
		return aborted(log, "cutover", "writes on the source unblocked, streaming goes on: "+format, args...)
	}

	// 1. Lag under the traffic-stop threshold.
	if err := waitLag(ctx, conns, slots, g.CutoverTrafficStopThreshold, bud); err != nil {
		return nil, abort("%v", err)
	}

	// 2. Block writes: SHARE locks on every published table.
	tables, err := copier.Tables(ctx, conns[0], j.Publication, j.Destination)
	if err != nil {
		return nil, abort("%v", err)
	}
	b, err := blockWrites(ctx, j.ConnectSources, src.Shards, tables, bud)
	if err != nil {
		return nil, abort("%v", err)
	}
	defer b.release()
	fail := func(err error) (*Result, error) {
		b.release()
		if uerr := Undo(context.WithoutCancel(ctx), j, req); uerr != nil {
			log.Error("undoing the cutover failed: run CUTOVER again, or ABORT_TASK", "error", uerr)
		}
		var je *job.Error
		if errors.As(err, &je) {
			return nil, err
		}
		return nil, abort("%v", err)
	}
	log.Info("writes blocked on the source", "tables", len(tables))
	if err := req.step(ctx, StepWritesBlocked); err != nil {
		return fail(err)
	}

	// 3. Drain: the slots confirm the WAL position taken under the locks.
	if err := drain(ctx, b.conns, conns, slots, bud); err != nil {
		return fail(err)
	}
	log.Info("stream drained")
	if err := req.step(ctx, StepDrained); err != nil {
		return fail(err)
	}

	// 4. The forward stream stops.
	if err := req.StopForward(); err != nil && !errors.Is(err, context.Canceled) {
		return fail(fmt.Errorf("stop the forward stream: %w", err))
	}
	if err := req.step(ctx, StepForwardStopped); err != nil {
		return fail(err)
	}

	// 5. Schema: sequences and the reverse publication. The shards may be
	// read-only for the application (after a rollback): these sessions
	// are reshard's.
	for _, phase := range []schema.Phase{schema.PhaseCutover, schema.PhasePostCutover} {
		if _, err := schema.Run(ctx, j, schema.Request{Phase: phase, ReadOnlyOff: true}); err != nil {
			return fail(fmt.Errorf("SCHEMA_SYNC %s: %w", phase, err))
		}
	}
	if err := req.step(ctx, StepSchema); err != nil {
		return fail(err)
	}

	// 6. Reverse slots, before any write can reach a shard; DDL capture
	// on the shards first (resharding_ddl = "replicate"): the
	// application's DDL there reaches the old database in the reverse
	// stream.
	if err := ddl.Prepare(ctx, j.Reversed()); err != nil {
		log.Warn("DDL capture could not be installed on the shards: DDL run there after the cutover does not reach the old database", "error", err)
	}
	if err := createSlots(ctx, j, j.Destination, req.ReverseSlot); err != nil {
		return fail(err)
	}
	if err := req.step(ctx, StepReverseSlots); err != nil {
		return fail(err)
	}

	// 7. The commit point: the source becomes read-only for the
	// application.
	for i, sh := range src.Shards {
		if err := closeToApplication(ctx, conns[i], sh.Primary.Database, b.conns[i]); err != nil {
			return fail(fmt.Errorf("%s: %w", sh.Primary, err))
		}
	}
	if err := req.step(ctx, StepSourceClosed); err != nil {
		return fail(err)
	}
	b.release()

	// 8. Completed even if ctx ends now: every step is idempotent.
	if err := Complete(context.WithoutCancel(ctx), j, req, StepSourceClosed); err != nil {
		return nil, err
	}
	return &Result{ReverseSlot: req.ReverseSlot}, nil
}

// Undo takes back a cutover that stopped before its commit point (a
// failure, or a restart of reshard): the reverse slots are dropped and the
// source is writable again. The forward slots were not touched: the
// forward stream continues from them.
func Undo(ctx context.Context, j *job.Job, req Request) error {
	log := j.Logger("cutover")
	var errs []error
	if req.ReverseSlot != "" {
		if err := dropSlots(ctx, j.ConnectDestination, len(j.Destination.Shards), req.ReverseSlot); err != nil {
			errs = append(errs, err)
		}
	}
	if err := OpenToApplication(ctx, j.ConnectSource, len(j.Source.Shards)); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	log.Info("cutover undone: the source takes the writes, the forward stream goes on", "slot", req.Slot)
	return nil
}

// Complete finishes a cutover that reached its commit point (from is the
// last step reached): the shards open to writes, the forward slots and
// their origins are dropped, cutover_command runs.
func Complete(ctx context.Context, j *job.Job, req Request, from string) error {
	log := j.Logger("cutover")
	g := j.Catalog.Config.General
	if stepIndex(cutoverSteps, from) < stepIndex(cutoverSteps, StepShardsOpen) {
		if err := OpenToApplication(ctx, j.ConnectDestination, len(j.Destination.Shards)); err != nil {
			return err
		}
		if err := req.step(ctx, StepShardsOpen); err != nil {
			log.Warn("could not record the cutover step", "step", StepShardsOpen, "error", err)
		}
		if g.CutoverCommand != "" {
			cmd := exec.CommandContext(ctx, "sh", "-c", g.CutoverCommand)
			cmd.Env = append(os.Environ(), "RESHARD_TASK="+j.Task, "RESHARD_SOURCE="+j.Source.Name, "RESHARD_DESTINATION="+j.Destination.Name)
			if out, err := cmd.CombinedOutput(); err != nil {
				log.Warn("cutover_command failed", "command", g.CutoverCommand, "error", err, "output", string(out))
			} else {
				log.Info("cutover_command ran", "command", g.CutoverCommand)
			}
		}
	}
	// The forward slots are done with: left behind they would hold WAL on
	// the old database (a rollback starts new ones).
	if err := dropSlots(ctx, j.ConnectSource, len(j.Source.Shards), req.Slot); err != nil {
		return err
	}
	if err := dropOrigins(ctx, j.ConnectDestinations, req.Slot, len(j.Source.Shards)); err != nil {
		return err
	}
	if err := req.step(ctx, StepFinished); err != nil {
		log.Warn("could not record the cutover step", "step", StepFinished, "error", err)
	}
	log.Info("cutover done: the shards are the writable side; reverse replication keeps the old database in sync", "reverse_slot", req.ReverseSlot)
	return nil
}
