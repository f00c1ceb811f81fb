package commands

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/sync/task"
	"github.com/reshard/reshard/sync/verify"
)

// verifyStreams finds what feeds route r's destination: the migration
// task that streams it (its id, "" when none does), whether its streams run
// in reverse (after a cutover: the shards back into the old database), and
// the Holder that holds them at VERIFY's consistent point (nil when the
// stream cannot be held).
func (e *Executor) verifyStreams(r Route) (id string, reverse bool, holder verify.Holder) {
	return e.Engine.Streams(r.Source, r.Destination, r.Publication)
}

// verifyRequest is the VERIFY of route r, at a consistent point of the
// streams that feed it.
func (e *Executor) verifyRequest(r Route) verify.Request {
	id, reverse, holder := e.verifyStreams(r)
	if id != "" && holder == nil {
		e.Logger.Warn("the streams of the route cannot be held at VERIFY's consistent point: rows they have not applied yet show as differences", "task", id)
	}
	return verify.Request{Hold: holder, Reverse: reverse}
}

// stalledMigration is what a VERIFY that found differences adds when the
// route's migration exists but no longer runs (failed or stopped): no
// stream applies the source's changes, so the differences include what it
// left unapplied. It names the task, its state and its error ("" when a
// migration of the route runs, or none exists).
func (e *Executor) stalledMigration(r Route) string {
	out := ""
	for _, t := range e.Tasks.List() {
		if t.Kind == "verify" || t.Source != r.Source || t.Destination != r.Destination || t.Publication != r.Publication {
			continue
		}
		switch t.State {
		case task.StateFailed, task.StateStopped:
			out = fmt.Sprintf("; task %s (%s) of this route is %s, so no stream applies the source's changes to the destination (the differences include what it left unapplied)", t.ID, t.Kind, t.State)
			if t.Error != "" {
				out += ": " + abbreviate(t.Error)
			}
		case task.StateDone, task.StateAborted:
		default:
			return ""
		}
	}
	return out
}

// verify runs VERIFY as a task (from the CLI, in the caller); results
// appear in SHOW VERIFY and stay there until the next VERIFY of the route.
func (e *Executor) verify(ctx context.Context, c Verify) (*Result, error) {
	if c.Foreground {
		j, err := e.newJob(c.Route, "cli")
		if err != nil {
			return nil, engineError(err)
		}
		res, err := verify.Run(ctx, j, e.verifyRequest(c.Route))
		if err != nil {
			return nil, engineError(err)
		}
		out := &Result{Columns: verifyColumns, Tag: "VERIFY", Rows: e.showVerify()}
		if res.Mismatched+res.Failed > 0 {
			return out, Errorf(CodeInternalError, "%d of %d tables differ, %d could not be read%s", res.Mismatched, res.Tables, res.Failed, e.stalledMigration(c.Route))
		}
		return out, nil
	}
	for _, t := range e.Tasks.List() {
		if t.Kind == "verify" && t.State == "verifying" && t.Source == c.Source && t.Destination == c.Destination && t.Publication == c.Publication {
			return nil, Errorf(CodeObjectInUse, "VERIFY %s is already running as task %s", c.Route.String(), t.ID).
				WithHint("SHOW VERIFY shows its progress; STOP_TASK %s stops it", t.ID)
		}
	}
	t, err := e.Tasks.Start(task.Spec{Kind: "verify", Source: c.Source, Destination: c.Destination, Publication: c.Publication, State: "verifying"},
		func(ctx context.Context, t *task.Task) (task.Outcome, error) {
			j, err := e.newJob(c.Route, t.ID)
			if err != nil {
				return task.Outcome{}, err
			}
			res, err := verify.Run(ctx, j, e.verifyRequest(c.Route))
			if err != nil {
				return task.Outcome{}, err
			}
			if res.Mismatched+res.Failed > 0 {
				return task.Outcome{}, fmt.Errorf("%d of %d tables differ and %d could not be read: SHOW VERIFY lists them, the log names the keys%s",
					res.Mismatched, res.Tables, res.Failed, e.stalledMigration(c.Route))
			}
			return task.Outcome{}, nil
		})
	if err != nil {
		return nil, engineError(err)
	}
	return &Result{Columns: taskIDColumns, Tag: "VERIFY", Rows: [][]any{{t.ID}}}, nil
}

func (e *Executor) showVerify() [][]any {
	var rows [][]any
	for _, v := range e.Registry.Verify() {
		percent, eta, elapsed := verifyProgress(v, time.Now())
		shards := make([]string, len(v.ShardRows))
		for i, n := range v.ShardRows {
			shards[i] = fmt.Sprint(n)
		}
		rows = append(rows, []any{v.Task, v.Schema, v.Table, v.Status, v.SourceRows, v.DestinationRows, v.Missing, v.Extra,
			v.Different, v.Misplaced, v.RowsCompared, percent, eta, elapsed.Milliseconds(), strings.Join(shards, ","),
			v.ConsistentLSN, v.Hold.Milliseconds()})
	}
	return rows
}

// verifyProgress is a table's percent done, its ETA ("" once finished or
// before a rate is known) and its elapsed time.
func verifyProgress(v progress.VerifyRow, now time.Time) (percent float64, eta string, elapsed time.Duration) {
	elapsed = v.Elapsed
	if !v.Finished() {
		if !v.Started.IsZero() {
			elapsed = now.Sub(v.Started)
		}
		if v.RowsEstimate > 0 {
			percent = math.Min(99.9, 100*float64(v.RowsCompared)/float64(v.RowsEstimate))
		}
		if v.RowsCompared > 0 && v.RowsEstimate > v.RowsCompared && elapsed > 0 {
			left := time.Duration(float64(elapsed) * float64(v.RowsEstimate-v.RowsCompared) / float64(v.RowsCompared))
			eta = left.Round(time.Second).String()
		}
		return percent, eta, elapsed
	}
	return 100, "", elapsed
}
