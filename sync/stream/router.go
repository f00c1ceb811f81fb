package stream

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/sharding"

	"github.com/reshard/reshard/sync/job"
)

// router turns committed source transactions into each destination
// shard's statements: it drops what the copy already holds (copy
// watermarks) and what a shard's origin says it has, chooses the shard of
// every change, and coalesces and merges each shard's statements.
type router struct {
	// shards is the number of destination shards.
	shards int
	// sourceShard of sourceShards is the shard the slot streams.
	sourceShard, sourceShards int
	// origins is, per destination shard, its origin's position when the
	// session started: transactions committed at or before it are there.
	origins []pglogrepl.LSN
	marks   copyMarks
	// slot names the stream in the records of moved rows.
	slot string
}

// routedRun is a run of transactions turned into statements: per part,
// each shard's statements; a batch that may move rows has a board for its
// shards to meet on, and is cut into parts (see mover).
type routedRun struct {
	parts [][][]op // parts[i][k]: shard k's statements of part i
	// changes is, per shard, the row changes the statements hold.
	changes []int
	// lsn is the commit LSN of the last transaction: the shards' origin
	// position once applied.
	lsn   pglogrepl.LSN
	board *board
}

// routeRun turns transactions into each shard's statements, coalesced and
// merged.
func (rt *router) routeRun(txns []*txn) (routedRun, error) {
	n := rt.shards
	ops := make([][]op, n)
	total := 0
	for _, t := range txns {
		total += len(t.changes)
	}
	for k := range ops {
		ops[k] = make([]op, 0, total/n+16)
	}
	var out routedRun
	moves := false
	for _, t := range txns {
		out.lsn = t.commitLSN
		emit := func(k int, o op) {
			if t.commitLSN > rt.origins[k] { // else this shard has it (origin)
				ops[k] = append(ops[k], o)
				moves = moves || o.probe || o.arrive != nil
			}
		}
		for i, c := range t.changes {
			if rt.marks.covered(c, t.commitLSN) {
				continue
			}
			if err := rt.route(c, position{lsn: t.commitLSN, seq: t.seqBase + i}, emit); err != nil {
				return routedRun{}, err
			}
		}
	}
	out.changes = make([]int, n) // row changes per shard, for metrics
	for k := range ops {
		for _, o := range ops[k] {
			if !o.probe {
				out.changes[k]++
			}
		}
		ops[k] = coalesce(ops[k])
	}
	if moves {
		out.board = newBoard(n, txns[0].commitLSN)
		out.parts = cut(ops)
	} else {
		out.parts = [][][]op{ops}
	}
	for _, part := range out.parts {
		for k := range part {
			part[k] = merge(part[k])
		}
	}
	return out, nil
}

