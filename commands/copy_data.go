package commands

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/ddl"
	"github.com/reshard/reshard/sync/preflight"
	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/sync/stream"
	"github.com/reshard/reshard/sync/task"
)

// copyDataResultColumns answer a foreground copy (CLI data-sync --sync-only).
var copyDataResultColumns = cols(
	"slot", TypeText, "consistent_lsn", TypeText, "resumed", TypeBool, "tables", TypeInt8,
	"units_copied", TypeInt8, "units_already_done", TypeInt8, "rows", TypeInt8, "bytes", TypeInt8, "elapsed_ms", TypeInt8)

// streamRequest is the stream of a slot (copied: created by a copy).
func streamRequest(slot string, copied bool) stream.Request {
	return stream.Request{Slot: slot, CopyData: copied}
}

func stoppedMessage(r Route, slot string) string {
	return fmt.Sprintf("stopped; the slot %s keeps the changes since: REPLICATE %s %s continues", slot, r.String(), slot)
}

func lsnList(res *copier.Result) string {
	parts := make([]string, len(res.ConsistentLSN))
	for i, l := range res.ConsistentLSN {
		parts[i] = l.String()
	}
	return strings.Join(parts, ",")
}

// copyData runs COPY_DATA. From the admin server it is a background task
// answering its id at once; from the CLI (Foreground) it runs to the end.
func (e *Executor) copyData(ctx context.Context, c CopyData) (*Result, error) {
	notices, err := e.preflight(ctx, c.Route, preflight.Request{Command: preflight.CopyData, Slot: c.Slot, SyncOnly: c.SyncOnly})
	if err != nil {
		return nil, err
	}
	if c.Foreground {
		j, err := e.newJob(c.Route, "cli")
		if err != nil {
			return nil, engineError(err)
		}
		if !c.SyncOnly {
			if err := ddl.Prepare(ctx, j); err != nil {
				return nil, engineError(err)
			}
		}
		res, err := copier.Run(ctx, j, copier.Request{Slot: c.Slot, SyncOnly: c.SyncOnly})
		if err != nil {
			return nil, engineError(err)
		}
		if !c.SyncOnly {
			e.Logger.Info("copy done, streaming changes (Ctrl-C stops; the slot keeps them)", "slot", res.Slot)
			if err := stream.Run(ctx, j, streamRequest(res.Slot, true)); err != nil {
				return nil, engineError(err)
			}
		}
		return &Result{Columns: copyDataResultColumns, Tag: "COPY_DATA", Rows: [][]any{{
			res.Slot, lsnList(res), res.Resumed, int64(res.Tables), int64(res.Units), int64(res.UnitsSkipped),
			res.Rows, res.Bytes, res.Elapsed.Milliseconds()}}}, nil
	}
	if c.Slot == "" {
		c.Slot = copier.NewSlotName()
	}
	t := e.Tasks.Start("copy_data", c.Source, c.Destination, c.Publication, task.StateCopying,
		func(ctx context.Context, t *task.Task) (task.Outcome, error) {
			t.SetResume(c.Slot, fmt.Sprintf("COPY_DATA %s %s", c.Route.String(), c.Slot))
			defer func() {
				// Finished tables stay listed until the task ends.
				go func() { <-t.Done(); e.Registry.RemoveCopies(t.ID) }()
			}()
			j, err := e.newJob(c.Route, t.ID)
			if err != nil {
				return task.Outcome{}, err
			}
			if !c.SyncOnly {
				if err := ddl.Prepare(ctx, j); err != nil {
					return task.Outcome{}, err
				}
			}
			res, err := copier.Run(ctx, j, copier.Request{Slot: c.Slot, SyncOnly: c.SyncOnly})
			if err != nil {
				return task.Outcome{}, err
			}
			t.SetState(task.StateStreaming)
			finished, err := e.runStream(ctx, t, j, res.Slot, true)
			if err != nil {
				return task.Outcome{}, err
			}
			if finished {
				return task.Outcome{}, nil
			}
			return task.Outcome{Stopped: stoppedMessage(c.Route, res.Slot)}, nil
		})
	return &Result{Columns: taskIDColumns, Tag: "COPY_DATA", Rows: [][]any{{t.ID}}, Notices: notices}, nil
}

func humanCount(n int64) string {
	f := float64(n)
	switch {
	case f >= 1e9:
		return fmt.Sprintf("%.1fB", f/1e9)
	case f >= 1e6:
		return fmt.Sprintf("%.1fM", f/1e6)
	case f >= 1e3:
		return fmt.Sprintf("%.1fK", f/1e3)
	}
	return fmt.Sprint(n)
}

func humanBytes(n int64) string {
	f := float64(n)
	for _, u := range []string{"B", "kB", "MB", "GB", "TB"} {
		if math.Abs(f) < 1024 || u == "TB" {
			if u == "B" {
				return fmt.Sprintf("%d B", n)
			}
			return fmt.Sprintf("%.1f %s", f, u)
		}
		f /= 1024
	}
	return ""
}

