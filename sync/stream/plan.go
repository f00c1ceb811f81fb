package stream

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sync/job"
)

// plan is one table's statements: built when its Relation message arrives
// (the INSERT of a whole row, the DELETE by replica identity), and for the
// shapes that depend on the change (which columns an UPDATE sets, which a
// REPLICA IDENTITY FULL row compares, merged multi-row forms) built once
// per shape and kept. Only the apply goroutine uses it.
type plan struct {
	r *relation
	// insertRow inserts every column; deleteKey deletes by the key columns.
	insertRow, deleteKey string
	sqls                 map[string]string
}

// newPlan builds a relation's plan.
func newPlan(r *relation) *plan {
	p := &plan{r: r, sqls: map[string]string{}}
	cols := make([]int, len(r.columns))
	for i := range cols {
		cols[i] = i
	}
	p.insertRow = insertSQL(r, cols)
	if len(r.key) > 0 && r.identity != 'f' {
		p.deleteKey = fmt.Sprintf("DELETE FROM %s WHERE %s", r.qualified, whereKey(r, rowKey{cols: r.key, vals: make([][]byte, len(r.key))}, 1))
	}
	return p
}

// cached returns the statement of a shape, building it once.
func (p *plan) cached(key []byte, build func() string) string {
	if sql, ok := p.sqls[string(key)]; ok {
		return sql
	}
	sql := build()
	p.sqls[string(key)] = sql
	return sql
}

// insert is the INSERT of a row of ncols values.
func (p *plan) insert(ncols int) string {
	if ncols == len(p.r.columns) {
		return p.insertRow
	}
	return p.cached([]byte{'i', byte(ncols), byte(ncols >> 8)}, func() string {
		cols := make([]int, ncols)
		for i := range cols {
			cols[i] = i
		}
		return insertSQL(p.r, cols)
	})
}

// update is the UPDATE setting the new row's sent columns (unchanged
// TOASTed ones are left as they are), locating the row by key, whose
// parameters follow the new values.
func (p *plan) update(newRow []value, key rowKey) string {
	shape, nset := setShape('u', newRow, key)
	return p.cached(shape, func() string {
		var set []string
		for i, v := range newRow {
			if !v.toasted {
				set = append(set, fmt.Sprintf("%s = $%d", quoteIdent(p.r.columns[i]), len(set)+1))
			}
		}
		return fmt.Sprintf("UPDATE %s SET %s WHERE %s", p.r.qualified, strings.Join(set, ", "), whereKey(p.r, key, nset+1))
	})
}

// replace is update for a row whose GENERATED ALWAYS identity column may
// have changed, which no UPDATE can set: the row located by key is deleted
// and inserted again, in one statement, with the new row's sent columns
// and the old row's unsent ones (unchanged TOASTed values), identity
// values included (OVERRIDING SYSTEM VALUE). Its parameters are update's,
// and like an UPDATE it affects no row when the row is not on the shard.
func (p *plan) replace(newRow []value, key rowKey) string {
	shape, _ := setShape('R', newRow, key)
	return p.cached(shape, func() string {
		names := make([]string, len(p.r.columns))
		vals := make([]string, len(p.r.columns))
		n := 0
		for i, v := range newRow {
			names[i] = quoteIdent(p.r.columns[i])
			if v.toasted {
				vals[i] = "d." + names[i]
				continue
			}
			n++
			vals[i] = "$" + strconv.Itoa(n)
			if i < len(p.r.types) && p.r.types[i] != "" {
				vals[i] += "::" + p.r.types[i]
			}
		}
		return fmt.Sprintf("WITH d AS (DELETE FROM %s WHERE %s RETURNING *) INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM d",
			p.r.qualified, whereKey(p.r, key, n+1), p.r.qualified, strings.Join(names, ", "), strings.Join(vals, ", "))
	})
}

// setShape is what an UPDATE-like statement of kind depends on: which of
// the new row's columns it sets (the sent ones; nset of them) and the
// key's shape.
func setShape(kind byte, newRow []value, key rowKey) (shape []byte, nset int) {
	shape = make([]byte, 0, 2+len(newRow)+3*len(key.cols))
	shape = append(shape, kind)
	for _, v := range newRow {
		if v.toasted {
			shape = append(shape, 0)
			continue
		}
		shape = append(shape, 1)
		nset++
	}
	return key.shape(append(shape, '|')), nset
}

// delete is the DELETE locating the row by key.
func (p *plan) delete(key rowKey) string {
	if p.deleteKey != "" && p.r.identity != 'f' && sameCols(key.cols, p.r.key) {
		return p.deleteKey
	}
	return p.cached(key.shape([]byte{'d'}), func() string {
		return fmt.Sprintf("DELETE FROM %s WHERE %s", p.r.qualified, whereKey(p.r, key, 1))
	})
}

