package commands

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/reshard/reshard/sync/cutover"
	"github.com/reshard/reshard/sync/stream"
	"github.com/reshard/reshard/sync/task"
)

// cutoverColumns answer CUTOVER.
var cutoverColumns = cols("task_id", TypeText, "state", TypeText, "reverse_slot", TypeText)

// streamControl lets CUTOVER reach the task that streams a route.
type streamControl struct {
	cutover chan cutoverRequest
}

type cutoverRequest struct {
	reply chan cutoverReply
}

type cutoverReply struct {
	reverseSlot string
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
// on success the task turns to reverse replication (shards back into the
// source); on abort the forward stream goes on.
func (e *Executor) runStream(ctx context.Context, t *task.Task, r Route, slot string, copied bool) error {
	ctl := e.controls.add(t.ID)
	defer e.controls.remove(t.ID)
	for {
		fctx, fcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- stream.Run(fctx, e.streamRequest(r, slot, t.ID, copied)) }()
	wait:
		select {
		case err := <-done:
			fcancel()
			return err
		case req := <-ctl.cutover:
			t.SetState(task.StateCutover)
			stopped := false
			res, err := cutover.Run(ctx, cutover.Request{Catalog: e.Catalog, Source: r.Source, Destination: r.Destination,
				Publication: r.Publication, Slot: slot, Task: t.ID, Registry: e.Registry, Logger: e.Logger,
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
			req.reply <- cutoverReply{reverseSlot: res.ReverseSlot}
			t.SetState(task.StateReverseStreaming)
			dst, _ := e.Catalog.Cluster(r.Destination)
			return stream.Run(ctx, stream.Request{Catalog: e.Catalog, Source: r.Destination, Destination: r.Source,
				Publication: r.Publication, Slot: res.ReverseSlot, SourceRules: dst, Task: t.ID, Registry: e.Registry, Logger: e.Logger})
		}
	}
}

// cutoverTask runs CUTOVER <task>.
func (e *Executor) cutoverTask(ctx context.Context, c Cutover) (*Result, error) {
	tk, ok := e.Tasks.Get(c.Task)
	if !ok {
		return nil, Errorf(CodeUndefinedObject, "task %q does not exist", c.Task).WithHint("SHOW TASKS lists the tasks")
	}
	ctl, ok := e.controls.get(c.Task)
	if !ok || tk.Row().State != task.StateStreaming {
		if tk.Row().State == task.StateReverseStreaming {
			return nil, Errorf(CodeFeatureNotSupported, "task %s is already cut over; rolling back (CUTOVER on a reverse_streaming task) is not implemented yet", c.Task)
		}
		return nil, Errorf(CodeObjectNotInState, "task %s is %s: CUTOVER needs a task in state streaming", c.Task, tk.Row().State)
	}
	req := cutoverRequest{reply: make(chan cutoverReply, 1)}
	select {
	case ctl.cutover <- req:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	rep := <-req.reply
	if rep.err != nil {
		var ce *cutover.Error
		if errors.As(rep.err, &ce) {
			return nil, &Error{Code: ce.Code, Message: ce.Message, Err: rep.err}
		}
		return nil, engineError(fmt.Errorf("cutover: %w", rep.err))
	}
	return &Result{Columns: cutoverColumns, Tag: "CUTOVER", Rows: [][]any{{c.Task, task.StateReverseStreaming, rep.reverseSlot}}}, nil
}
