package copier

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// The copy's durable state lives on destination shard 0 in a small
// "reshard" schema (removed at cutover): the planned units of each copy,
// keyed by slot name, and which of them finished, with the LSN of the
// snapshot they were copied at (their watermark).
//
// The resume rule:
//   - A unit marked done stays: its rows are on the shards, copied at
//     snapshot watermark_lsn, and it is never copied again.
//   - An unfinished unit may have left partial rows. If the rows it wrote
//     can be told apart on the destination (one source shard, and the unit
//     is a whole table or a primary-key range), they are deleted and the
//     unit is copied again. Otherwise (ctid ranges, or several source
//     shards writing into the same table) the whole table is emptied on
//     every shard and all its units are copied again.
//   - Units copied by a resumed run use a newer snapshot, taken with a
//     temporary slot; so do units read from a replica (replicas.go). Their
//     watermark is that snapshot's LSN. The stream, which starts at the
//     permanent slot's older position, skips changes to those rows
//     committed before the watermark (a commit record starting at or after
//     it is not in the snapshot): the copy already has them. A
//     primary-key range records its column (range_column), by which the
//     stream finds a changed row's range.
const stateDDL = `
CREATE SCHEMA IF NOT EXISTS reshard;
CREATE TABLE IF NOT EXISTS reshard.copy_units (
	slot text NOT NULL,
	source_shard int NOT NULL,
	table_schema text NOT NULL,
	table_name text NOT NULL,
	unit int NOT NULL,
	units int NOT NULL,
	kind text NOT NULL,
	predicate text NOT NULL,
	lo bigint,
	hi bigint,
	estimate_bytes bigint NOT NULL,
	done bool NOT NULL DEFAULT false,
	watermark_lsn pg_lsn,
	rows bigint,
	bytes bigint,
	finished_at timestamptz,
	range_column text,
	PRIMARY KEY (slot, source_shard, table_schema, table_name, unit)
);
ALTER TABLE reshard.copy_units ADD COLUMN IF NOT EXISTS range_column text`

// Unit kinds.
const (
	unitWhole = "table"
	unitPK    = "pk_range"
	unitCtid  = "ctid_range"
)

// unit is one piece of copy work.
type unit struct {
	sourceShard   int
	table         *Table
	n, of         int // 1-based
	kind          string
	predicate     string // SQL condition, "" for the whole table
	lo, hi        *int64 // primary-key range [lo, hi) of a pk_range unit; nil is open
	estimateBytes int64
	done          bool
	// text: the unit is copied in text format, the copy's format being
	// binary: its binary COPY failed on a value its type cannot read back.
	text bool
}

func (u *unit) String() string {
	if u.of > 1 {
		return fmt.Sprintf("%s [%d/%d] from source shard %d", u.table, u.n, u.of, u.sourceShard)
	}
	return fmt.Sprintf("%s from source shard %d", u.table, u.sourceShard)
}

// clearSQL removes what the unit wrote on a destination shard: its key
// range, or the whole table (not inheritance children, which are units of
// their own; a partitioned table's whole tree).
func (u *unit) clearSQL() string {
	if u.predicate != "" {
		return "DELETE FROM " + u.table.From() + " WHERE " + u.predicate
	}
	return "TRUNCATE " + u.table.From()
}

// ensureState creates the state schema and table on shard 0.
func ensureState(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, stateDDL); err != nil {
		return fmt.Errorf("create copy state on destination shard 0: %w", err)
	}
	return nil
}

type savedUnit struct {
	sourceShard        int
	schema, name, kind string
	unit, units        int
	predicate          string
	estimate           int64
	done               bool
}

// loadState returns the units recorded for a slot (none: a fresh copy).
func loadState(ctx context.Context, conn *pgx.Conn, slot string) ([]savedUnit, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('reshard.copy_units') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	rows, err := conn.Query(ctx, `SELECT source_shard, table_schema, table_name, kind, unit, units, predicate, estimate_bytes, done
		FROM reshard.copy_units WHERE slot = $1 ORDER BY source_shard, table_schema, table_name, unit`, slot)
	if err != nil {
		return nil, fmt.Errorf("read copy state: %w", err)
	}
	defer rows.Close()
	var out []savedUnit
	for rows.Next() {
		var s savedUnit
		if err := rows.Scan(&s.sourceShard, &s.schema, &s.name, &s.kind, &s.unit, &s.units, &s.predicate, &s.estimate, &s.done); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// saveUnits records a fresh copy's plan.
func saveUnits(ctx context.Context, conn *pgx.Conn, slot string, units []*unit) error {
	batch := &pgx.Batch{}
	for _, u := range units {
		var column *string
		if u.kind == unitPK {
			column = &u.table.PK[0]
		}
		batch.Queue(`INSERT INTO reshard.copy_units (slot, source_shard, table_schema, table_name, unit, units, kind, predicate, lo, hi, estimate_bytes, range_column)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING`,
			slot, u.sourceShard, u.table.Schema, u.table.Name, u.n, u.of, u.kind, u.predicate, u.lo, u.hi, u.estimateBytes, column)
	}
	if err := conn.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("record copy plan: %w", err)
	}
	return nil
}

// markDone records a finished unit.
func markDone(ctx context.Context, conn *pgx.Conn, slot string, u *unit, watermark pglogrepl.LSN, rows, bytes int64) error {
	_, err := conn.Exec(ctx, `UPDATE reshard.copy_units SET done = true, watermark_lsn = $6::pg_lsn, rows = $7, bytes = $8, finished_at = now()
		WHERE slot = $1 AND source_shard = $2 AND table_schema = $3 AND table_name = $4 AND unit = $5`,
		slot, u.sourceShard, u.table.Schema, u.table.Name, u.n, watermark.String(), rows, bytes)
	if err != nil {
		return fmt.Errorf("record %s done: %w", u, err)
	}
	return nil
}

// markTableUndone resets every unit of a table (the table is emptied).
func markTableUndone(ctx context.Context, conn *pgx.Conn, slot string, t *Table) error {
	_, err := conn.Exec(ctx, `UPDATE reshard.copy_units SET done = false, watermark_lsn = NULL, rows = NULL, bytes = NULL, finished_at = NULL
		WHERE slot = $1 AND table_schema = $2 AND table_name = $3`, slot, t.Schema, t.Name)
	return err
}
