package migrate

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/cutover"
	"github.com/reshard/reshard/sync/ddl"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/task"
)

// Removed is one thing the end of a migration removed or reset.
type Removed struct {
	// Node names the server ("dst shard 0 (127.0.0.1:5432/app)").
	Node string
	// Kind is slot, origin, schema, rows or setting.
	Kind string
	// Name is the slot, origin or schema name, the tables emptied, or the
	// setting reset.
	Name string
}

// Report is what the end of a migration removed.
type Report struct {
	Removed []Removed
	// Notes say what was left as it is, and why.
	Notes []string
}

// Summary is the report in one line.
func (r *Report) Summary() string {
	if r == nil || len(r.Removed) == 0 {
		return "nothing to remove"
	}
	kinds := map[string][]string{}
	var order []string
	for _, x := range r.Removed {
		if _, ok := kinds[x.Kind]; !ok {
			order = append(order, x.Kind)
		}
		kinds[x.Kind] = append(kinds[x.Kind], x.Name)
	}
	var parts []string
	for _, k := range order {
		parts = append(parts, fmt.Sprintf("%d %s (%s)", len(kinds[k]), plural(k, len(kinds[k])), strings.Join(counted(kinds[k]), ", ")))
	}
	out := "removed " + strings.Join(parts, "; ")
	if len(r.Notes) > 0 {
		out += "; " + strings.Join(r.Notes, "; ")
	}
	return out
}

// counted lists names once each, with how often they occur ("reshard ×3").
func counted(names []string) []string {
	n := map[string]int{}
	var out []string
	for _, x := range names {
		if n[x] == 0 {
			out = append(out, x)
		}
		n[x]++
	}
	for i, x := range out {
		if n[x] > 1 {
			out[i] = fmt.Sprintf("%s ×%d", x, n[x])
		}
	}
	return out
}

func plural(kind string, n int) string {
	if n == 1 || kind == "rows" {
		return kind
	}
	return kind + "s"
}

// teardownOptions say what the end of a migration removes besides its
// slots, origins and state.
type teardownOptions struct {
	// withData empties the publication's tables on the shards.
	withData bool
}

