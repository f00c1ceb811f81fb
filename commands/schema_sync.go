package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/reshard/reshard/sync/schema"
)

// sqlStater is an engine error that knows its SQLSTATE.
type sqlStater interface{ SQLState() string }

// engineError turns an engine failure into an *Error with its SQLSTATE.
func engineError(err error) error {
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	out := &Error{Code: CodeInternalError, Message: err.Error(), Err: err}
	var se sqlStater
	if errors.As(err, &se) && se.SQLState() != "" {
		out.Code = se.SQLState()
	}
	var sch *schema.Error
	if errors.As(err, &sch) {
		out.Hint = sch.Hint
	}
	return out
}

func (e *Executor) schemaSync(ctx context.Context, c SchemaSync) (*Result, error) {
	res, err := schema.Run(ctx, schema.Request{
		Catalog: e.Catalog, Source: c.Source, Destination: c.Destination, Publication: c.Publication,
		Phase: schema.Phase(c.Phase), DryRun: c.DryRun, IgnoreErrors: c.IgnoreErrors,
		Registry: e.Registry, Logger: e.Logger,
	})
	if err != nil {
		return nil, engineError(err)
	}
	if c.DryRun {
		out := &Result{Columns: schemaSyncDryRunColumns, Tag: "SCHEMA_SYNC"}
		for _, sh := range res.DryRun {
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
			notes = append(notes, "integer keys widened to bigint: "+strings.Join(res.Widened, ", "))
		}
		if len(sh.MissingRoles) > 0 {
			notes = append(notes, "roles missing here, their GRANT/OWNER skipped: "+strings.Join(sh.MissingRoles, ", "))
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
