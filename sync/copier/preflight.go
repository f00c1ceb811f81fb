package copier

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// sourceChecks verifies one source shard primary: logical WAL, a free slot
// and WAL sender, and the publication. It returns problems, not errors.
func sourceChecks(ctx context.Context, conn *pgx.Conn, where, publication string, slotsNeeded int) ([]string, error) {
	var problems []string
	var walLevel string
	var maxSlots, usedSlots, maxSenders, usedSenders int
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'),
		current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)::int,
		current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_replication)::int`).
		Scan(&walLevel, &maxSlots, &usedSlots, &maxSenders, &usedSenders)
	if err != nil {
		return nil, fmt.Errorf("read settings of %s: %w", where, err)
	}
	if walLevel != "logical" {
		problems = append(problems, fmt.Sprintf("%s has wal_level = %s: set wal_level = logical and restart it", where, walLevel))
	}
	if maxSlots-usedSlots < slotsNeeded {
		problems = append(problems, fmt.Sprintf("%s has no free replication slot (max_replication_slots = %d, %d in use): raise max_replication_slots or drop unused slots", where, maxSlots, usedSlots))
	}
	if maxSenders-usedSenders < 1 {
		problems = append(problems, fmt.Sprintf("%s has no free WAL sender (max_wal_senders = %d, %d in use): raise max_wal_senders", where, maxSenders, usedSenders))
	}
	var hasPub bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, publication).Scan(&hasPub); err != nil {
		return nil, err
	}
	if !hasPub {
		problems = append(problems, fmt.Sprintf("publication %q does not exist on %s: CREATE PUBLICATION %s FOR ALL TABLES (or FOR TABLE ...)", publication, where, pgx.Identifier{publication}.Sanitize()))
	}
	return problems, nil
}

// destinationChecks verifies every table exists on a destination shard with
// compatible columns, and (for a fresh copy) is empty. It fills the tables'
// destination types and widening.
func destinationChecks(ctx context.Context, conn *pgx.Conn, where string, tables []*Table, mustBeEmpty bool) ([]string, error) {
	var problems, notEmpty []string
	for _, t := range tables {
		cols, err := tableColumns(ctx, conn, t.Qualified())
		if err != nil {
			return nil, err
		}
		if len(cols) == 0 {
			problems = append(problems, fmt.Sprintf("table %s is missing on %s: run SCHEMA_SYNC PRE first", t, where))
			continue
		}
		dst := map[string]columnInfo{}
		for _, c := range cols {
			dst[c.name] = c
		}
		t.Widen = t.Widen[:0]
		for i := range t.Columns {
			c := &t.Columns[i]
			d, ok := dst[c.Name]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("%s.%s is missing on %s", t, c.Name, where))
			case d.generated:
				problems = append(problems, fmt.Sprintf("%s.%s is a generated column on %s but not on the source", t, c.Name, where))
			case d.typ == c.Type:
				c.DstType = d.typ
			case d.typ == "int8" && (c.Type == "int4" || c.Type == "int2"):
				c.DstType = d.typ
				t.Widen = append(t.Widen, i)
			default:
				problems = append(problems, fmt.Sprintf("%s.%s is %s on the source but %s on %s", t, c.Name, c.Type, d.typ, where))
			}
		}
		if mustBeEmpty {
			var any bool
			if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+t.From()+")").Scan(&any); err != nil {
				return nil, fmt.Errorf("check %s on %s: %w", t, where, err)
			}
			if any {
				notEmpty = append(notEmpty, t.String())
			}
		}
	}
	if len(notEmpty) > 0 {
		problems = append(problems, fmt.Sprintf("tables not empty on %s: %s (a fresh copy needs empty tables: TRUNCATE them, or resume the copy that filled them with its slot name)", where, strings.Join(notEmpty, ", ")))
	}
	return problems, nil
}
