package verify

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/reshard/reshard/sync/copier"
)

// Key kinds: what a table's rows are chunked and named by.
const (
	keyPrimary  = "primary key"
	keyIdentity = "replica identity index"
	keyUnique   = "unique index"
)

// table is how one table of the publication is compared.
type table struct {
	*copier.Table
	// index is the table's position in the plan.
	index int
	// key lists the columns rows are chunked, ordered and named by: the
	// primary key, else the replica identity index, else a unique index on
	// NOT NULL columns; empty when there is none (compared by checksum
	// over hash buckets, differences counted).
	key     []string
	keyKind string
	// hash is the SQL of a row's 64-bit hash (the row is aliased x):
	// hash_record_extended over the row, with the columns whose types
	// have no hash function hashed by their text form.
	hash string
	// estimate is the rows the source's statistics expect (every source
	// shard of a sharded table); pages those of source shard 0.
	estimate, pages int64
}

// keyText is the SQL of a row's key as text: the value of a one-column
// key, the row literal of a composite one ("(1,abc)"), the row of a table
// without a key.
func (t *table) keyText() string {
	switch len(t.key) {
	case 0:
		return "x::text"
	case 1:
		return "x." + ident(t.key[0]) + "::text"
	}
	return "ROW(" + t.keyList() + ")::text"
}

// keyList is the key columns, qualified by the row alias x.
func (t *table) keyList() string {
	parts := make([]string, len(t.key))
	for i, c := range t.key {
		parts[i] = "x." + ident(c)
	}
	return strings.Join(parts, ", ")
}

// catalogRow is one table's facts as a source shard's catalog has them.
type catalogRow struct {
	estimate, pages      float64
	key, columns, types  []string
	keyPrimary, keyIdent bool
	typeOIDs             []uint32
}

// catalogSQL reads, for the tables named by the parallel arrays $1
// (schemas) and $2 (names), their row and page estimates (of every leaf of
// a partitioned table), their key (see table.key) and their columns with
// their types.
const catalogSQL = `WITH u AS (
	SELECT u.i, c.oid, c.relkind FROM unnest($1::text[], $2::text[]) WITH ORDINALITY u(s, n, i)
	JOIN pg_namespace ns ON ns.nspname = u.s JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = u.n
), leaves AS (
	SELECT u.i, p.relid FROM u CROSS JOIN LATERAL pg_partition_tree(u.oid) p WHERE u.relkind = 'p' AND p.isleaf
	UNION ALL SELECT u.i, u.oid FROM u WHERE u.relkind <> 'p'
), stats AS (
	SELECT l.i, sum(greatest(c.reltuples, 0))::float8 AS tuples, bool_and(c.reltuples >= 0) AS analyzed, sum(c.relpages)::float8 AS pages
	FROM leaves l JOIN pg_class c ON c.oid = l.relid GROUP BY l.i
), key AS (
	SELECT DISTINCT ON (u.i) u.i, ix.indisprimary, ix.indisreplident,
		(SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(ix.indkey) WITH ORDINALITY k(attnum, ord)
			JOIN pg_attribute a ON a.attrelid = u.oid AND a.attnum = k.attnum WHERE k.ord <= ix.indnkeyatts) AS cols
	FROM u JOIN pg_index ix ON ix.indrelid = u.oid
	WHERE ix.indisunique AND ix.indisvalid AND ix.indpred IS NULL AND ix.indexprs IS NULL
	AND NOT EXISTS (SELECT 1 FROM unnest(ix.indkey[0:ix.indnkeyatts - 1]) k(attnum)
		JOIN pg_attribute a ON a.attrelid = u.oid AND a.attnum = k.attnum WHERE NOT a.attnotnull)
	ORDER BY u.i, ix.indisprimary DESC, ix.indisreplident DESC, ix.indexrelid
), cols AS (
	SELECT u.i, array_agg(a.attname::text ORDER BY a.attnum) AS names, array_agg(format_type(a.atttypid, NULL) ORDER BY a.attnum) AS types,
		array_agg(a.atttypid::int8 ORDER BY a.attnum) AS oids
	FROM u JOIN pg_attribute a ON a.attrelid = u.oid AND a.attnum > 0 AND NOT a.attisdropped GROUP BY u.i
)
SELECT u.i, coalesce(stats.tuples, 0), coalesce(stats.analyzed, true), coalesce(stats.pages, 0),
	coalesce(key.cols, '{}'), coalesce(key.indisprimary, false), coalesce(key.indisreplident, false),
	coalesce(cols.names, '{}'), coalesce(cols.types, '{}'), coalesce(cols.oids, '{}')
FROM u LEFT JOIN stats ON stats.i = u.i LEFT JOIN key ON key.i = u.i LEFT JOIN cols ON cols.i = u.i`

// readCatalog reads catalogSQL for tables on one source session. A table
// the catalog does not know is an error.
func readCatalog(ctx context.Context, c *pgx.Conn, tables []*copier.Table) ([]catalogRow, error) {
	schemas, names := make([]string, len(tables)), make([]string, len(tables))
	for i, t := range tables {
		schemas[i], names[i] = t.Schema, t.Name
	}
	rows, err := c.Query(ctx, catalogSQL, schemas, names)
	if err != nil {
		return nil, fmt.Errorf("read the tables' keys and statistics: %w", err)
	}
	defer rows.Close()
	out := make([]catalogRow, len(tables))
	seen := make([]bool, len(tables))
	for rows.Next() {
		var i int64
		var r catalogRow
		var analyzed bool
		var oids []int64
		if err := rows.Scan(&i, &r.estimate, &analyzed, &r.pages, &r.key, &r.keyPrimary, &r.keyIdent, &r.columns, &r.types, &oids); err != nil {
			return nil, err
		}
		if !analyzed && r.estimate == 0 {
			// Never analyzed: about 100 bytes a row.
			r.estimate = r.pages * 8192 / 100
		}
		for _, o := range oids {
			r.typeOIDs = append(r.typeOIDs, uint32(o))
		}
		out[i-1], seen[i-1] = r, true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the tables' keys and statistics: %w", err)
	}
	for i, ok := range seen {
		if !ok {
			return nil, fmt.Errorf("table %s is not in the catalog of the source", tables[i])
		}
	}
	return out, nil
}