// route turns a change into statements per shard, handing each to emit
// with its shard (the change stays on one shard, or goes to every shard for
// omni tables, broadcast deletes and truncates), in shard order.
func (rt *router) route(c *change, pos position, emit func(shard int, o op)) error {
	every := func(o op) {
		for k := 0; k < rt.shards; k++ {
			emit(k, o)
		}
	}
	// With several source shards, omni tables are the same on each: their
	// changes are taken from source shard 0 only, as their copy was.
	several := rt.sourceShards > 1
	if c.rel != nil && c.rel.sameOnEverySource && several && rt.sourceShard != 0 {
		return nil
	}
	switch c.kind {
	case opTruncate:
		names := make([]string, 0, len(c.truncated))
		for _, r := range c.truncated {
			if r.sameOnEverySource && several && rt.sourceShard != 0 {
				continue
			}
			if !r.sameOnEverySource && several {
				return job.Errorf("0A000", "TRUNCATE of %s on source shard %d: the destination shards also hold the other source shards' rows of it, so it cannot be applied as is; stop writes to it, or delete the rows instead of truncating", r, rt.sourceShard)
			}
			if keep, ok := c.keep[r]; ok {
				// copied partly after the TRUNCATE (copyMarks.truncateCovered)
				every(op{sql: fmt.Sprintf("DELETE FROM %s WHERE NOT (%s)", r.qualified, keep)})
				continue
			}
			names = append(names, r.qualified)
		}
		if len(names) == 0 {
			return nil
		}
		sql := "TRUNCATE " + strings.Join(names, ", ")
		if c.restartSeqs {
			sql += " RESTART IDENTITY"
		}
		if c.cascade {
			sql += " CASCADE"
		}
		every(op{sql: sql, pos: pos})
		return nil
	case opInsert:
		args := make([][]byte, 0, len(c.newRow))
		for _, v := range c.newRow {
			if v.null {
				args = append(args, nil)
			} else {
				args = append(args, v.data)
			}
		}
		o := op{sql: c.rel.plan.insert(len(c.newRow)), args: args, pos: pos, rel: c.rel, kind: opInsert}
		if key, err := keyOf(c.rel, c); err == nil && len(key.cols) == len(c.rel.key) {
			o.row = rowID(c.rel, key.vals)
		}
		sh, err := c.rel.shardOf(c.newRow)
		if err != nil {
			return routeErr(c, err)
		}
		if sh == sharding.AllShards {
			every(o)
		} else {
			emit(sh, o)
		}
		return nil
	case opUpdate:
		key, err := keyOf(c.rel, c)
		if err != nil {
			return err
		}
		setRow, replace := identitySet(c)
		args := make([][]byte, 0, len(c.newRow)+len(key.vals))
		var setCols []int
		for i, v := range setRow {
			if v.toasted {
				continue
			}
			setCols = append(setCols, i)
			if v.null {
				args = append(args, nil)
			} else {
				args = append(args, v.data)
			}
		}
		row := rowID(c.rel, key.vals)
		sql := c.rel.plan.update(setRow, key)
		if replace {
			sql = c.rel.plan.replace(setRow, key)
		}
		o := op{sql: sql, args: append(args, key.args(c.rel)...), pos: pos, row: row,
			rel: c.rel, kind: opUpdate, keyCols: key.cols, setCols: setCols}
		// Coalescible: the key is unchanged (no old tuple) and the row is
		// found by key, not by its whole old image.
		o.update = c.oldRow == nil && c.rel.identity != 'f' && !replace
		newRow := newRowOf(c)
		sh, err := c.rel.shardOf(newRow)
		if err != nil {
			return routeErr(c, err)
		}
		if sh == sharding.AllShards {
			every(o)
			return nil
		}
		probe := func(k int) {
			emit(k, op{sql: c.rel.plan.probe(key), args: append(append([][]byte(nil), key.args(c.rel)...), rt.probeArgs(row, pos, sh)...),
				pos: pos, row: row, rel: c.rel, kind: opDelete, keyCols: key.cols, probe: true})
		}
		arrive := &arrival{change: c, newRow: newRow, rowIDs: []string{row}}
		if newKey := newKeyID(c); newKey != "" && newKey != row {
			arrive.rowIDs = append(arrive.rowIDs, newKey)
		}
		switch {
		case movesRow(c):
			// A known move: off the old shard, onto the new one (no UPDATE
			// can find it there).
			old, _ := c.rel.shardOf(c.oldRow)
			probe(old)
			emit(sh, op{pos: pos, row: row, rel: c.rel, kind: opInsert, arrive: arrive})
		case c.rel.shardCol >= 0 && !c.rel.identifiesShard():
			// The change cannot show whether the sharding key changed: the
			// row is updated where the new row belongs, and taken off every
			// other shard if it was there.
			o.arrive = arrive
			for k := 0; k < rt.shards; k++ {
				if k != sh {
					probe(k)
				}
			}
			emit(sh, o)
		default:
			emit(sh, o)
		}
		return nil
	case opDelete:
		key, err := keyOf(c.rel, c)
		if err != nil {
			return err
		}
		o := op{sql: c.rel.plan.delete(key), args: key.args(c.rel), pos: pos, row: rowID(c.rel, key.vals), rel: c.rel, kind: opDelete, keyCols: key.cols}
		if c.rel.shardCol >= 0 && keyInOld(c) {
			sh, err := c.rel.shardOf(c.oldRow)
			if err == nil && sh != sharding.AllShards {
				emit(sh, o)
				return nil
			}
		}
		every(o) // the shard cannot be told from the key: only one has it
		return nil
	}
	return nil
}

// identitySet is the new row of an UPDATE as its statement sets it. No
// UPDATE can set a GENERATED ALWAYS identity column: one the change shows
// unchanged (a key column when no old key was sent, or a column whose old
// value was sent and is the same) is left out, as an unchanged TOASTed
// column is; when one may have changed (REPLICA IDENTITY FULL or a column
// outside the key: UPDATE ... SET id = DEFAULT on the source), replace
// is set and the row is deleted and inserted again (plan.replace).
func identitySet(c *change) (row []value, replace bool) {
	r := c.rel
	if !r.anyAlways {
		return c.newRow, false
	}
	row = append([]value(nil), c.newRow...)
	for i := range row {
		if i >= len(r.always) || !r.always[i] || row[i].toasted {
			continue
		}
		switch {
		case c.oldRow != nil && i < len(c.oldRow) && !c.oldRow[i].toasted:
			if c.oldRow[i].null != row[i].null || !bytes.Equal(c.oldRow[i].data, row[i].data) {
				replace = true
				continue
			}
		case c.oldRow == nil && r.identity != 'f' && slices.Contains(r.key, i):
		default:
			replace = true
			continue
		}
		row[i].toasted = true
	}
	return row, replace
}

