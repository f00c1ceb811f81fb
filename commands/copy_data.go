package commands

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/ddl"
	"github.com/reshard/reshard/sync/migrate"
	"github.com/reshard/reshard/sync/preflight"
	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/sync/stream"
)

// copyDataResultColumns answer a foreground copy (CLI data-sync --sync-only).
var copyDataResultColumns = cols(
	"slot", TypeText, "consistent_lsn", TypeText, "resumed", TypeBool, "tables", TypeInt8,
	"units_copied", TypeInt8, "units_already_done", TypeInt8, "rows", TypeInt8, "bytes", TypeInt8, "elapsed_ms", TypeInt8)

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
	if c.Foreground {
		// (Its notices are logged.)
		if _, err := e.preflight(ctx, c.Route, preflight.Request{Command: preflight.CopyData, Slot: c.Slot, SyncOnly: c.SyncOnly}); err != nil {
			return nil, err
		}
		j, err := e.newJob(c.Route, "cli")
		if err != nil {
			return nil, engineError(err)
		}
		if c.Slot == "" {
			c.Slot = copier.NewSlotName() // named now: an interruption names it
		}
		if !c.SyncOnly {
			if err := ddl.Prepare(ctx, j); err != nil {
				return nil, engineError(err)
			}
		}
		res, err := copier.Run(ctx, j, copier.Request{Slot: c.Slot, SyncOnly: c.SyncOnly})
		if err != nil {
			if ctx.Err() != nil {
				return nil, e.interrupted(j, "copy", c.Slot)
			}
			return nil, engineError(err)
		}
		out := &Result{Columns: copyDataResultColumns, Tag: "COPY_DATA", Rows: [][]any{{
			res.Slot, lsnList(res), res.Resumed, int64(res.Tables), int64(res.Units), int64(res.UnitsSkipped),
			res.Rows, res.Bytes, res.Elapsed.Milliseconds()}}}
		if !c.SyncOnly {
			e.Logger.Info("copy done, streaming changes (Ctrl-C stops; the slot keeps them)", "slot", res.Slot)
			if err := stream.Run(ctx, j, stream.Request{Slot: res.Slot, CopyData: true}); err != nil {
				return nil, engineError(err)
			}
			if ctx.Err() != nil {
				return out, e.interrupted(j, "stream", res.Slot)
			}
		}
		return out, nil
	}
	if c.Slot == "" {
		c.Slot = copier.NewSlotName()
	}
	spec := migrate.Spec{Kind: migrate.KindCopyData, Source: c.Source, Destination: c.Destination,
		Publication: c.Publication, Slot: c.Slot, Resume: fmt.Sprintf("COPY_DATA %s %s", c.Route.String(), quoteIdent(c.Slot))}
	return e.startMigration(ctx, c.Route, spec, preflight.Request{Command: preflight.CopyData, Slot: c.Slot, SyncOnly: c.SyncOnly}, "COPY_DATA")
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
			c.EstimateBytes, percent, eta, c.Node, c.Format})
	}
	return rows
}

func (e *Executor) showTasks() [][]any {
	var rows [][]any
	for _, t := range e.Tasks.List() {
		msg := t.Error
		for _, s := range e.Engine.InactiveSlots(t.ID) {
			note := fmt.Sprintf("slot %s on %s:%d/%s is inactive and retains %s of WAL", s.Name, s.Host, s.Port, s.Database, humanBytes(s.RetainedBytes))
			if msg == "" {
				msg = note
			} else {
				msg += "; " + note
			}
		}
		rows = append(rows, []any{t.ID, t.Kind, t.Source, t.Destination, t.Publication, t.State, t.StartedAt,
			t.Elapsed.Round(time.Millisecond).String(), msg})
	}
	return rows
}

// replicate runs REPLICATE: stream only, from an existing slot.
func (e *Executor) replicate(ctx context.Context, c Replicate) (*Result, error) {
	if c.Foreground {
		if _, err := e.preflight(ctx, c.Route, preflight.Request{Command: preflight.Replicate, Slot: c.Slot}); err != nil {
			return nil, err
		}
		j, err := e.newJob(c.Route, "cli")
		if err != nil {
			return nil, engineError(err)
		}
		if err := stream.Run(ctx, j, stream.Request{Slot: c.Slot}); err != nil {
			return nil, engineError(err)
		}
		if ctx.Err() != nil {
			return &Result{Tag: "REPLICATE"}, e.interrupted(j, "stream", c.Slot)
		}
		return &Result{Tag: "REPLICATE"}, nil
	}
	spec := migrate.Spec{Kind: migrate.KindReplicate, Source: c.Source, Destination: c.Destination,
		Publication: c.Publication, Slot: c.Slot, Resume: fmt.Sprintf("REPLICATE %s %s", c.Route.String(), quoteIdent(c.Slot))}
	return e.startMigration(ctx, c.Route, spec, preflight.Request{Command: preflight.Replicate, Slot: c.Slot}, "REPLICATE")
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
			s.CopyData, last, lastMS, humanBytes(s.RetainedBytes), s.RetainedBytes, true})
	}
	// reshard's slots that no stream reads: they hold WAL on their server.
	for _, s := range e.Registry.InactiveSlots() {
		rows = append(rows, []any{s.Host, int64(s.Port), s.Database, s.Name, s.Confirmed, humanBytes(s.LagBytes), s.LagBytes,
			false, nil, nil, humanBytes(s.RetainedBytes), s.RetainedBytes, false})
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
