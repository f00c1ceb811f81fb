package migrate

import (
	"context"
	"fmt"
	"time"

	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/task"
)

// Stop ends task id (STOP_TASK) and says what it did. A migration
// streaming in reverse (after its cutover) is finished: reverse
// replication stops and its slots, origins and state are removed. Any
// other running task stops, resumable: a migration keeps its slots and
// state, and the command that started it continues it. A task that had
// already ended is left as it is, and the answer says so.
func (e *Engine) Stop(ctx context.Context, id string) (string, error) {
	t, ok := e.tasks.Get(id)
	if !ok {
		return "", job.Errorf("42704", "task %q does not exist", id).WithHint("SHOW TASKS lists the tasks")
	}
	m, isMigration := e.get(id)
	if !t.Running() {
		row := t.Row()
		if !isMigration {
			return fmt.Sprintf("task %s had already ended (%s): nothing was stopped", id, row.State), nil
		}
		st := m.state()
		kept := joinNames(st.SlotsInUse(e.shardCounts(st)))
		switch row.State {
		case task.StateFailed:
			return fmt.Sprintf("task %s had already failed (%s): nothing was running, nothing was stopped; its slots %s are kept and retain WAL: %s retries it, ABORT_TASK %s removes them",
				id, st.Failed, kept, st.Resume, id), nil
		default:
			return fmt.Sprintf("task %s was already %s: nothing was stopped; its slots %s are kept and retain WAL: %s continues it, ABORT_TASK %s removes them",
				id, row.State, kept, st.Resume, id), nil
		}
	}
	if isMigration && t.Row().State == task.StateReverseStreaming {
		m.mu.Lock()
		m.finish = true
		m.mu.Unlock()
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := e.tasks.Stop(sctx, id); err != nil {
		return "", job.Wrap("55006", err, "task %s did not stop within a minute: %v", id, err)
	}
	row := t.Row()
	if row.Error == "" {
		return fmt.Sprintf("task %s stopped (%s)", id, row.State), nil
	}
	return row.Error, nil
}

func (e *Engine) shardCounts(st State) (int, int) {
	var sources, shards int
	if cl, ok := e.cat.Cluster(st.Source); ok {
		sources = len(cl.Shards)
	}
	if cl, ok := e.cat.Cluster(st.Destination); ok {
		shards = len(cl.Shards)
	}
	return sources, shards
}

// Abort ends migration id for good, in whatever state it is (running,
// stopped, failed, interrupted, mid-cutover): its task stops, a cutover or
// rollback left mid-way is completed or undone, and every slot (of every
// round, on every source shard and shard), every replication origin of
// both directions and its reshard state are removed; with withData also
// the rows copied to the shards (refused once the shards are the
// application's side). The report lists what was removed.
func (e *Engine) Abort(ctx context.Context, id string, withData bool) (*Report, error) {
	t, tok := e.tasks.Get(id)
	m, ok := e.get(id)
	if !tok {
		return nil, job.Errorf("42704", "task %q does not exist", id).WithHint("SHOW TASKS lists the tasks")
	}
	if !ok {
		switch t.Kind {
		case KindReshard, KindCopyData, KindReplicate:
			return nil, job.Errorf("55000", "task %s already ended (%s): nothing of it is left to abort", id, t.Row().State)
		}
		return nil, job.Errorf("55000", "task %s is a %s task, not a migration: nothing to abort", id, t.Kind).
			WithHint("STOP_TASK %s stops it", id)
	}
	if err := e.stopRunning(ctx, id, errAborting); err != nil {
		return nil, err
	}
	// Until the teardown is done, a restart must not continue the
	// migration: it lists it, and ABORT_TASK finishes the job.
	m.mu.Lock()
	m.st.Stopped = fmt.Sprintf("being aborted: ABORT_TASK %s removes what is left of it", id)
	m.st.Version++
	st := m.st
	m.mu.Unlock()
	if err := e.store.Save(ctx, st); err != nil {
		return nil, fmt.Errorf("abort task %s: %w", id, err)
	}
	j, err := e.job(st)
	if err != nil {
		return nil, err
	}
	rep, err := e.teardown(ctx, j, st, teardownOptions{withData: withData})
	if err != nil {
		t.SetState(task.StateFailed)
		t.SetNote(fmt.Sprintf("ABORT_TASK failed (%v) after it %s: ABORT_TASK %s tries again", err, rep.Summary(), id))
		return rep, fmt.Errorf("abort task %s: %w", id, err)
	}
	e.forget(id)
	t.SetState(task.StateAborted)
	t.SetNote("aborted: " + rep.Summary())
	e.log.Info("migration aborted", "task", id, "removed", rep.Summary())
	return rep, nil
}