// probeArgs are a probe's parameters after the key values: the slot, the
// row's identity (hex bytea), the change's position and the shard the row
// moves to.
func (rt *router) probeArgs(row string, pos position, target int) [][]byte {
	return [][]byte{[]byte(rt.slot), []byte(`\x` + hex.EncodeToString([]byte(row))), []byte(pos.lsn.String()),
		[]byte(strconv.Itoa(pos.seq)), []byte(strconv.Itoa(target))}
}

// newKeyID is the identity of the row an UPDATE leaves, when the change
// carries its whole key ("" otherwise).
func newKeyID(c *change) string {
	if c.rel.identity == 'f' || len(c.rel.key) == 0 {
		return ""
	}
	vals := make([][]byte, len(c.rel.key))
	for i, k := range c.rel.key {
		if k >= len(c.newRow) || c.newRow[k].toasted {
			return ""
		}
		if !c.newRow[k].null {
			vals[i] = c.newRow[k].data
		}
	}
	return rowID(c.rel, vals)
}

func routeErr(c *change, err error) error {
	return job.Wrap("22023", err, "cannot route a change of %s: %v", c.rel, err)
}

// movesRows tells whether a transaction has an UPDATE whose sharding key
// changes shard (known from the old tuple).
func movesRows(t *txn) bool {
	for _, c := range t.changes {
		if movesRow(c) {
			return true
		}
	}
	return false
}

// movesRow tells whether a change is an UPDATE whose old tuple and new row
// route to different shards.
func movesRow(c *change) bool {
	if c.kind != opUpdate || c.oldRow == nil || c.rel.shardCol < 0 || !keyInOld(c) {
		return false
	}
	so, err1 := c.rel.shardOf(c.oldRow)
	sn, err2 := c.rel.shardOf(newRowOf(c))
	return err1 == nil && err2 == nil && so != sn
}

// keyInOld tells whether the old tuple carries the sharding column.
func keyInOld(c *change) bool {
	if !c.oldIsKey {
		return true // REPLICA IDENTITY FULL: the whole old row
	}
	for _, k := range c.rel.key {
		if k == c.rel.shardCol {
			return true
		}
	}
	return false
}

// newRowOf returns the change's new row, with unchanged TOASTed values
// filled from the old row when the change carries the whole old row
// (REPLICA IDENTITY FULL). A key-only old tuple has NULLs for non-key
// columns: it fills nothing.
func newRowOf(c *change) []value {
	if c.oldIsKey {
		return c.newRow
	}
	return mergeRow(c.newRow, c.oldRow)
}

// mergeRow fills a new row's unchanged TOASTed values from the old row.
func mergeRow(newRow, oldRow []value) []value {
	out, copied := newRow, false
	for i, v := range newRow {
		if v.toasted && i < len(oldRow) && !oldRow[i].toasted {
			if !copied {
				out, copied = append([]value(nil), newRow...), true
			}
			out[i] = oldRow[i]
		}
	}
	return out
}

// coalesce drops UPDATEs that a later UPDATE of the same row (same key,
// same columns) in the same destination transaction overwrites: only the
// final row is ever visible, and hot rows updated thousands of times in one
// batch would otherwise grow long version chains.
func coalesce(ops []op) []op {
	last := map[string]int{}
	drop := make([]bool, len(ops))
	dropped := 0
	for i, o := range ops {
		if o.row == "" {
			continue
		}
		if j, ok := last[o.row]; ok && o.update && ops[j].update && ops[j].sql == o.sql {
			drop[j] = true
			dropped++
		}
		last[o.row] = i
	}
	if dropped == 0 {
		return ops
	}
	out := make([]op, 0, len(ops)-dropped)
	for i, o := range ops {
		if !drop[i] {
			out = append(out, o)
		}
	}
	return out
}

// rowID is the identity of a row for coalescing: relation and key values.
func rowID(r *relation, keyVals [][]byte) string {
	n := 12
	for _, v := range keyVals {
		n += len(v) + 2
	}
	b := make([]byte, 0, n)
	b = strconv.AppendUint(b, uint64(r.id), 10)
	for _, v := range keyVals {
		b = append(b, 0)
		if v == nil {
			b = append(b, 1)
		}
		b = append(b, v...)
	}
	return string(b)
}