// teardown removes what migration st created: every slot of every round
// on the source shards and the shards, the replication origins of both
// directions, its rows in reshard's state (and the reshard schema once it
// holds nothing else), and, with withData, the rows copied to the shards.
// A cutover or rollback left mid-way is first completed or undone, so that
// one side takes the writes. Shards a rollback made read-only are writable
// again when the old database is the application's side.
func (e *Engine) teardown(ctx context.Context, j *job.Job, st State, opts teardownOptions) (*Report, error) {
	rep := &Report{}
	switch st.Phase {
	case task.StateCutover:
		req := cutover.Request{Slot: st.Forward, ReverseSlot: st.Reverse}
		if cutover.Committed(st.Step) {
			if err := cutover.Complete(ctx, j, req, st.Step); err != nil {
				return rep, err
			}
			st.Direction = Reverse
		} else if err := cutover.Undo(ctx, j, req); err != nil {
			return rep, err
		}
	case task.StateRollback:
		req := cutover.RollbackRequest{ReverseSlot: st.Reverse, NewSlot: st.Forward}
		if cutover.RolledBack(st.Step) {
			if err := cutover.CompleteRollback(ctx, j, req, st.Step); err != nil {
				return rep, err
			}
			st.Direction = Forward
		} else if err := cutover.UndoRollback(ctx, j, req); err != nil {
			return rep, err
		}
	}
	if opts.withData && st.Direction == Reverse {
		return rep, job.Errorf("55000", "the shards of task %s are the application's side since its cutover: WITH DATA would delete its data", st.ID).
			WithHint("ABORT_TASK %s without WITH DATA removes the slots, origins and state and leaves the rows", st.ID)
	}
	sources, err := j.ConnectSources(ctx)
	if err != nil {
		return rep, err
	}
	defer sources.Close()
	shards, err := j.ConnectDestinations(ctx)
	if err != nil {
		return rep, err
	}
	defer shards.Close()
	for _, c := range append(append(job.Conns{}, sources...), shards...) {
		if _, err := c.Exec(ctx, "SET default_transaction_read_only = off"); err != nil {
			return rep, err
		}
	}
	nsrc, ndst := len(sources), len(shards)
	var errs []error
	fail := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	for i, c := range sources {
		node := j.Source.Shards[i].Primary.String()
		for _, fb := range st.forwardBases() {
			name := copier.SlotNames(fb, nsrc)[i]
			dropped, err := cutover.DropSlot(ctx, c, name)
			fail(err)
			if dropped {
				rep.Removed = append(rep.Removed, Removed{Node: node, Kind: "slot", Name: name})
			}
			origins, err := cutover.DropOrigins(ctx, c, cutover.OriginNames(reverseBase(fb), ndst, i))
			fail(err)
			for _, o := range origins {
				rep.Removed = append(rep.Removed, Removed{Node: node, Kind: "origin", Name: o})
			}
		}
	}
	for k, c := range shards {
		node := j.Destination.Shards[k].Primary.String()
		for _, fb := range st.forwardBases() {
			name := copier.SlotNames(reverseBase(fb), ndst)[k]
			dropped, err := cutover.DropSlot(ctx, c, name)
			fail(err)
			if dropped {
				rep.Removed = append(rep.Removed, Removed{Node: node, Kind: "slot", Name: name})
			}
			origins, err := cutover.DropOrigins(ctx, c, cutover.OriginNames(fb, nsrc, k))
			fail(err)
			for _, o := range origins {
				rep.Removed = append(rep.Removed, Removed{Node: node, Kind: "origin", Name: o})
			}
		}
	}
	if len(errs) > 0 {
		return rep, errors.Join(errs...)
	}
	if opts.withData {
		removed, err := emptyShards(ctx, j, sources[0], shards)
		rep.Removed = append(rep.Removed, removed...)
		if err != nil {
			return rep, err
		}
	}
	switch {
	case st.Direction == Reverse:
		rep.Notes = append(rep.Notes, "the shards stay the application's side and the old database stays read-only, as after a cutover")
	case st.Round > 0:
		// A rollback made the shards read-only; nothing streams into them
		// now.
		if err := cutover.OpenToApplication(ctx, j.ConnectDestination, len(j.Destination.Shards)); err != nil {
			return rep, err
		}
		for k := range shards {
			rep.Removed = append(rep.Removed, Removed{Node: j.Destination.Shards[k].Primary.String(), Kind: "setting", Name: "default_transaction_read_only (set by the rollback)"})
		}
	}
	// DDL capture (resharding_ddl = "replicate"): the event triggers, their
	// functions and the captured statements, on both sides (the shards
	// have them after a cutover).
	for i, c := range append(append(job.Conns{}, sources...), shards...) {
		if err := ddl.Remove(ctx, c); err != nil {
			return rep, fmt.Errorf("remove DDL capture (connection %d): %w", i, err)
		}
	}
	// The state last: until it is gone, the migration can be ended again.
	if err := e.store.Delete(ctx, st); err != nil {
		return rep, fmt.Errorf("remove the state of task %s: %w", st.ID, err)
	}
	for i, c := range sources {
		removed, err := dropState(ctx, c, st)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", j.Source.Shards[i].Primary, err)
		}
		if removed {
			rep.Removed = append(rep.Removed, Removed{Node: j.Source.Shards[i].Primary.String(), Kind: "schema", Name: "reshard"})
		}
	}
	for k, c := range shards {
		removed, err := dropState(ctx, c, st)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", j.Destination.Shards[k].Primary, err)
		}
		if removed {
			rep.Removed = append(rep.Removed, Removed{Node: j.Destination.Shards[k].Primary.String(), Kind: "schema", Name: "reshard"})
		}
	}
	return rep, nil
}

