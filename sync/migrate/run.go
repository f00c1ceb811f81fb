package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/cutover"
	"github.com/reshard/reshard/sync/ddl"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/schema"
	"github.com/reshard/reshard/sync/stream"
	"github.com/reshard/reshard/sync/task"
)

// switchRequest asks a streaming migration to cut over (or roll back).
type switchRequest struct {
	reply chan switchReply
}

type switchReply struct {
	state, slot string
	err         error
}

// runner runs one migration's task: the phase sequence, from the phase its
// state is in.
type runner struct {
	e *Engine
	m *migration
	t *task.Task
	j *job.Job
}

// update changes the migration's state and persists it (waiting for the
// write). The write is not cut short by the task's end: a stopped or
// interrupted task records where it was.
func (r *runner) update(ctx context.Context, change func(st *State)) error {
	r.m.mu.Lock()
	change(&r.m.st)
	r.m.st.Version++
	st := r.m.st
	r.m.mu.Unlock()
	r.t.SetState(st.Phase)
	r.t.SetNote(st.Note)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeWriteTimeout+5*time.Second)
	defer cancel()
	if err := r.e.store.Save(wctx, st); err != nil {
		return fmt.Errorf("persist the state of task %s: %w", st.ID, err)
	}
	return nil
}

// run is the task function of a migration.
func (r *runner) run(ctx context.Context) (task.Outcome, error) {
	defer func() {
		// Finished tables stay listed in SHOW TABLE_COPIES until the task
		// ends.
		go func() { <-r.t.Done(); r.e.reg.RemoveCopies(r.t.ID) }()
	}()
	j, err := r.e.job(r.m.state())
	if err != nil {
		return task.Outcome{}, err
	}
	r.j = j
	if err := r.update(ctx, func(*State) {}); err != nil {
		return task.Outcome{}, err
	}
	return r.end(ctx, r.loop(ctx))
}

// loop runs phases until the migration ends, fails, or its task is
// stopped.
func (r *runner) loop(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var err error
		switch phase := r.m.state().Phase; phase {
		case task.StateSchemaPre:
			err = r.preAndCopy(ctx)
		case task.StateCopying:
			err = r.copy(ctx)
		case task.StateSchemaPost:
			err = r.post(ctx)
		case task.StateStreaming, task.StateReverseStreaming:
			err = r.stream(ctx)
		case task.StateCutover:
			err = r.resumeCutover(ctx)
		case task.StateRollback:
			err = r.resumeRollback(ctx)
		default:
			return fmt.Errorf("task %s is in unknown phase %q", r.t.ID, phase)
		}
		if err != nil {
			return err
		}
	}
}

// end turns how the loop ended into the task's outcome, and records it.
func (r *runner) end(ctx context.Context, err error) (task.Outcome, error) {
	st := r.m.state()
	cause := context.Cause(ctx)
	switch {
	case ctx.Err() != nil && errors.Is(cause, task.ErrShutdown):
		// The persisted phase is the one it ran: the next start of reshard
		// continues it.
		return task.Outcome{State: task.StateStopped, Message: "interrupted by a shutdown of reshard: it continues when reshard starts again"}, nil
	case ctx.Err() != nil && errors.Is(cause, errAborting):
		return task.Outcome{State: task.StateStopped, Message: "stopped by ABORT_TASK"}, nil
	case ctx.Err() != nil && st.Phase == task.StateReverseStreaming && r.finishing():
		// STOP_TASK after a cutover finishes the migration.
		rep, ferr := r.e.teardown(context.WithoutCancel(ctx), r.j, st, teardownOptions{})
		if ferr != nil {
			_ = r.update(ctx, func(st *State) { st.Failed = "finishing the migration: " + ferr.Error() })
			return task.Outcome{State: task.StateFailed, Message: r.m.state().message()}, nil
		}
		r.e.forget(st.ID)
		r.e.log.Info("migration finished: reverse replication stopped, its slots, origins and reshard's state removed",
			"task", st.ID, "source", st.Source, "destination", st.Destination)
		return task.Outcome{State: task.StateDone, Message: "finished: " + rep.Summary()}, nil
	case ctx.Err() != nil:
		msg := fmt.Sprintf("stopped by STOP_TASK in state %s; the slots %s keep the changes since (they retain WAL): %s continues it, ABORT_TASK %s removes it",
			st.Phase, joinNames(r.slotsInUse(st)), st.Resume, st.ID)
		_ = r.update(ctx, func(st *State) { st.Stopped, st.Note = msg, "" })
		return task.Outcome{State: task.StateStopped, Message: msg}, nil
	case err != nil:
		if uerr := r.update(ctx, func(st *State) { st.Failed, st.Note = err.Error(), "" }); uerr != nil {
			r.e.log.Warn("could not record the failure", "task", st.ID, "error", uerr)
		}
		return task.Outcome{State: task.StateFailed, Message: r.m.state().message()}, nil
	}
	return task.Outcome{}, nil
}

