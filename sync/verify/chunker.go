package verify

import (
	"context"
	"fmt"
	"math"
	"strings"
)

// keyRange is the rows of a table whose key is in [lo, hi), each bound the
// text values of the key columns; a nil bound is open. The zero keyRange is
// the whole table.
type keyRange struct {
	lo, hi []string
}

func (r keyRange) whole() bool { return r.lo == nil && r.hi == nil }

// where is the SQL condition (" WHERE ..." or "") selecting r's rows of t
// (aliased x). Bounds are untyped literals, so each takes its column's type
// on each side (a key the destination widened to bigint included).
func (t *table) where(r keyRange, extra ...string) string {
	var conds []string
	if r.lo != nil {
		conds = append(conds, t.compare(">=", r.lo))
	}
	if r.hi != nil {
		conds = append(conds, t.compare("<", r.hi))
	}
	conds = append(conds, extra...)
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

func (t *table) compare(op string, bound []string) string {
	if len(t.key) == 1 {
		return "x." + ident(t.key[0]) + " " + op + " " + quote(bound[0])
	}
	lits := make([]string, len(bound))
	for i, b := range bound {
		lits[i] = quote(b)
	}
	return "(" + t.keyList() + ") " + op + " (" + strings.Join(lits, ", ") + ")"
}

// keyColumnsText is the key columns of x, each as text, for reading keys
// back as bounds.
func (t *table) keyColumnsText() string {
	parts := make([]string, len(t.key))
	for i, c := range t.key {
		parts[i] = "x." + ident(c) + "::text"
	}
	return strings.Join(parts, ", ")
}

// chunkCount is how many chunks of about chunkRows rows t is split into.
func chunkCount(t *table, chunkRows int64) int {
	if len(t.key) == 0 || t.estimate <= chunkRows {
		return 1
	}
	return int(min((t.estimate+chunkRows-1)/chunkRows, maxChunks))
}

// maxChunks bounds the chunks of one table.
const maxChunks = 20000

// samplePercent is the TABLESAMPLE SYSTEM percentage that reads enough
// pages and rows of t to place chunks boundaries about evenly: 20 pages
// and 50 rows a chunk.
func samplePercent(t *table, chunks int) float64 {
	p := 0.0
	if t.pages > 0 {
		p = 100 * 20 * float64(chunks) / float64(t.pages)
	}
	if t.estimate > 0 {
		p = math.Max(p, 100*50*float64(chunks)/float64(t.estimate))
	}
	return math.Min(100, math.Max(p, 0.0001))
}

// boundariesSQL samples t's keys on a server and returns every n/chunks-th
// of them in key order: the lower bounds of chunks 2..n.
func boundariesSQL(t *table, chunks int) string {
	return fmt.Sprintf(`SELECT %s FROM (SELECT %s, row_number() OVER (ORDER BY %s) AS rn, count(*) OVER () AS n
		FROM %s x TABLESAMPLE SYSTEM (%g)) x WHERE rn > 1 AND (rn - 1) %% greatest(n / %d, 1) = 0 ORDER BY rn`,
		sampledKeys(len(t.key)), t.keyColumnsTextAs(), t.keyList(), t.From(), samplePercent(t, chunks), chunks)
}

// keyColumnsTextAs is keyColumnsText with the columns named k0, k1, ...
func (t *table) keyColumnsTextAs() string {
	parts := make([]string, len(t.key))
	for i, c := range t.key {
		parts[i] = fmt.Sprintf("x.%s::text AS k%d", ident(c), i)
	}
	return strings.Join(parts, ", ")
}

func sampledKeys(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("x.k%d", i)
	}
	return strings.Join(parts, ", ")
}

// chunks splits t into key ranges of about chunkRows rows, by boundaries
// sampled on s (source shard 0, in the snapshot). A table without a key,
// or small enough, is one range.
func chunks(ctx context.Context, s *server, t *table, chunkRows int64) ([]keyRange, error) {
	n := chunkCount(t, chunkRows)
	if n <= 1 {
		return []keyRange{{}}, nil
	}
	rows, err := s.query(ctx, boundariesSQL(t, n))
	if err != nil {
		return nil, fmt.Errorf("sample the keys of %s: %w", t, err)
	}
	var out []keyRange
	var lo []string
	for _, row := range rows {
		hi := make([]string, len(row))
		for i, v := range row {
			if v == nil {
				return nil, fmt.Errorf("sample the keys of %s: a NULL key", t)
			}
			hi[i] = string(v)
		}
		out = append(out, keyRange{lo: lo, hi: hi})
		lo = hi
	}
	return append(out, keyRange{lo: lo}), nil
}