// dropState removes migration st's rows from reshard's state on conn's
// database, and the reshard schema once it holds nothing of another
// migration. It reports whether it dropped the schema.
func dropState(ctx context.Context, conn *pgx.Conn, st State) (bool, error) {
	var tables []string
	rows, err := conn.Query(ctx, `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'reshard' AND c.relkind IN ('r', 'p')`)
	if err != nil {
		return false, err
	}
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return false, err
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, err
	}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'reshard')`).Scan(&exists); err != nil || !exists {
		return false, err
	}
	others := false
	for _, t := range tables {
		var n int64
		switch t {
		case "migrations":
			if _, err := conn.Exec(ctx, `DELETE FROM reshard.migrations WHERE id = $1 AND destination = $2`, st.ID, st.Destination); err != nil {
				return false, err
			}
		case "copy_units":
			if _, err := conn.Exec(ctx, `DELETE FROM reshard.copy_units WHERE slot = $1`, st.Slot); err != nil {
				return false, err
			}
		case "ddl_applied":
			// The statements the streams applied, by replication origin
			// (every origin of the migration is named after st.Slot).
			if _, err := conn.Exec(ctx, `DELETE FROM reshard.ddl_applied WHERE left(origin, length('reshard_' || $1)) = 'reshard_' || $1`, st.Slot); err != nil {
				return false, err
			}
		case "schema_dumps":
			if _, err := conn.Exec(ctx, `DELETE FROM reshard.schema_dumps WHERE slot = $1`, st.Slot); err != nil {
				return false, err
			}
		case "moved_rows":
			// The streams' records of rows that moved between shards, kept
			// per slot (every slot of the migration is named after st.Slot).
			if _, err := conn.Exec(ctx, `DELETE FROM reshard.moved_rows WHERE slot = $1 OR left(slot, length($1) + 1) = $1 || '_'`, st.Slot); err != nil {
				return false, err
			}
		}
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM reshard."+pgx.Identifier{t}.Sanitize()).Scan(&n); err != nil {
			return false, err
		}
		if n > 0 {
			others = true
		}
	}
	if others {
		return false, nil
	}
	if _, err := conn.Exec(ctx, `DROP SCHEMA reshard CASCADE`); err != nil {
		return false, fmt.Errorf("drop reshard's state: %w", err)
	}
	return true, nil
}

// emptyShards empties the publication's tables on every shard (ABORT_TASK
// WITH DATA): the rows copied and streamed there.
func emptyShards(ctx context.Context, j *job.Job, src *pgx.Conn, shards job.Conns) ([]Removed, error) {
	tables, err := copier.Tables(ctx, src, j.Publication, j.Destination)
	if err != nil {
		return nil, err
	}
	// An extension's configuration table keeps the extension's own rows
	// (CREATE EXTENSION put them there; a copy adds only the others).
	var names, own []string
	for _, t := range tables {
		if t.ExtensionRows != "" {
			own = append(own, t.EmptySQL())
		} else {
			names = append(names, t.Qualified())
		}
	}
	sort.Strings(names)
	var out []Removed
	for k, c := range shards {
		if len(tables) == 0 {
			break
		}
		if len(names) > 0 {
			if _, err := c.Exec(ctx, "TRUNCATE "+strings.Join(names, ", ")); err != nil {
				return out, fmt.Errorf("empty the tables on %s: %w", j.Destination.Shards[k].Primary, err)
			}
		}
		for _, sql := range own {
			if _, err := c.Exec(ctx, sql); err != nil {
				return out, fmt.Errorf("empty the tables on %s: %s: %w", j.Destination.Shards[k].Primary, sql, err)
			}
		}
		out = append(out, Removed{Node: j.Destination.Shards[k].Primary.String(), Kind: "rows",
			Name: fmt.Sprintf("all rows of %d tables", len(tables))})
	}
	return out, nil
}