// finishing tells whether STOP_TASK asked to finish the migration (it was
// reverse streaming when asked).
func (r *runner) finishing() bool {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	return r.m.finish
}

func (r *runner) slotsInUse(st State) []string {
	return st.SlotsInUse(len(r.j.Source.Shards), len(r.j.Destination.Shards))
}

// schema runs a schema phase, then moves to next.
func (r *runner) schema(ctx context.Context, phase schema.Phase, next string) error {
	if _, err := schema.Run(ctx, r.j, schema.Request{Phase: phase}); err != nil {
		return fmt.Errorf("SCHEMA_SYNC %s: %w", phase, err)
	}
	return r.update(ctx, func(st *State) { st.Phase = next })
}

// post is SCHEMA_SYNC POST of a RESHARD: planned from the dump its PRE
// took at the slot's snapshot (saved on destination shard 0, so a restart
// in between plans from it too), or, without one (a migration of an
// older reshard), from the schema as it is now.
func (r *runner) post(ctx context.Context) error {
	st := r.m.state()
	dump, err := loadDump(ctx, r.j, st.Slot)
	if err != nil {
		return fmt.Errorf("SCHEMA_SYNC %s: %w", schema.PhasePost, err)
	}
	if _, err := schema.Run(ctx, r.j, schema.Request{Phase: schema.PhasePost, Dump: dump}); err != nil {
		return fmt.Errorf("SCHEMA_SYNC %s: %w", schema.PhasePost, err)
	}
	if err := r.update(ctx, func(st *State) { st.Phase = task.StateStreaming }); err != nil {
		return err
	}
	return forgetDump(ctx, r.j, st.Slot)
}

// dumpAttempts bounds how often RESHARD makes new slots and dumps again
// when a table was dropped or renamed between its slots and its dump.
const dumpAttempts = 5

