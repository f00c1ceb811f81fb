package stream

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sharding"
)

// copyMarks are the copy's watermarks per table ("schema.name"): units
// copied at a snapshot newer than the slot's (by a resumed copy, or read
// from a replica) hold the changes committed before their watermark
// already. See covered for the rule.
type copyMarks map[string][]watermark

// watermark: rows of a unit copied at a snapshot whose consistent point is
// lsn. A primary-key range unit covers [lo, hi) of column (nil bounds are
// open); a whole table or a ctid range has no column and no bounds.
type watermark struct {
	lo, hi *int64
	column string
	lsn    pglogrepl.LSN
}

// loadCopyMarks reads the copy's finished units of a slot's source shard
// from destination shard 0 (none when nothing was copied there).
func loadCopyMarks(ctx context.Context, conn *pgx.Conn, slot string, sourceShard int) (copyMarks, error) {
	marks := copyMarks{}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('reshard.copy_units') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return marks, err
	}
	// range_column is read through row_to_json: state recorded by an
	// older reshard lacks it.
	rows, err := conn.Query(ctx, `SELECT table_schema, table_name, lo, hi, watermark_lsn::text, coalesce(row_to_json(u)->>'range_column', '')
		FROM reshard.copy_units u WHERE slot = $1 AND source_shard = $2 AND done`, slot, sourceShard)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var schema, name, lsn string
		var w watermark
		if err := rows.Scan(&schema, &name, &w.lo, &w.hi, &lsn, &w.column); err != nil {
			return nil, err
		}
		if w.lsn, err = pglogrepl.ParseLSN(lsn); err != nil {
			return nil, err
		}
		marks[schema+"."+name] = append(marks[schema+"."+name], w)
	}
	return marks, rows.Err()
}

// covered reports whether a change committed at lsn is already in the
// copied rows, and so must be skipped.
//
// The watermark rule. Each copy unit records the LSN of the snapshot it
// was copied at (reshard.copy_units.watermark_lsn): the consistent point
// of the slot that exported it, the end of the WAL record that made the
// snapshot consistent. A transaction whose commit record starts before a
// unit's watermark is in that unit's rows; one whose commit record starts
// at the watermark or later is not, and the stream applies it. Units
// copied at the permanent slot's own snapshot have the stream's start as
// watermark (nothing streamed is before it); units of a resumed copy (a
// newer snapshot from a temporary slot) and units read from a replica (a
// snapshot from a temporary slot there, taken at or after the permanent
// slot's consistent point: see sync/copier/replicas.go) have a later one,
// and the stream skips their rows' changes before it.
//
// A table whose units share one watermark (a whole table; ctid ranges,
// which the copier reads from one snapshot; primary-key ranges read at the
// same snapshot) needs no row lookup. Primary-key ranges copied at
// different snapshots are told apart by the row's value of the range
// column, whatever the replica identity. A TRUNCATE is skipped for a table
// copied entirely after it, and narrowed for one copied partly after it
// (truncateCovered).
func (m copyMarks) covered(c *change, lsn pglogrepl.LSN) bool {
	if c.kind == opTruncate {
		return m.truncateCovered(c, lsn)
	}
	if c.rel == nil {
		return false
	}
	marks := m[c.rel.String()]
	if len(marks) == 0 {
		return false
	}
	if oneSnapshot(marks) {
		return lsn < marks[0].lsn
	}
	// Primary-key ranges read at different snapshots: find the row's
	// range by its value of the range column.
	row := c.newRow
	if row == nil {
		row = c.oldRow
	}
	col := -1
	for i, name := range c.rel.columns {
		if name == marks[0].column {
			col = i
		}
	}
	if col < 0 || col >= len(row) {
		return false
	}
	v := row[col]
	if v.null || v.toasted {
		return false
	}
	k, err := sharding.DecodeInt(sharding.FormatText, v.data)
	if err != nil {
		return false
	}
	for _, w := range marks {
		if (w.lo == nil || k >= *w.lo) && (w.hi == nil || k < *w.hi) {
			return lsn < w.lsn
		}
	}
	return false
}

// oneSnapshot tells whether every unit of a table was copied at the same
// snapshot.
func oneSnapshot(marks []watermark) bool {
	for _, w := range marks[1:] {
		if w.lsn != marks[0].lsn {
			return false
		}
	}
	return true
}

// truncateCovered applies the watermark rule to a TRUNCATE committed at
// lsn: a relation copied entirely after it is left out (its copy is
// already without what it removed), and one copied partly after it gets a
// keep condition (the key ranges copied after it), so that route deletes
// only the other ranges' rows. It reports whether nothing is left to
// apply.
func (m copyMarks) truncateCovered(c *change, lsn pglogrepl.LSN) bool {
	kept := c.truncated[:0]
	for _, r := range c.truncated {
		marks := m[r.String()]
		var after []string
		for _, w := range marks {
			if lsn < w.lsn {
				after = append(after, rangeCondition(w))
			}
		}
		switch {
		case len(after) == 0:
			kept = append(kept, r)
		case len(after) == len(marks):
			// copied entirely after the TRUNCATE
		default:
			if c.keep == nil {
				c.keep = map[*relation]string{}
			}
			c.keep[r] = strings.Join(after, " OR ")
			kept = append(kept, r)
		}
	}
	c.truncated = kept
	return len(kept) == 0
}

// rangeCondition is the SQL condition selecting a primary-key range unit's
// rows.
func rangeCondition(w watermark) string {
	col := pgx.Identifier{w.column}.Sanitize()
	switch {
	case w.lo != nil && w.hi != nil:
		return fmt.Sprintf("(%s >= %d AND %s < %d)", col, *w.lo, col, *w.hi)
	case w.lo != nil:
		return fmt.Sprintf("(%s >= %d)", col, *w.lo)
	case w.hi != nil:
		return fmt.Sprintf("(%s < %d)", col, *w.hi)
	}
	return "true"
}
