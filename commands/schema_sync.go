package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/reshard/reshard/sync/ddl"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/schema"
)

// newJob resolves a route into the job the engine stages share, for the
// task with the id.
func (e *Executor) newJob(r Route, task string) (*job.Job, error) {
	return job.New(job.Spec{Catalog: e.Catalog, Source: r.Source, Destination: r.Destination, Publication: r.Publication,
		Task: task, Registry: e.Registry, Logger: e.Logger})
}

// engineError turns an engine failure into the admin server's *Error: the
// one place where a job.Error (or any error carrying a SQLSTATE) becomes
// an ErrorResponse. The message is the whole error, with the context the
// engine wrapped it in.
func engineError(err error) error {
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	out := &Error{Code: CodeInternalError, Message: err.Error(), Err: err}
	if code := job.Code(err); code != "" {
		out.Code = code
	}
	var je *job.Error
	if errors.As(err, &je) {
		out.Detail, out.Hint = je.Detail, je.Hint
	}
	return out
}

func (e *Executor) schemaSync(ctx context.Context, c SchemaSync) (*Result, error) {
	j, err := e.newJob(c.Route, "")
	if err != nil {
		return nil, engineError(err)
	}
	if c.Phase == PhasePre && !c.DryRun {
		// DDL capture first: what runs on the source from here on is
		// recorded (resharding_ddl = "replicate").
		if err := ddl.Prepare(ctx, j); err != nil {
			return nil, engineError(err)
		}
	}
	res, err := schema.Run(ctx, j, schema.Request{Phase: schema.Phase(c.Phase), DryRun: c.DryRun, IgnoreErrors: c.IgnoreErrors})
	if err != nil {
		return nil, engineError(err)
	}
	if c.DryRun {
		out := &Result{Columns: schemaSyncDryRunColumns, Tag: "SCHEMA_SYNC"}
		for _, sh := range res.DryRun {
			for _, w := range res.Widened {
				out.Rows = append(out.Rows, []any{int64(sh.Shard), string(c.Phase), "-- widened to bigint: " + w.String()})
			}
			for _, sql := range sh.SQL {
				out.Rows = append(out.Rows, []any{int64(sh.Shard), string(c.Phase), sql})
			}
		}
		return out, nil
	}
	out := &Result{Columns: schemaSyncResultColumns, Tag: "SCHEMA_SYNC"}
	for _, sh := range res.Shards {
		var notes []string
		if len(res.Widened) > 0 {
			ws := make([]string, len(res.Widened))
			for i, w := range res.Widened {
				ws[i] = w.String()
			}
			notes = append(notes, "generated keys widened to bigint: "+strings.Join(ws, ", "))
		}
		if len(sh.MissingRoles) > 0 {
			notes = append(notes, "roles missing here, their GRANT/OWNER skipped: "+strings.Join(sh.MissingRoles, ", "))
		}
		for _, f := range sh.ForeignKeys {
			notes = append(notes, f.String())
		}
		notes = append(notes, sh.NotPermitted...)
		if n := sh.UndumpedNote(); n != "" {
			notes = append(notes, n)
		}
		for _, se := range sh.Errors {
			notes = append(notes, fmt.Sprintf("ERROR %s (SQLSTATE %s) in: %s", se.Message, se.Code, se.SQL))
		}
		out.Rows = append(out.Rows, []any{c.Destination, int64(sh.Shard), string(c.Phase), int64(sh.Statements),
			int64(sh.Applied), int64(sh.Skipped), int64(sh.Failed), sh.Elapsed.Milliseconds(), strings.Join(notes, "; ")})
	}
	for _, w := range res.Warnings {
		e.Logger.Warn("schema sync", "warning", w)
	}
	return out, nil
}
