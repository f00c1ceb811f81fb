package commands

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/cutover"
	"github.com/reshard/reshard/sync/ddl"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/stream"
	"github.com/reshard/reshard/sync/task"
	"github.com/reshard/reshard/sync/verify"
)

// cutoverColumns answer CUTOVER.
var cutoverColumns = cols("task_id", TypeText, "state", TypeText, "slot", TypeText)

// streamControl lets CUTOVER reach the task that streams a route.
type streamControl struct {
	cutover chan cutoverRequest

	mu   sync.Mutex
	hold verify.Holder
}

// holder is what holds the task's running streams for VERIFY (nil while
// none can be held).
func (c *streamControl) holder() verify.Holder {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hold
}

// setHolder records what holds the streams now running (nil when none).
func (c *streamControl) setHolder(h verify.Holder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = h
}

type cutoverRequest struct {
	reply chan cutoverReply
}

type cutoverReply struct {
	state, slot string
	err         error
}

// controls holds the controls of streaming tasks.
type controls struct {
	mu sync.Mutex
	m  map[string]*streamControl
}

func (c *controls) add(id string) *streamControl {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*streamControl{}
	}
	ctl := &streamControl{cutover: make(chan cutoverRequest)}
	c.m[id] = ctl
	return ctl
}

func (c *controls) remove(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

func (c *controls) get(id string) (*streamControl, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctl, ok := c.m[id]
	return ctl, ok
}

// runStream streams a route for task t until ctx ends, serving CUTOVER:
// forward (source to shards) until a CUTOVER succeeds, then reverse (shards
// back into the source) until a second CUTOVER rolls back, then forward
// again from new slots, and so on. An aborted CUTOVER leaves the current
// direction streaming.
//
// finished reports that STOP_TASK ended a cut-over migration for good.
func (e *Executor) runStream(ctx context.Context, t *task.Task, j *job.Job, slot string, copied bool) (finished bool, err error) {
	ctl := e.controls.add(t.ID)
	defer e.controls.remove(t.ID)
	forward := slot
	for round := 1; ; round++ {
		reverse, err := e.forwardPhase(ctx, t, ctl, j, forward, copied)
		if err != nil || reverse == "" {
			return false, err
		}
		next := fmt.Sprintf("%s_f%d", slot, round)
		rolledBack, err := e.reversePhase(ctx, t, ctl, j, reverse, next)
		if err != nil {
			return false, err
		}
		if !rolledBack {
			// STOP_TASK on a reverse_streaming task finishes the migration.
			return true, e.finishMigration(j, reverse, forward)
		}
		forward, copied = next, false
	}
}

// forwardPhase streams source to shards; it returns the reverse slot after
// a successful CUTOVER, or "" when ctx ends.
func (e *Executor) forwardPhase(ctx context.Context, t *task.Task, ctl *streamControl, j *job.Job, slot string, copied bool) (string, error) {
	for {
		fctx, fcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- stream.Run(fctx, j, streamRequest(slot, copied)) }()
	wait:
		select {
		case err := <-done:
			fcancel()
			return "", err
		case req := <-ctl.cutover:
			t.SetState(task.StateCutover)
			stopped := false
			res, err := cutover.Run(ctx, j, cutover.Request{Slot: slot,
				StopForward: func() error {
					stopped = true
					fcancel()
					return <-done
				}})
			if err != nil {
				req.reply <- cutoverReply{err: err}
				t.SetState(task.StateStreaming)
				if stopped {
					continue // the forward stream was stopped: start it again
				}
				goto wait
			}
			fcancel()
			t.SetState(task.StateReverseStreaming)
			req.reply <- cutoverReply{state: task.StateReverseStreaming, slot: res.ReverseSlot}
			return res.ReverseSlot, nil
		}
	}
}

// reversePhase streams shards back into the source; it returns true after
// a successful rollback (CUTOVER on the reverse_streaming task).
func (e *Executor) reversePhase(ctx context.Context, t *task.Task, ctl *streamControl, j *job.Job, reverse, next string) (bool, error) {
	req := streamRequest(reverse, false)
	req.SourceRules = j.Destination
	for {
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- stream.Run(rctx, j.Reversed(), req) }()
	wait:
		select {
		case err := <-done:
			rcancel()
			return false, err
		case creq := <-ctl.cutover:
			t.SetState(task.StateCutover)
			stopped := false
			err := cutover.Rollback(ctx, j, cutover.RollbackRequest{
				ReverseSlot: reverse, NewSlot: next,
				StopReverse: func() error {
					stopped = true
					rcancel()
					return <-done
				}})
			if err != nil {
				creq.reply <- cutoverReply{err: err}
				t.SetState(task.StateReverseStreaming)
				if stopped {
					continue
				}
				goto wait
			}
			rcancel()
			t.SetState(task.StateStreaming)
			creq.reply <- cutoverReply{state: task.StateStreaming, slot: next}
			return true, nil
		}
	}
}

