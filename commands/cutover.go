package commands

import (
	"context"
	"errors"
	"fmt"

	"github.com/reshard/reshard/sync/job"
)

// cutoverColumns answer CUTOVER.
var cutoverColumns = cols("task_id", TypeText, "state", TypeText, "slot", TypeText)

// stopTaskColumns answer STOP_TASK: what it did.
var stopTaskColumns = cols("task_id", TypeText, "state", TypeText, "message", TypeText)

// abortTaskColumns answer ABORT_TASK: one row per thing removed.
var abortTaskColumns = cols("task_id", TypeText, "node", TypeText, "kind", TypeText, "name", TypeText)

// cutoverTask runs CUTOVER <task>: on a streaming migration it cuts over,
// on a reverse_streaming one it rolls back.
func (e *Executor) cutoverTask(ctx context.Context, c Cutover) (*Result, error) {
	if _, ok := e.Tasks.Get(c.Task); !ok {
		return nil, Errorf(CodeUndefinedObject, "task %q does not exist", abbreviate(c.Task)).WithHint("SHOW TASKS lists the tasks")
	}
	state, slot, err := e.Engine.Cutover(ctx, c.Task)
	if err != nil {
		var je *job.Error
		if !errors.As(err, &je) {
			err = fmt.Errorf("cutover: %w", err)
		}
		return nil, engineError(err)
	}
	return &Result{Columns: cutoverColumns, Tag: "CUTOVER", Rows: [][]any{{c.Task, state, slot}}}, nil
}

// stopTask runs STOP_TASK <task> and answers what it did.
func (e *Executor) stopTask(ctx context.Context, c StopTask) (*Result, error) {
	if _, ok := e.Tasks.Get(c.Task); !ok {
		return nil, Errorf(CodeUndefinedObject, "task %q does not exist", abbreviate(c.Task)).WithHint("SHOW TASKS lists the tasks")
	}
	msg, err := e.Engine.Stop(ctx, c.Task)
	if err != nil {
		return nil, engineError(err)
	}
	t, _ := e.Tasks.Get(c.Task)
	return &Result{Columns: stopTaskColumns, Tag: "STOP_TASK", Rows: [][]any{{c.Task, t.Row().State, msg}}}, nil
}

// abortTask runs ABORT_TASK <task> [WITH DATA] and answers what it removed.
func (e *Executor) abortTask(ctx context.Context, c AbortTask) (*Result, error) {
	if _, ok := e.Tasks.Get(c.Task); !ok {
		return nil, Errorf(CodeUndefinedObject, "task %q does not exist", abbreviate(c.Task)).WithHint("SHOW TASKS lists the tasks")
	}
	rep, err := e.Engine.Abort(ctx, c.Task, c.WithData)
	if err != nil {
		return nil, engineError(err)
	}
	res := &Result{Columns: abortTaskColumns, Tag: "ABORT_TASK"}
	for _, r := range rep.Removed {
		res.Rows = append(res.Rows, []any{c.Task, r.Node, r.Kind, r.Name})
	}
	for _, n := range rep.Notes {
		res.Rows = append(res.Rows, []any{c.Task, "", "note", n})
	}
	return res, nil
}