func (e *Executor) showTableCopies() [][]any {
	var rows [][]any
	for _, c := range e.Registry.Copies() {
		rate := int64(0)
		if c.Elapsed > 0 {
			rate = int64(float64(c.Bytes) / c.Elapsed.Seconds())
		}
		percent := 0.0
		if c.EstimateBytes > 0 {
			percent = math.Min(99.9, 100*float64(c.Bytes)/float64(c.EstimateBytes))
		}
		eta := ""
		switch c.State {
		case progress.CopyDone:
			percent = 100
		case progress.CopyRunning:
			if rate > 0 && c.EstimateBytes > c.Bytes {
				eta = (time.Duration(float64(c.EstimateBytes-c.Bytes)/float64(rate)) * time.Second).Round(time.Second).String()
			}
		}
		sql := c.SQL
		if c.Units > 1 {
			sql = fmt.Sprintf("-- range %d/%d, source shard %d\n%s", c.Unit, c.Units, c.SourceShard, c.SQL)
		}
		status := c.State
		if c.Error != "" && c.State == progress.CopyFailed {
			status = c.State + ": " + c.Error
		}
		rows = append(rows, []any{c.Schema, c.Table, status, c.Rows, humanCount(c.Rows), c.Bytes, humanBytes(c.Bytes),
			rate, humanBytes(rate) + "/s", c.Elapsed.Round(time.Millisecond).String(), c.Elapsed.Milliseconds(), sql,
			c.EstimateBytes, percent, eta})
	}
	return rows
}

func (e *Executor) showTasks() [][]any {
	var rows [][]any
	for _, t := range e.Tasks.List() {
		rows = append(rows, []any{t.ID, t.Kind, t.Source, t.Destination, t.Publication, t.State, t.StartedAt,
			t.Elapsed.Round(time.Millisecond).String(), t.Error})
	}
	return rows
}

func (e *Executor) stopTask(ctx context.Context, c StopTask) (*Result, error) {
	if _, ok := e.Tasks.Get(c.Task); !ok {
		return nil, Errorf(CodeUndefinedObject, "task %q does not exist", abbreviate(c.Task)).WithHint("SHOW TASKS lists the tasks")
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.Tasks.Stop(sctx, c.Task); err != nil {
		return nil, Errorf(CodeObjectInUse, "task %s did not stop within 30s: %v", c.Task, err)
	}
	return &Result{Tag: "STOP_TASK"}, nil
}

// replicate runs REPLICATE: stream only, from an existing slot.
func (e *Executor) replicate(ctx context.Context, c Replicate) (*Result, error) {
	notices, err := e.preflight(ctx, c.Route, preflight.Request{Command: preflight.Replicate, Slot: c.Slot})
	if err != nil {
		return nil, err
	}
	if c.Foreground {
		j, err := e.newJob(c.Route, "cli")
		if err != nil {
			return nil, engineError(err)
		}
		if err := stream.Run(ctx, j, streamRequest(c.Slot, false)); err != nil {
			return nil, engineError(err)
		}
		return &Result{Tag: "REPLICATE"}, nil
	}
	t := e.Tasks.Start("replicate", c.Source, c.Destination, c.Publication, task.StateStreaming,
		func(ctx context.Context, t *task.Task) (task.Outcome, error) {
			t.SetResume(c.Slot, fmt.Sprintf("REPLICATE %s %s", c.Route.String(), c.Slot))
			j, err := e.newJob(c.Route, t.ID)
			if err != nil {
				return task.Outcome{}, err
			}
			finished, err := e.runStream(ctx, t, j, c.Slot, false)
			if err != nil {
				return task.Outcome{}, err
			}
			if finished {
				return task.Outcome{}, nil
			}
			return task.Outcome{Stopped: stoppedMessage(c.Route, c.Slot)}, nil
		})
	return &Result{Columns: taskIDColumns, Tag: "REPLICATE", Rows: [][]any{{t.ID}}, Notices: notices}, nil
}

func (e *Executor) showReplicationSlots() [][]any {
	var rows [][]any
	for _, s := range e.Registry.Slots() {
		var last any
		var lastMS any
		if !s.LastTransaction.IsZero() {
			last = s.LastTransaction
			lastMS = time.Since(s.LastTransaction).Milliseconds()
		}
		rows = append(rows, []any{s.Host, int64(s.Port), s.Database, s.Name, s.Confirmed.String(), humanBytes(s.LagBytes), s.LagBytes,
			s.CopyData, last, lastMS})
	}
	return rows
}

// showDDL lists the statements the source's event triggers captured
// ([general] resharding_ddl = "replicate") as the streams saw them, and
// where each has been applied.
func (e *Executor) showDDL() [][]any {
	var rows [][]any
	for _, d := range e.Registry.DDL() {
		var captured, applied any
		if !d.CapturedAt.IsZero() {
			captured = d.CapturedAt
		}
		if !d.AppliedAt.IsZero() {
			applied = d.AppliedAt
		}
		rows = append(rows, []any{d.Task, d.Slot, int64(d.SourceShard), d.ID, captured, d.Tag, d.Statement, d.State,
			progress.ShardList(d.Applied), progress.ShardList(d.Pending), applied, d.SQL, d.Note, d.Error})
	}
	return rows
}
