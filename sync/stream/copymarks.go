package stream

import (
	"context"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sharding"
)

// copyMarks are the copy's watermarks per table ("schema.name"): the
// units a resumed copy finished under a newer snapshot than the slot's
// hold the changes committed before their watermark already.
type copyMarks map[string][]watermark

// watermark: rows of a unit (a key range, or the whole table when lo and
// hi are nil) copied at a snapshot whose consistent point is lsn.
type watermark struct {
	lo, hi *int64
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
	rows, err := conn.Query(ctx, `SELECT table_schema, table_name, lo, hi, watermark_lsn::text FROM reshard.copy_units
		WHERE slot = $1 AND source_shard = $2 AND done`, slot, sourceShard)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var schema, name, lsn string
		var w watermark
		if err := rows.Scan(&schema, &name, &w.lo, &w.hi, &lsn); err != nil {
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
// copied rows. A watermark is a snapshot's consistent point: the end of
// the WAL record that made the snapshot consistent. A transaction whose
// commit record starts there or later is not in the snapshot (the stream
// has it), only one whose commit record starts before.
func (m copyMarks) covered(c *change, lsn pglogrepl.LSN) bool {
	if c.rel == nil {
		return false // TRUNCATE: applies whatever the copy holds
	}
	marks := m[c.rel.String()]
	if len(marks) == 0 {
		return false
	}
	if len(marks) == 1 || marks[0].lo == nil && marks[0].hi == nil {
		return lsn < marks[0].lsn
	}
	// Primary-key ranges: find the row's range by its key.
	row := c.newRow
	if row == nil {
		row = c.oldRow
	}
	if len(c.rel.key) != 1 || row == nil {
		return false
	}
	v := row[c.rel.key[0]]
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