// preAndCopy is RESHARD's SCHEMA_SYNC PRE and copy from one point of the
// source: DDL capture is installed (resharding_ddl = "replicate"), the
// slots are created first, the schema is dumped at source shard 0's
// exported snapshot (pg_dump --snapshot) and applied on the shards, and
// the copy reads at the same snapshots, so the shards' schema, the copied
// rows and the stream's start are one point (DDL run since is in the
// stream). The snapshots live while their replication connections stay
// idle: pg_dump and every copy worker import them before anything else
// runs there, all in this phase. A copy already recorded (a migration
// continued) resumes with its slots after PRE from the schema as it is;
// slots made before the copy was recorded (a restart in between) are
// dropped and made again.
func (r *runner) preAndCopy(ctx context.Context) error {
	st := r.m.state()
	if st.Kind != KindReshard {
		return r.schema(ctx, schema.PhasePre, task.StateCopying)
	}
	if err := ddl.Prepare(ctx, r.j); err != nil {
		return fmt.Errorf("SCHEMA_SYNC PRE: %w", err)
	}
	recorded, err := copier.StaleSlots(ctx, r.j, st.Slot)
	if err != nil {
		return fmt.Errorf("SCHEMA_SYNC PRE: %w", err)
	}
	var slots *copier.Slots
	var res *schema.Result
	for attempt := 1; ; attempt++ {
		req := schema.Request{Phase: schema.PhasePre}
		if !recorded {
			if slots, err = copier.CreateSlots(ctx, r.j, st.Slot); err != nil {
				return fmt.Errorf("SCHEMA_SYNC PRE: %w", err)
			}
			req.Snapshot = slots.Snapshot(0)
		}
		res, err = schema.Run(ctx, r.j, req)
		if err == nil {
			break
		}
		if slots != nil && errors.Is(err, schema.ErrChangedSinceSnapshot) {
			// A table was dropped or renamed between the slots and the
			// dump: pg_dump cannot lock it by its name at the snapshot.
			// New slots, a new snapshot: the statement is then in the
			// dump, not in the stream.
			slots.Drop(r.j)
			slots = nil
			if attempt < dumpAttempts {
				r.e.log.Warn("a table was dropped or renamed on the source while RESHARD dumped its schema: new slots, dumping again", "task", st.ID, "attempt", attempt, "error", err)
				continue
			}
			return fmt.Errorf("SCHEMA_SYNC %s: %w (%d attempts, each with new slots: DDL dropping or renaming tables kept running on the source while RESHARD dumped the schema; run RESHARD again once it has ended)", schema.PhasePre, err, attempt)
		}
		slots.Close()
		return fmt.Errorf("SCHEMA_SYNC %s: %w", schema.PhasePre, err)
	}
	defer slots.Close()
	if slots != nil {
		// POST plans from the same dump: the indexes and constraints of
		// the schema the rows are copied with (the source's may have more
		// by then, made by DDL the stream carries, or fewer).
		if err := saveDump(ctx, r.j, st.Slot, res.Dump); err != nil {
			return fmt.Errorf("SCHEMA_SYNC %s: %w", schema.PhasePre, err)
		}
	}
	if err := r.update(ctx, func(st *State) { st.Phase = task.StateCopying }); err != nil {
		return err
	}
	return r.copyWith(ctx, slots)
}

// copy copies the publication with the migration's slot (resuming an
// earlier copy with it), then moves to POST (RESHARD) or streaming. A
// RESHARD whose copy was not recorded yet (a restart after its slots were
// made) goes back to PRE: the schema, the rows and the stream start from
// one new point.
func (r *runner) copy(ctx context.Context) error {
	st := r.m.state()
	if st.Kind == KindReshard {
		recorded, err := copier.StaleSlots(ctx, r.j, st.Slot)
		if err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		if !recorded {
			return r.update(ctx, func(st *State) { st.Phase = task.StateSchemaPre })
		}
	}
	return r.copyWith(ctx, nil)
}

// copyWith runs the copy (with the slots made for it, if any), then moves
// to POST (RESHARD) or streaming.
func (r *runner) copyWith(ctx context.Context, slots *copier.Slots) error {
	st := r.m.state()
	if err := ddl.Prepare(ctx, r.j); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if _, err := copier.Run(ctx, r.j, copier.Request{Slot: st.Slot, Slots: slots}); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	next := task.StateStreaming
	if st.Kind == KindReshard {
		next = task.StateSchemaPost
	}
	return r.update(ctx, func(st *State) { st.Phase = next })
}

// streamJob is the stream the migration runs now: forward from the
// source, or after a cutover, reverse from the shards. Its sessions write
// into a side reshard closed to the application (the old database after a
// cutover, the shards after a rollback).
func (r *runner) streamJob(st State) (*job.Job, stream.Request) {
	if st.Direction == Reverse {
		return r.j.Reversed().WritableDestination(), stream.Request{Slot: st.Reverse, SourceRules: r.j.Destination, Hold: r.m.holder()}
	}
	return r.j.WritableDestination(), stream.Request{Slot: st.Forward, CopyData: st.Copied, Hold: r.m.holder()}
}