// probe is the DELETE of the row located by key, if it is on the shard,
// that records the deleted row as moved (in reshard.moved_rows, in the same
// transaction) and returns its columns in text form. Its parameters are the
// key's, then the slot, the row's identity (hex bytea), the change's LSN
// and number in its transaction, and the shard the row moves to.
func (p *plan) probe(key rowKey) string {
	return p.cached(key.shape([]byte{'D'}), func() string {
		ret := make([]string, len(p.r.columns))
		names := make([]string, len(p.r.columns))
		for i, n := range p.r.columns {
			names[i] = "x" + strconv.Itoa(i)
			ret[i] = quoteIdent(n) + "::text AS " + names[i]
		}
		n := len(key.args(p.r))
		return fmt.Sprintf(`WITH d AS (DELETE FROM %s WHERE %s RETURNING %s), `+
			`m AS (INSERT INTO %s (slot, row_id, lsn, seq, target, image) SELECT $%d, $%d::bytea, $%d::pg_lsn, $%d::int, $%d::int, ARRAY[%s]::text[] FROM d) `+
			`SELECT %s FROM d`,
			p.r.qualified, whereKey(p.r, key, 1), strings.Join(ret, ", "),
			movedRowsTable, n+1, n+2, n+3, n+4, n+5, strings.Join(names, ", "),
			strings.Join(names, ", "))
	})
}

func sameCols(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

func insertSQL(r *relation, cols []int) string {
	names := make([]string, len(cols))
	params := make([]string, len(cols))
	for i, c := range cols {
		names[i] = quoteIdent(r.columns[c])
		params[i] = "$" + strconv.Itoa(i+1)
	}
	if len(cols) == 0 {
		// A table of no columns (CREATE TABLE t ()).
		return fmt.Sprintf("INSERT INTO %s DEFAULT VALUES", r.qualified)
	}
	override := ""
	if r.anyAlways {
		// GENERATED ALWAYS identity columns take the source's values.
		override = " OVERRIDING SYSTEM VALUE"
	}
	return fmt.Sprintf("INSERT INTO %s (%s)%s VALUES (%s)", r.qualified, strings.Join(names, ", "), override, strings.Join(params, ", "))
}

// rowKey locates a row: the columns compared and their values (nil for
// NULL).
type rowKey struct {
	cols []int
	vals [][]byte
}

// args are the key's statement parameters: its values, but for REPLICA
// IDENTITY FULL the NULLs, which are compared with IS NULL.
func (k rowKey) args(r *relation) [][]byte {
	if r.identity != 'f' {
		return k.vals
	}
	out := make([][]byte, 0, len(k.vals))
	for _, v := range k.vals {
		if v != nil {
			out = append(out, v)
		}
	}
	return out
}

// shape appends what the statements locating rows by the key depend on:
// its columns, and which are NULL.
func (k rowKey) shape(b []byte) []byte {
	for i, c := range k.cols {
		null := byte(0)
		if k.vals[i] == nil {
			null = 1
		}
		b = append(b, byte(c), byte(c>>8), null)
	}
	return b
}

// whereKey builds the WHERE clause locating a row by its replica identity,
// parameters numbered from first. By a key (a primary key or unique index)
// each column is compared with =. With REPLICA IDENTITY FULL every column
// present is compared through its text form, which every type has, so that
// types without equality (json, xml, point, polygon, ...) and types whose
// equality is not identity (citext, numeric scale, float zeros) locate the
// very row: the destination's value as text against the source's value read
// in as the column's type and written out again in the same session; NULLs
// are compared with IS NULL. One of identical rows is chosen (by ctid, with
// tableoid for a partitioned table).
func whereKey(r *relation, key rowKey, first int) string {
	conds := make([]string, len(key.cols))
	n := first
	for i, c := range key.cols {
		col := quoteIdent(r.columns[c])
		switch {
		case r.identity != 'f':
			conds[i] = fmt.Sprintf("%s = $%d", col, n)
			n++
		case key.vals[i] == nil:
			conds[i] = col + " IS NULL"
		case c < len(r.types) && r.types[c] != "":
			conds[i] = fmt.Sprintf("%s::text = ($%d::%s)::text", col, n, r.types[c])
			n++
		default:
			conds[i] = fmt.Sprintf("%s::text = $%d::text", col, n)
			n++
		}
	}
	w := strings.Join(conds, " AND ")
	if r.identity != 'f' {
		return w
	}
	if len(conds) == 0 {
		w = "true"
	}
	if r.partitioned {
		return fmt.Sprintf("(tableoid, ctid) = (SELECT tableoid, ctid FROM %s WHERE %s LIMIT 1)", r.qualified, w)
	}
	return fmt.Sprintf("ctid = (SELECT ctid FROM %s WHERE %s LIMIT 1)", r.qualified, w)
}

// keyOf returns the key identifying the row: the old row when pgoutput
// sent one (identity changed, or REPLICA IDENTITY FULL), else the key
// columns of the new row.
func keyOf(r *relation, c *change) (rowKey, error) {
	src := c.oldRow
	cols := r.key
	if src == nil {
		src = c.newRow
	}
	if r.identity == 'f' && c.oldRow != nil {
		cols = nil
		for i, v := range c.oldRow {
			if !v.toasted {
				cols = append(cols, i)
			}
		}
	}
	if len(cols) == 0 {
		return rowKey{}, job.Errorf("55000", "%s has no replica identity: its updates and deletes cannot be applied", r).WithHint("add a primary key, or ALTER TABLE %s REPLICA IDENTITY FULL on the source", r.qualified)
	}
	vals := make([][]byte, len(cols))
	for i, k := range cols {
		if k >= len(src) || src[k].toasted {
			return rowKey{}, job.Errorf("XX000", "%s: key column %s missing from the change", r, r.columns[k])
		}
		if !src[k].null {
			vals[i] = src[k].data
		}
	}
	return rowKey{cols: cols, vals: vals}, nil
}