// plan describes every table: its key and row hash from source shard 0's
// catalog, its estimates from every source shard's.
func plan(ctx context.Context, sources []*server, tables []*copier.Table) ([]*table, error) {
	rows := make([][]catalogRow, len(sources))
	g, gctx := errgroup.WithContext(ctx)
	for k, s := range sources {
		g.Go(func() error {
			c := <-s.idle
			defer func() { s.idle <- c }()
			var err error
			if rows[k], err = readCatalog(gctx, c, tables); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	hashable, err := probeHashes(ctx, sources[0], rows[0])
	if err != nil {
		return nil, err
	}
	out := make([]*table, len(tables))
	for i, ct := range tables {
		r := rows[0][i]
		t := &table{Table: ct, index: i, key: r.key, pages: int64(r.pages)}
		switch {
		case len(r.key) == 0:
		case r.keyPrimary:
			t.keyKind = keyPrimary
		case r.keyIdent:
			t.keyKind = keyIdentity
		default:
			t.keyKind = keyUnique
		}
		est := r.estimate
		if !ct.Omni {
			for _, other := range rows[1:] {
				est += other[i].estimate
			}
		}
		t.estimate = int64(est)
		t.hash = rowHash(r, hashable)
		out[i] = t
	}
	return out, nil
}

// rowHash is the SQL hash of a row (aliased x) of a table: the hash of the
// whole row when every column's type can be hashed, else of a row of its
// columns with those that cannot taken as text. Integer columns the
// destination widened hash the same (hashint8 agrees with hashint4 and
// hashint2 on every value they share).
func rowHash(r catalogRow, hashable map[uint32]bool) string {
	all := true
	for _, o := range r.typeOIDs {
		all = all && hashable[o]
	}
	if all {
		return "hash_record_extended(x, 0)"
	}
	parts := make([]string, len(r.columns))
	for i, c := range r.columns {
		parts[i] = "x." + ident(c)
		if !hashable[r.typeOIDs[i]] {
			parts[i] += "::text"
		}
	}
	return "hash_record_extended(ROW(" + strings.Join(parts, ", ") + "), 0)"
}

// localTypesSQL finds, of the types $1, those whose hash depends on the
// database rather than the value: enums hash the OIDs of their labels,
// which differ on every database pg_dump restores them into, and the OID
// types (regclass, ...) are OIDs; arrays, domains, composites and ranges
// of them inherit it.
const localTypesSQL = `WITH RECURSIVE t(root, oid) AS (
	SELECT o, o FROM unnest($1::oid[]) o
	UNION
	SELECT t.root, s.x FROM t JOIN pg_type ty ON ty.oid = t.oid CROSS JOIN LATERAL (
		SELECT ty.typelem WHERE ty.typelem <> 0
		UNION ALL SELECT ty.typbasetype WHERE ty.typtype = 'd'
		UNION ALL SELECT a.atttypid FROM pg_attribute a WHERE ty.typtype = 'c' AND a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped
		UNION ALL SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = ty.oid OR r.rngmultitypid = ty.oid) s(x)
)
SELECT t.root::int8 FROM t JOIN pg_type ty ON ty.oid = t.oid
WHERE ty.typtype = 'e' OR ty.typname IN ('oid', 'regclass', 'regtype', 'regproc', 'regprocedure', 'regoper', 'regoperator',
	'regconfig', 'regdictionary', 'regnamespace', 'regrole', 'regcollation', 'aclitem', 'xid', 'xid8', 'cid', 'tid')
GROUP BY t.root`

// probeHashes finds which of the tables' column types can be hashed by
// value on both sides: those with an extended hash function (json, point,
// xml, tsvector have none; an array or composite of them neither: hashing
// a row holding a NULL of the type fails for those) whose hash does not
// depend on the database (localTypesSQL). The others are hashed by their
// text.
func probeHashes(ctx context.Context, s *server, rows []catalogRow) (map[uint32]bool, error) {
	names := map[uint32]string{}
	for _, r := range rows {
		for i, o := range r.typeOIDs {
			names[o] = r.types[i]
		}
	}
	c := <-s.idle
	defer func() { s.idle <- c }()
	oids := make([]int64, 0, len(names))
	for o := range names {
		oids = append(oids, int64(o))
	}
	local := map[uint32]bool{}
	lrows, err := c.Query(ctx, localTypesSQL, oids)
	if err != nil {
		return nil, fmt.Errorf("%s: types hashed by their text: %w", s, err)
	}
	for lrows.Next() {
		var o int64
		if err := lrows.Scan(&o); err != nil {
			lrows.Close()
			return nil, err
		}
		local[uint32(o)] = true
	}
	lrows.Close()
	if err := lrows.Err(); err != nil {
		return nil, fmt.Errorf("%s: types hashed by their text: %w", s, err)
	}
	out := map[uint32]bool{}
	for o, name := range names {
		if local[o] {
			continue
		}
		_, err := c.PgConn().Exec(ctx, "SELECT hash_record_extended(ROW(NULL::"+name+"), 0)").ReadAll()
		if err != nil && (c.IsClosed() || ctx.Err() != nil) {
			return nil, fmt.Errorf("%s: %w", s, err)
		}
		out[o] = err == nil
	}
	return out, nil
}