// running is one stream.Run in the background.
type running struct {
	cancel  context.CancelFunc
	done    chan error
	stopped bool
	err     error
}

func startStream(ctx context.Context, j *job.Job, req stream.Request) *running {
	sctx, cancel := context.WithCancel(ctx)
	s := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- stream.Run(sctx, j, req) }()
	return s
}

// stop ends the stream and returns how it ended (once; later calls return
// the same).
func (s *running) stop() error {
	if !s.stopped {
		s.cancel()
		s.err = <-s.done
		s.stopped = true
	}
	return s.err
}

// stream runs the stream of the migration's direction until the task's
// context ends (nil), the stream fails, or a CUTOVER switches the
// direction (nil, the state says the new phase). A cutover that does not
// happen leaves the stream running, or starts it again if it was stopped.
func (r *runner) stream(ctx context.Context) error {
	for {
		j, req := r.streamJob(r.m.state())
		s := startStream(ctx, j, req)
		for !s.stopped {
			select {
			case err := <-s.done:
				s.stopped, s.err = true, err
				if err != nil {
					return err
				}
				return nil
			case req := <-r.m.control:
				switched, rep := r.switchOver(ctx, s)
				req.reply <- rep
				if switched {
					s.stop()
					return nil
				}
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// switchOver cuts over (forward) or rolls back (reverse), s being the
// stream in force. It reports whether the direction switched.
func (r *runner) switchOver(ctx context.Context, s *running) (bool, switchReply) {
	if r.m.state().Direction == Reverse {
		return r.rollback(ctx, s)
	}
	return r.cutover(ctx, s)
}

// step records a cutover step reached (the commit point flips the
// direction) and pauses there when asked to (PauseEnv).
func (r *runner) step(ctx context.Context, step string) error {
	err := r.update(ctx, func(st *State) {
		st.Step = step
		if step == cutover.StepSourceClosed {
			st.Direction = Reverse
		}
	})
	if err != nil {
		return err
	}
	return r.pause(ctx, step)
}

// rollbackStep is step for a rollback.
func (r *runner) rollbackStep(ctx context.Context, step string) error {
	err := r.update(ctx, func(st *State) {
		st.Step = step
		if step == cutover.RollbackShardsClosed {
			st.Direction = Forward
			st.Round++
		}
	})
	if err != nil {
		return err
	}
	return r.pause(ctx, step)
}

// pause holds the migration at step until its task ends, when PauseEnv
// names the step; then the cutover goes on as it would after any
// cancellation (undone before its commit point, completed after). With
// PauseUntilEnv the pause also ends when that file appears, and the
// cutover goes on from the step.
func (r *runner) pause(ctx context.Context, step string) error {
	if r.e.pauseAt != step {
		return nil
	}
	r.e.log.Warn("paused at a cutover step ("+PauseEnv+"): only the end of the task goes on", "task", r.t.ID, "step", step)
	if r.e.pauseUntil == "" {
		<-ctx.Done()
		return nil
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if _, err := os.Stat(r.e.pauseUntil); err == nil {
				r.e.log.Warn("pause released ("+PauseUntilEnv+"): the cutover goes on", "task", r.t.ID, "step", step)
				return nil
			}
		}
	}
}

func (r *runner) cutoverRequest(st State, s *running) cutover.Request {
	req := cutover.Request{Slot: st.Forward, ReverseSlot: st.Reverse, Step: r.step}
	if s != nil {
		req.StopForward = s.stop
	}
	return req
}

// cutover runs CUTOVER on the forward stream s.
func (r *runner) cutover(ctx context.Context, s *running) (bool, switchReply) {
	if err := r.update(ctx, func(st *State) {
		st.Phase, st.Reverse, st.Step, st.Note = task.StateCutover, reverseBase(st.Forward), "", ""
	}); err != nil {
		_ = r.update(ctx, func(st *State) { st.Phase, st.Reverse = task.StateStreaming, "" })
		return false, switchReply{err: err}
	}
	st := r.m.state()
	_, err := cutover.Run(ctx, r.j, r.cutoverRequest(st, s))
	if err != nil && cutover.Committed(r.m.state().Step) {
		// Past the commit point (the source is closed): the cutover is
		// completed, never undone; resumeCutover retries what failed (a
		// shard down while its writes were opened, say).
		r.e.log.Warn("the cutover passed its commit point but could not complete yet: retrying", "task", r.t.ID, "step", r.m.state().Step, "error", err)
		_ = r.update(ctx, func(st *State) { st.Note = "completing the cutover: " + err.Error() })
		return true, switchReply{err: fmt.Errorf("the cutover passed its commit point (the source is closed) and is being completed: %w", err)}
	}
	if err != nil {
		// Undone: the source takes the writes, the forward stream goes on.
		_ = r.update(ctx, func(st *State) {
			st.Phase, st.Direction, st.Reverse, st.Step = task.StateStreaming, Forward, "", ""
			st.Note = "the last CUTOVER did not happen: " + err.Error()
		})
		return false, switchReply{err: err}
	}
	if err := r.update(ctx, func(st *State) {
		st.Phase, st.Direction, st.Forward, st.Copied, st.Step, st.Note = task.StateReverseStreaming, Reverse, "", false, "", ""
	}); err != nil {
		r.e.log.Warn("could not record the cutover", "task", r.t.ID, "error", err)
	}
	return true, switchReply{state: task.StateReverseStreaming, slot: st.Reverse}
}

// rollback runs CUTOVER on the reverse stream s: back to the old database.
func (r *runner) rollback(ctx context.Context, s *running) (bool, switchReply) {
	next := r.m.state().forwardBase(r.m.state().Round + 1)
	if err := r.update(ctx, func(st *State) { st.Phase, st.Forward, st.Step, st.Note = task.StateRollback, next, "", "" }); err != nil {
		_ = r.update(ctx, func(st *State) { st.Phase, st.Forward = task.StateReverseStreaming, "" })
		return false, switchReply{err: err}
	}
	st := r.m.state()
	err := cutover.Rollback(ctx, r.j, r.rollbackRequest(st, s))
	if err != nil && cutover.RolledBack(r.m.state().Step) {
		// Past the rollback's commit point (the shards are closed): it is
		// completed, never undone; resumeRollback retries what failed.
		r.e.log.Warn("the rollback passed its commit point but could not complete yet: retrying", "task", r.t.ID, "step", r.m.state().Step, "error", err)
		_ = r.update(ctx, func(st *State) { st.Note = "completing the rollback: " + err.Error() })
		return true, switchReply{err: fmt.Errorf("the rollback passed its commit point (the shards are closed) and is being completed: %w", err)}
	}
	if err != nil {
		_ = r.update(ctx, func(st *State) {
			st.Phase, st.Direction, st.Forward, st.Step = task.StateReverseStreaming, Reverse, "", ""
			st.Note = "the last CUTOVER (rollback) did not happen: " + err.Error()
		})
		return false, switchReply{err: err}
	}
	if err := r.update(ctx, func(st *State) {
		st.Phase, st.Direction, st.Reverse, st.Copied, st.Step, st.Note = task.StateStreaming, Forward, "", false, "", ""
	}); err != nil {
		r.e.log.Warn("could not record the rollback", "task", r.t.ID, "error", err)
	}
	return true, switchReply{state: task.StateStreaming, slot: next}
}

func (r *runner) rollbackRequest(st State, s *running) cutover.RollbackRequest {
	req := cutover.RollbackRequest{ReverseSlot: st.Reverse, NewSlot: st.Forward, Step: r.rollbackStep}
	if s != nil {
		req.StopReverse = s.stop
	}
	return req
}

// resumeCutover continues a cutover a restart interrupted: past its commit
// point it is completed, before it undone.
func (r *runner) resumeCutover(ctx context.Context) error {
	st := r.m.state()
	if cutover.Committed(st.Step) {
		r.e.log.Info("completing the cutover a restart interrupted", "task", st.ID, "step", st.Step)
		if err := r.retry(ctx, "complete the cutover", func() error {
			st := r.m.state()
			return cutover.Complete(context.WithoutCancel(ctx), r.j, r.cutoverRequest(st, nil), st.Step)
		}); err != nil {
			return err
		}
		return r.update(ctx, func(st *State) {
			st.Phase, st.Direction, st.Forward, st.Copied, st.Step = task.StateReverseStreaming, Reverse, "", false, ""
		})
	}
	r.e.log.Info("undoing the cutover a restart interrupted before the source was closed", "task", st.ID, "step", st.Step)
	if err := cutover.Undo(context.WithoutCancel(ctx), r.j, r.cutoverRequest(st, nil)); err != nil {
		return fmt.Errorf("undo the interrupted cutover: %w", err)
	}
	return r.update(ctx, func(st *State) {
		st.Phase, st.Direction, st.Reverse, st.Step = task.StateStreaming, Forward, "", ""
		st.Note = fmt.Sprintf("a restart of reshard interrupted CUTOVER before the source was closed: it was undone, the source takes the writes; CUTOVER %s tries again", st.ID)
	})
}

// resumeRollback continues a rollback a restart interrupted.
func (r *runner) resumeRollback(ctx context.Context) error {
	st := r.m.state()
	if cutover.RolledBack(st.Step) {
		r.e.log.Info("completing the rollback a restart interrupted", "task", st.ID, "step", st.Step)
		if err := r.retry(ctx, "complete the rollback", func() error {
			st := r.m.state()
			return cutover.CompleteRollback(context.WithoutCancel(ctx), r.j, r.rollbackRequest(st, nil), st.Step)
		}); err != nil {
			return err
		}
		return r.update(ctx, func(st *State) {
			st.Phase, st.Direction, st.Reverse, st.Copied, st.Step = task.StateStreaming, Forward, "", false, ""
		})
	}
	r.e.log.Info("undoing the rollback a restart interrupted before the shards were closed", "task", st.ID, "step", st.Step)
	if err := cutover.UndoRollback(context.WithoutCancel(ctx), r.j, r.rollbackRequest(st, nil)); err != nil {
		return fmt.Errorf("undo the interrupted rollback: %w", err)
	}
	return r.update(ctx, func(st *State) {
		st.Phase, st.Direction, st.Forward, st.Step = task.StateReverseStreaming, Reverse, "", ""
		st.Note = fmt.Sprintf("a restart of reshard interrupted a rollback before the shards were closed: it was undone, the shards take the writes; CUTOVER %s tries again", st.ID)
	})
}

// retry runs fn (a switch's completion past its commit point: it must
// happen, and each of its steps is idempotent) until it succeeds, with
// backoff, noting each failure in SHOW TASKS. When the task ends first, it
// returns ctx's error: the next start of reshard completes it.
func (r *runner) retry(ctx context.Context, what string, fn func() error) error {
	backoff := 500 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return nil
		}
		r.e.log.Warn(what+" failed, retrying", "task", r.t.ID, "error", err, "backoff", backoff)
		r.t.SetNote(fmt.Sprintf("%s failed (%v): retrying", what, err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func joinNames(names []string) string {
	if len(names) == 0 {
		return "(none)"
	}
	out := names[0]
	for _, n := range names[1:] {
		out += ", " + n
	}
	return out
}