// cutoverTask runs CUTOVER <task>.
func (e *Executor) cutoverTask(ctx context.Context, c Cutover) (*Result, error) {
	tk, ok := e.Tasks.Get(c.Task)
	if !ok {
		return nil, Errorf(CodeUndefinedObject, "task %q does not exist", abbreviate(c.Task)).WithHint("SHOW TASKS lists the tasks")
	}
	ctl, ok := e.controls.get(c.Task)
	state := tk.Row().State
	if !ok || (state != task.StateStreaming && state != task.StateReverseStreaming) {
		return nil, Errorf(CodeObjectNotInState, "task %s is %s: CUTOVER needs a task in state streaming (or reverse_streaming, to roll back)", c.Task, state)
	}
	req := cutoverRequest{reply: make(chan cutoverReply, 1)}
	select {
	case ctl.cutover <- req:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	rep := <-req.reply
	if rep.err != nil {
		var je *job.Error
		if errors.As(rep.err, &je) {
			return nil, engineError(rep.err)
		}
		return nil, engineError(fmt.Errorf("cutover: %w", rep.err))
	}
	return &Result{Columns: cutoverColumns, Tag: "CUTOVER", Rows: [][]any{{c.Task, rep.state, rep.slot}}}, nil
}

// finishMigration ends a cut-over migration for good: the reverse slots on
// the shards are dropped, the replication origins of both directions and
// reshard's copy state on the shards are removed.
func (e *Executor) finishMigration(j *job.Job, reverse, forward string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, dst := j.Source, j.Destination
	exec := func(node *catalog.Node, sql string, args ...any) error {
		dsn, err := e.Catalog.ConnString(node, nil)
		if err != nil {
			return err
		}
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, "SET default_transaction_read_only = off")
		if err == nil {
			_, err = conn.Exec(ctx, sql, args...)
		}
		return err
	}
	// The sessions of the stopped streams may take a moment to go: a slot
	// or origin they held is busy until then.
	retry := func(node *catalog.Node, sql string, args ...any) error {
		var err error
		for i := 0; i < 50; i++ {
			if err = exec(node, sql, args...); err == nil {
				return nil
			}
			time.Sleep(100 * time.Millisecond)
		}
		return err
	}
	var errs []error
	for k, name := range copier.SlotNames(reverse, len(dst.Shards)) {
		node := dst.Shards[k].Primary
		if err := retry(node, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name); err != nil {
			errs = append(errs, fmt.Errorf("drop reverse slot %s on %s: %w", name, node, err))
		}
		if err := retry(node, `SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = ANY($1)`, originNames(forward, len(src.Shards), k)); err != nil {
			errs = append(errs, fmt.Errorf("drop origins on %s: %w", node, err))
		}
	}
	// DDL capture on the source, and the record of what was applied on
	// the shards.
	if err := ddl.Teardown(ctx, j); err != nil {
		errs = append(errs, fmt.Errorf("remove DDL capture: %w", err))
	}
	if err := exec(dst.Shards[0].Primary, `DROP SCHEMA IF EXISTS reshard CASCADE`); err != nil {
		errs = append(errs, fmt.Errorf("drop reshard's state on %s: %w", dst.Shards[0].Primary, err))
	}
	for i := range src.Shards {
		if err := retry(src.Shards[i].Primary, `SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = ANY($1)`, originNames(reverse, len(dst.Shards), i)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("finishing the migration: %w", errors.Join(errs...))
	}
	e.Logger.Info("migration finished: reverse replication stopped, its slots and reshard's state removed", "source", src.Name, "destination", dst.Name)
	return nil
}

// originNames are the replication origins streams of slot base (one per
// source shard) use on destination shard k.
func originNames(base string, sources, k int) []string {
	slots := copier.SlotNames(base, sources)
	out := make([]string, len(slots))
	for i, slot := range slots {
		out[i] = stream.OriginName(slot, k)
	}
	return out
}
