package testkit

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Table is one table CompareShards compares: Key is its sharding column
// ("" for an omni table, which every shard holds whole); Only reads the
// relation's own rows (ONLY), not its partitions'.
type Table struct {
	Name, Key string
	Only      bool
}

// Comparison is what CompareShards found: the source's rows compared, and
// every difference (none when the shards equal the source).
type Comparison struct {
	Rows  int64
	Diffs []string
}

// Equal tells whether the shards equal the source.
func (c Comparison) Equal() bool { return len(c.Diffs) == 0 }

// String is the differences, one a line, or "equal".
func (c Comparison) String() string {
	if c.Equal() {
		return fmt.Sprintf("equal (%d rows)", c.Rows)
	}
	return strings.Join(c.Diffs, "\n")
}

// rowSums is count(*) and an order-independent sum of every row's 64-bit
// hash (hashtextextended of the row's text form) of a relation.
const rowSums = `SELECT count(*), coalesce(sum(hashtextextended(x::text, 0)::numeric), 0)::text FROM %s x`

// CompareShards compares, per table, the source (the union of srcs for a
// sharded table, srcs[0] for an omni table) with the shards, with SQL of
// its own, not reshard's: row count and sum of row hashes of the union of
// the shards (a sharded table) or of each shard (omni), and that every row
// of a sharded table sits on the shard PostgreSQL's hash partitioning of
// its key gives it (satisfies_hash_partition, for len(shards) remainders,
// NULL keys on shard 0). Rows doubled on one shard and missing on another
// differ in placement or hash sum even where the total count agrees. An
// error is a query that failed, not a difference.
func CompareShards(ctx context.Context, srcs, shards []*pgx.Conn, tables []Table) (Comparison, error) {
	var out Comparison
	for _, tb := range tables {
		rel := tb.Name
		if tb.Only {
			rel = "ONLY " + tb.Name
		}
		from := srcs
		if tb.Key == "" {
			from = srcs[:1]
		}
		want, wantSum, err := sums(ctx, from, rel)
		if err != nil {
			return out, err
		}
		out.Rows += want
		if tb.Key == "" {
			for k, c := range shards {
				n, s, err := sums(ctx, []*pgx.Conn{c}, rel)
				if err != nil {
					return out, err
				}
				if n != want || s != wantSum {
					out.Diffs = append(out.Diffs, fmt.Sprintf("omni %s on shard %d: %d rows (hash sum %s), source %d (%s)", rel, k, n, s, want, wantSum))
				}
			}
			continue
		}
		got, gotSum, err := sums(ctx, shards, rel)
		if err != nil {
			return out, err
		}
		for k, c := range shards {
			bad, err := Misplaced(ctx, c, tb, len(shards), k)
			if err != nil {
				return out, err
			}
			if bad > 0 {
				out.Diffs = append(out.Diffs, fmt.Sprintf("%s: %d rows on shard %d belong on another shard", rel, bad, k))
			}
		}
		if got != want || gotSum != wantSum {
			out.Diffs = append(out.Diffs, fmt.Sprintf("%s: shards hold %d rows (hash sum %s), source %d (%s)", rel, got, gotSum, want, wantSum))
		}
	}
	return out, nil
}

// sums is the row count and hash sum of rel over the databases conns
// together (the sums of 64-bit hashes overflow int64: numeric, added by
// the server).
func sums(ctx context.Context, conns []*pgx.Conn, rel string) (int64, string, error) {
	var total int64
	sum := "0"
	for _, c := range conns {
		var n int64
		var s string
		if err := c.QueryRow(ctx, fmt.Sprintf(rowSums, rel)).Scan(&n, &s); err != nil {
			return 0, "", fmt.Errorf("row hashes of %s: %w", rel, err)
		}
		if err := c.QueryRow(ctx, `SELECT ($1::numeric + $2::numeric)::text`, sum, s).Scan(&sum); err != nil {
			return 0, "", fmt.Errorf("adding hash sums: %w", err)
		}
		total += n
	}
	return total, sum, nil
}

// Misplaced counts the rows of tb on shard k of n (conn) that PostgreSQL's
// hash partitioning of tb.Key puts on another shard: a temporary table
// partitioned BY HASH on the key's type (created READ WRITE, so also on a
// shard a cutover made read-only) is satisfies_hash_partition's parent.
// A NULL key belongs on shard 0.
func Misplaced(ctx context.Context, c *pgx.Conn, tb Table, n, k int) (int64, error) {
	rel := tb.Name
	if tb.Only {
		rel = "ONLY " + tb.Name
	}
	var typ string
	if err := c.QueryRow(ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2`, tb.Name, tb.Key).Scan(&typ); err != nil {
		return 0, fmt.Errorf("type of %s.%s: %w", tb.Name, tb.Key, err)
	}
	parent := "pg_temp.reshard_cmp_" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, typ)
	if _, err := c.Exec(ctx, fmt.Sprintf(`BEGIN READ WRITE; CREATE TEMP TABLE IF NOT EXISTS %s (k %s) PARTITION BY HASH (k); COMMIT`, parent, typ)); err != nil {
		_, _ = c.Exec(ctx, "ROLLBACK")
		return 0, fmt.Errorf("hash parent for %s: %w", typ, err)
	}
	key := pgx.Identifier{tb.Key}.Sanitize()
	var bad int64
	q := fmt.Sprintf(`SELECT count(*) FROM %s WHERE CASE WHEN %s IS NULL THEN %d <> 0 ELSE NOT satisfies_hash_partition('%s'::regclass, %d, %d, %s) END`,
		rel, key, k, parent, n, k, key)
	if err := c.QueryRow(ctx, q).Scan(&bad); err != nil {
		return 0, fmt.Errorf("placement of %s: %w", rel, err)
	}
	return bad, nil
}

// Catalog lists what a schema sync must reproduce of a database's schema
// schema, one sorted line each: its tables (and kinds), every column (type,
// NOT NULL, default), index (definition) and constraint (definition).
// Two databases with the same schema have equal lists.
func Catalog(ctx context.Context, c *pgx.Conn, schema string) ([]string, error) {
	const q = `
SELECT 'table ' || c.relname || ' ' || c.relkind::text FROM pg_class c
  WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
UNION ALL
SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
    || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
    || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  WHERE c.relnamespace = $1::regnamespace
UNION ALL
SELECT 'constraint ' || r.relname || '.' || co.conname || ' ' || pg_get_constraintdef(co.oid)
  FROM pg_constraint co JOIN pg_class r ON r.oid = co.conrelid
  WHERE r.relnamespace = $1::regnamespace`
	rows, err := c.Query(ctx, q, schema)
	if err != nil {
		return nil, fmt.Errorf("catalog of schema %s: %w", schema, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("catalog of schema %s: %w", schema, err)
	}
	sort.Strings(out)
	return out, nil
}

// DiffLines lists the lines of want missing from got ("-") and the lines
// of got not in want ("+"), each sorted list compared as a multiset.
func DiffLines(want, got []string) []string {
	count := map[string]int{}
	for _, l := range want {
		count[l]++
	}
	for _, l := range got {
		count[l]--
	}
	var out []string
	for l, n := range count {
		for ; n > 0; n-- {
			out = append(out, "- "+l)
		}
		for ; n < 0; n++ {
			out = append(out, "+ "+l)
		}
	}
	sort.Strings(out)
	return out
}
