package stream

import (
	"fmt"
	"strconv"
	"strings"
)

// Limits of one merged statement.
const (
	mergeRows   = 512
	mergeParams = 30000
)

// merge turns runs of like statements into multi-row ones: a shard's part of
// a batch is one destination transaction, so only its final state matters,
// and one statement for hundreds of rows costs far less than hundreds.
//
// Statements are first grouped by table, keeping their order within each
// table: statements on different tables commute inside the transaction
// (apply sessions run with session_replication_role = replica, so no
// triggers or foreign-key checks tie tables together). Then consecutive
// INSERTs of the same shape become one INSERT ... VALUES (...), (...), and
// consecutive key-located UPDATEs of the same shape on distinct rows become
// one UPDATE ... FROM (VALUES ...), and consecutive key-located DELETEs one
// DELETE ... USING (VALUES ...). Statements whose row count must be
// checked, and anything else, stay as they are.
func merge(ops []op) []op {
	if len(ops) < 2 {
		return ops
	}
	// Stable grouping by table.
	var order []*relation
	byRel := map[*relation][]op{}
	mixed := false
	for _, o := range ops {
		if o.rel == nil {
			mixed = true
			break
		}
		if _, ok := byRel[o.rel]; !ok {
			order = append(order, o.rel)
		}
		byRel[o.rel] = append(byRel[o.rel], o)
	}
	if mixed {
		// A TRUNCATE orders everything around it: merge runs in place only.
		return mergeRuns(ops)
	}
	out := make([]op, 0, len(ops))
	for _, r := range order {
		out = append(out, mergeRuns(byRel[r])...)
	}
	return out
}

// mergeRuns merges consecutive mergeable statements.
func mergeRuns(ops []op) []op {
	out := make([]op, 0, len(ops))
	for i := 0; i < len(ops); {
		o := ops[i]
		if !mergeable(o) {
			out = append(out, o)
			i++
			continue
		}
		j := i + 1
		params := len(o.args)
		rows := map[string]bool{o.row: true}
		for j < len(ops) && j-i < mergeRows && params+len(ops[j].args) <= mergeParams {
			n := ops[j]
			if !mergeable(n) || n.sql != o.sql || n.rel != o.rel {
				break
			}
			if o.kind == opUpdate {
				if rows[n.row] {
					break // the same row twice: the second waits
				}
				rows[n.row] = true
			}
			params += len(n.args)
			j++
		}
		// Merged statements come in a few sizes only, so that each size
		// is prepared and planned once per session.
		for k := i; k < j; {
			size := bucket(j - k)
			if size == 1 {
				out = append(out, ops[k])
			} else {
				out = append(out, combine(ops[k:k+size]))
			}
			k += size
		}
		i = j
	}
	return out
}

func mergeable(o op) bool {
	if o.rel == nil || o.probe || o.arrive != nil {
		return false
	}
	switch o.kind {
	case opInsert:
		return len(o.args) > 0 // (INSERT ... DEFAULT VALUES has no VALUES list)
	case opUpdate:
		return o.update && o.row != "" && len(o.setCols) > 0 && len(o.rel.types) == len(o.rel.columns)
	case opDelete:
		// Located by a replica-identity key (never NULL), not a whole old
		// row (REPLICA IDENTITY FULL compares NULLs).
		return o.rel.identity != 'f' && len(o.keyCols) > 0 && len(o.rel.types) == len(o.rel.columns)
	}
	return false
}

// combine builds the multi-row statement of like statements.
func combine(ops []op) op {
	first := ops[0]
	r := first.rel
	args := make([][]byte, 0, len(ops)*len(first.args))
	for _, o := range ops {
		args = append(args, o.args...)
	}
	per := len(first.args)
	key := []byte(fmt.Sprintf("m%c%d|%s", byte(first.kind), len(ops), first.sql))
	sql := r.plan.cached(key, func() string {
		var b strings.Builder
		switch first.kind {
		case opInsert:
			// INSERT INTO t (cols) VALUES ($1, ...): repeat the VALUES list.
			head := first.sql[:strings.Index(first.sql, " VALUES ")]
			b.WriteString(head)
			b.WriteString(" VALUES ")
			for i := range ops {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteByte('(')
				for c := 0; c < per; c++ {
					if c > 0 {
						b.WriteString(", ")
					}
					b.WriteString("$" + strconv.Itoa(i*per+c+1))
				}
				b.WriteByte(')')
			}
		case opUpdate:
			// UPDATE t SET c = v.c, ... FROM (VALUES ($1::type, ...), ...)
			// AS v(c..., k...) WHERE t.k = v.k
			names := make([]string, 0, per)
			for n := range first.setCols {
				names = append(names, fmt.Sprintf("s%d", n))
			}
			for n := range first.keyCols {
				names = append(names, fmt.Sprintf("k%d", n))
			}
			fmt.Fprintf(&b, "UPDATE %s AS t SET ", r.qualified)
			for n, c := range first.setCols {
				if n > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "%s = v.s%d", quoteIdent(r.columns[c]), n)
			}
			b.WriteString(" FROM (VALUES ")
			writeValues(&b, r, len(ops), append(append([]int(nil), first.setCols...), first.keyCols...))
			fmt.Fprintf(&b, ") AS v(%s) WHERE ", strings.Join(names, ", "))
			writeKeyJoin(&b, r, first.keyCols)
		case opDelete:
			// DELETE FROM t USING (VALUES ($1::type, ...), ...) AS v(k...)
			// WHERE t.k = v.k
			names := make([]string, 0, per)
			for n := range first.keyCols {
				names = append(names, fmt.Sprintf("k%d", n))
			}
			fmt.Fprintf(&b, "DELETE FROM %s AS t USING (VALUES ", r.qualified)
			writeValues(&b, r, len(ops), first.keyCols)
			fmt.Fprintf(&b, ") AS v(%s) WHERE ", strings.Join(names, ", "))
			writeKeyJoin(&b, r, first.keyCols)
		}
		return b.String()
	})
	return op{sql: sql, args: args, rel: r, kind: first.kind}
}

// writeValues writes rows VALUES lists of typed parameters, one per column
// of cols: ($1::type, ...), ($n+1::type, ...), ...
func writeValues(b *strings.Builder, r *relation, rows int, cols []int) {
	per := len(cols)
	for i := 0; i < rows; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c, col := range cols {
			if c > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(b, "$%d::%s", i*per+c+1, r.types[col])
		}
		b.WriteByte(')')
	}
}

// writeKeyJoin writes t.key = v.kN for each key column.
func writeKeyJoin(b *strings.Builder, r *relation, keyCols []int) {
	for n, c := range keyCols {
		if n > 0 {
			b.WriteString(" AND ")
		}
		fmt.Fprintf(b, "t.%s = v.k%d", quoteIdent(r.columns[c]), n)
	}
}

// bucket is the largest merge size not above n: 256, 64, 16, 4 or 1.
func bucket(n int) int {
	for _, b := range []int{256, 64, 16, 4} {
		if n >= b {
			return b
		}
	}
	return 1
}
