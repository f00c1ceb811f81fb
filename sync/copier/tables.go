// Package copier is the copy stage of resharding: it copies every table of
// a publication from every source shard into the destination shards at one
// consistent snapshot per source shard (the snapshot a logical replication
// slot exports, so streaming starts exactly where the copy ends), routing
// each row to its shard in flight, in parallel, split into ranges, and
// resumable after a crash.
package copier

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/sync/job"
)

// Column is one copied column.
type Column struct {
	Name string
	// Type is the source type name (pg_type.typname), DstType the
	// destination's.
	Type, DstType string
	// Base is Type's base type when Type is a domain (through nested
	// domains), else Type.
	Base string
}

// baseType is the column's Base, or its Type when Base is not known; ""
// when neither is (a column routed by name only).
func (c Column) baseType() string {
	if c.Base != "" {
		return c.Base
	}
	return c.Type
}

// Table is one table of the publication and how to copy it.
type Table struct {
	Schema, Name string
	// Columns are the copied columns (generated columns excluded), in
	// source order.
	Columns []Column
	// PK lists the primary-key columns; PKType is the type of a one-column
	// key ("" otherwise).
	PK     []string
	PKType string
	// HasIdentity is true when the table has a primary key or a replica
	// identity usable for UPDATE and DELETE.
	HasIdentity bool
	// Omni tables are copied whole to every shard.
	Omni bool
	// ShardColumn is the sharding column (sharded tables).
	ShardColumn string
	// Router routes rows to destination shards.
	Router *sharding.Router
	// Mapped tells that list or range mappings place some keys (placement
	// is then not PostgreSQL's hash alone).
	Mapped bool
	// Widen lists positions (in Columns) of int2/int4 columns the
	// destination holds as int8.
	Widen []int
	// SizeBytes is the source's pg_relation_size (shard 0), for estimates:
	// of every leaf together for a partitioned table.
	SizeBytes int64
	// Partitioned tells that the table is a partitioned table (published
	// through its root, publish_via_partition_root): it is read and written
	// as a whole tree, never FROM ONLY (which holds no rows).
	Partitioned bool
	// Ancestors are the partitioned tables above a partition, nearest
	// first (schema.name): a [[sharded_tables]] rule naming one of them
	// applies to the partition too.
	Ancestors []string
	// ExtensionRows, for an extension's configuration table whose rows
	// are partly the extension's own (pg_extension_config_dump with a
	// condition, as PostGIS's spatial_ref_sys), is that condition: the
	// rows that are the database's own data, which pg_dump carries. CREATE
	// EXTENSION in SCHEMA_SYNC PRE fills the shards with the extension's
	// rows, so the copy reads, checks empty and clears only the rows
	// matching it. "" for every other table.
	ExtensionRows string
	// Extension and ExtensionVersion name the extension of such a table
	// and its version on the source: the shards must have that version
	// (its rows there are the ones it ships, which the condition leaves
	// out).
	Extension, ExtensionVersion string
	// atSnapshot: the table was described at the copy's snapshot (a copy
	// whose schema is the snapshot's, see Slots). Schema, Name and Columns
	// are then the names at the snapshot (the shards'), and each unit
	// reads the rows through the names the source has when it runs (see
	// snapshotSource), so DDL run on the source since does not stop it.
	atSnapshot bool
	// source is the table's quoted name on the source when it differs
	// from the shards' (renamed since the snapshot).
	source string
}

// From is what the copy and VERIFY read for the table: ONLY the table
// (not inheritance children, which are published and copied on their
// own), or the whole tree of a partitioned table.
func (t *Table) From() string {
	if t.Partitioned {
		return t.Qualified()
	}
	return "ONLY " + t.Qualified()
}

// Qualified is the table's quoted schema.name.
func (t *Table) Qualified() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// String is schema.name, unquoted, for messages.
func (t *Table) String() string { return t.Schema + "." + t.Name }

func (t *Table) columnList() string {
	parts := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		parts[i] = pgx.Identifier{c.Name}.Sanitize()
	}
	return strings.Join(parts, ", ")
}

// copyOutSQL is the source side of a copy of the table's rows matching
// where (" WHERE ..." or "").
func (t *Table) copyOutSQL(where string, format sharding.Format) string {
	return fmt.Sprintf("COPY (SELECT %s FROM %s%s) TO STDOUT (FORMAT %s)", t.columnList(), t.sourceFrom(), where, format)
}

// sourceName is the table's quoted name on the source.
func (t *Table) sourceName() string {
	if t.source != "" {
		return t.source
	}
	return t.Qualified()
}

// sourceFrom is From with the table's name on the source.
func (t *Table) sourceFrom() string {
	if t.Partitioned {
		return t.sourceName()
	}
	return "ONLY " + t.sourceName()
}

// publicationTables lists the publication's tables on a source node: leaf
// partitions, or roots when the publication publishes via the root, never
// both.
func publicationTables(ctx context.Context, conn *pgx.Conn, publication string) ([][2]string, error) {
	// reshard's own tables (the captured DDL) are not application data.
	rows, err := conn.Query(ctx, `SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname <> 'reshard' ORDER BY 1, 2`, publication)
	if err != nil {
		return nil, fmt.Errorf("tables of publication %q: %w", publication, err)
	}
	defer rows.Close()
	var out [][2]string
	for rows.Next() {
		var s, n string
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		out = append(out, [2]string{s, n})
	}
	return out, rows.Err()
}

type columnInfo struct {
	name, typ, base string
	generated       bool
}

func tableColumns(ctx context.Context, conn *pgx.Conn, qualified string) ([]columnInfo, error) {
	rows, err := conn.Query(ctx, `SELECT a.attname, t.typname, a.attgenerated <> '',
			(WITH RECURSIVE d(oid) AS (SELECT a.atttypid
				UNION ALL SELECT dt.typbasetype FROM d JOIN pg_type dt ON dt.oid = d.oid WHERE dt.typtype = 'd')
			SELECT bt.typname FROM d JOIN pg_type bt ON bt.oid = d.oid WHERE bt.typtype <> 'd')
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, qualified)
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", qualified, err)
	}
	defer rows.Close()
	var out []columnInfo
	for rows.Next() {
		var c columnInfo
		if err := rows.Scan(&c.name, &c.typ, &c.generated, &c.base); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// BaseTypes returns the base type (pg_type.typname, a domain's base type
// for a domain) of each column of the table qualified, by column name, as
// the database behind conn has them.
func BaseTypes(ctx context.Context, conn *pgx.Conn, qualified string) (map[string]string, error) {
	cols, err := tableColumns(ctx, conn, qualified)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(cols))
	for _, c := range cols {
		out[c.name] = c.base
	}
	return out, nil
}

// ancestorsSQL lists the partitioned tables above the relation $1
// (schema.name, nearest first).
const ancestorsSQL = `ARRAY(SELECT an.nspname || '.' || ar.relname FROM pg_partition_ancestors(c.oid) WITH ORDINALITY a(relid, ord)
			JOIN pg_class ar ON ar.oid = a.relid JOIN pg_namespace an ON an.oid = ar.relnamespace WHERE a.relid <> c.oid ORDER BY a.ord)`

// Ancestors returns the partitioned tables above a partition (schema.name,
// nearest first), as the database behind conn has them; none for a table
// that is no partition.
func Ancestors(ctx context.Context, conn *pgx.Conn, qualified string) ([]string, error) {
	var out []string
	if err := conn.QueryRow(ctx, `SELECT `+ancestorsSQL+` FROM pg_class c WHERE c.oid = to_regclass($1)`, qualified).Scan(&out); err != nil {
		return nil, fmt.Errorf("partitions above %s: %w", qualified, err)
	}
	return out, nil
}

// treeSize is the SQL size of the table c (pg_class): of its leaves for a
// partitioned table.
const treeSize = `CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pg_relation_size(p.relid)), 0) FROM pg_partition_tree(c.oid) p WHERE p.isleaf)::bigint
		ELSE pg_relation_size(c.oid) END`

// describeTable reads a source table's copy-relevant facts.
func describeTable(ctx context.Context, conn *pgx.Conn, schema, name string) (*Table, error) {
	t := &Table{Schema: schema, Name: name}
	q := t.Qualified()
	cols, err := tableColumns(ctx, conn, q)
	if err != nil {
		return nil, err
	}
	for _, c := range cols {
		if !c.generated {
			t.Columns = append(t.Columns, Column{Name: c.name, Type: c.typ, Base: c.base})
		}
	}
	rows, err := conn.Query(ctx, `SELECT a.attname, ty.typname
		FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		JOIN pg_type ty ON ty.oid = a.atttypid
		WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY k.ord`, q)
	if err != nil {
		return nil, fmt.Errorf("primary key of %s: %w", t, err)
	}
	var pkTypes []string
	for rows.Next() {
		var c, ty string
		if err := rows.Scan(&c, &ty); err != nil {
			rows.Close()
			return nil, err
		}
		t.PK = append(t.PK, c)
		pkTypes = append(pkTypes, ty)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(t.PK) == 1 {
		t.PKType = pkTypes[0]
	}
	var replident string
	var identIndex bool
	err = conn.QueryRow(ctx, `SELECT c.relreplident::text, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident),
		c.relkind = 'p', `+treeSize+`, `+ancestorsSQL+`, coalesce(ext.cond, ''), coalesce(ext.extname, ''), coalesce(ext.extversion, '')
		FROM pg_class c LEFT JOIN LATERAL (`+extensionRowsSQL+`) ext ON true WHERE c.oid = to_regclass($1)`, q).
		Scan(&replident, &identIndex, &t.Partitioned, &t.SizeBytes, &t.Ancestors, &t.ExtensionRows, &t.Extension, &t.ExtensionVersion)
	if err != nil {
		return nil, fmt.Errorf("describe %s: %w", t, err)
	}
	t.HasIdentity = len(t.PK) > 0 && replident == "d" || replident == "f" || (replident == "i" && identIndex)
	return t, nil
}

// extensionRowsSQL reads, for the table c, the condition an extension
// registered for it as a configuration table (pg_extension.extcondition,
// "WHERE ..."), without its WHERE, and the extension's name and version:
// no row when the table is none or registered without one (all its rows
// are then the database's own, and the table is copied whole).
const extensionRowsSQL = `SELECT regexp_replace(x.cond, '^\s*WHERE\M\s*', '', 'i') AS cond, e.extname::text AS extname, e.extversion
		FROM pg_extension e CROSS JOIN LATERAL unnest(e.extconfig, e.extcondition) x(oid, cond)
		WHERE x.oid = c.oid AND btrim(x.cond) <> '' LIMIT 1`

// onlyOwnRows narrows a predicate on the table's rows ("" for all) to the
// rows the copy handles: for an extension's configuration table, those
// matching its ExtensionRows.
func (t *Table) onlyOwnRows(predicate string) string {
	// (The condition is the extension's text: it may end in a comment.)
	switch {
	case t.ExtensionRows == "":
		return predicate
	case predicate == "":
		return "(" + t.ExtensionRows + "\n)"
	default:
		return "(" + t.ExtensionRows + "\n) AND " + predicate
	}
}

// EmptySQL empties the table on a destination shard, of the rows the copy
// handles (onlyOwnRows: an extension's own rows stay).
func (t *Table) EmptySQL() string {
	if t.ExtensionRows != "" {
		return "DELETE FROM " + t.From() + " WHERE " + t.onlyOwnRows("")
	}
	return "TRUNCATE " + t.From()
}

// route decides how the table is sharded on the destination cluster: the
// first [[sharded_tables]] entry whose name/schema match (or are omitted)
// and whose column the table has; otherwise it is an omni table.
func route(t *Table, dst *catalog.Cluster) error {
	shards := len(dst.Shards)
	// A partition follows the rules that name it or any table above it.
	names := [][2]string{{t.Schema, t.Name}}
	for _, a := range t.Ancestors {
		if i := strings.IndexByte(a, '.'); i > 0 {
			names = append(names, [2]string{a[:i], a[i+1:]})
		}
	}
	matches := func(schema, name string) bool {
		for _, n := range names {
			if (name == "" || name == n[1]) && (schema == "" || schema == n[0]) {
				return true
			}
		}
		return false
	}
	for _, o := range dst.OmniTables {
		for _, n := range names {
			if o == n[1] || o == n[0]+"."+n[1] {
				t.Omni = true
			}
		}
	}
	if !t.Omni {
		for _, st := range dst.ShardedTables {
			if !matches(st.Schema, st.Name) {
				continue
			}
			pos := -1
			for i, c := range t.Columns {
				if c.Name == st.Column {
					pos = i
				}
			}
			if pos < 0 {
				if st.Name != "" {
					return fmt.Errorf("table %s is configured as sharded by %q, which it does not have", t, st.Column)
				}
				continue
			}
			typ, err := sharding.ParseDataType(st.DataType)
			if err != nil {
				return err
			}
			if err := keyType(t, t.Columns[pos], typ); err != nil {
				return err
			}
			var mappings []sharding.Mapping
			for _, m := range st.Mapping {
				sm := sharding.Mapping{Shard: m.Shard}
				for _, v := range m.Values {
					val, err := sharding.ValueOf(v)
					if err != nil {
						return fmt.Errorf("table %s mapping value %v: %w", t, v, err)
					}
					sm.Values = append(sm.Values, val)
				}
				if m.Start != nil {
					if sm.Start, err = sharding.ValueOf(m.Start); err != nil {
						return err
					}
				}
				if m.End != nil {
					if sm.End, err = sharding.ValueOf(m.End); err != nil {
						return err
					}
				}
				mappings = append(mappings, sm)
			}
			padded := t.Columns[pos].baseType() == "bpchar"
			r, err := sharding.NewRouter(sharding.Table{Column: pos, Type: typ, Shards: shards, Mappings: mappings, BlankPadded: padded})
			if err != nil {
				return fmt.Errorf("table %s: %w", t, err)
			}
			t.Router, t.ShardColumn, t.Mapped = r, st.Column, len(mappings) > 0
			return nil
		}
	}
	t.Omni = true
	r, err := sharding.NewRouter(sharding.Table{Omni: true, Shards: shards})
	if err != nil {
		return err
	}
	t.Router = r
	return nil
}

// RouteColumns returns the router of a table given its (non-generated)
// column names in source order, as the destination cluster's sharding rules
// place it, and the sharding column's position (-1 for an omni table). The
// stream uses it for the relations pgoutput describes. ancestors are the
// partitioned tables above a partition (schema.name, see Ancestors): a rule
// naming one of them applies to the partition. bases, when known, are the
// columns' base types by name (BaseTypes): a character(n) key hashes
// without its trailing blanks, as the copy hashes it.
func RouteColumns(schema, name string, ancestors, columns []string, bases map[string]string, dst *catalog.Cluster) (*sharding.Router, int, error) {
	t := &Table{Schema: schema, Name: name, Ancestors: ancestors}
	for _, c := range columns {
		t.Columns = append(t.Columns, Column{Name: c, Base: bases[c]})
	}
	if err := route(t, dst); err != nil {
		return nil, -1, err
	}
	if t.Omni {
		return t.Router, -1, nil
	}
	return t.Router, t.Router.Column(), nil
}

// Tables describes the publication's tables (as the source shard behind
// conn has them) and routes each by the destination's sharding rules.
func Tables(ctx context.Context, conn *pgx.Conn, publication string, dst *catalog.Cluster) ([]*Table, error) {
	out, err := publishedTables(ctx, conn, publication)
	if err != nil {
		return nil, err
	}
	for _, t := range out {
		if err := route(t, dst); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// publishedTables describes the publication's tables, unrouted.
func publishedTables(ctx context.Context, conn *pgx.Conn, publication string) ([]*Table, error) {
	names, err := publicationTables(ctx, conn, publication)
	if err != nil {
		return nil, err
	}
	var out []*Table
	for _, n := range names {
		t, err := describeTable(ctx, conn, n[0], n[1])
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// Covered returns the relations whose rows the publication carries:
// each published table with every table of its partition tree (a root
// published through itself covers its partitions; published partitions
// cover their parents), as schema.name.
func Covered(ctx context.Context, conn *pgx.Conn, publication string) (map[string]bool, error) {
	rows, err := conn.Query(ctx, `SELECT DISTINCT n.nspname || '.' || c.relname
		FROM pg_publication_tables pt
		JOIN pg_class p ON p.oid = to_regclass(quote_ident(pt.schemaname) || '.' || quote_ident(pt.tablename)),
		LATERAL (SELECT p.oid UNION SELECT relid FROM pg_partition_tree(p.oid) UNION SELECT relid FROM pg_partition_ancestors(p.oid)) t(oid)
		JOIN pg_class c ON c.oid = t.oid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE pt.pubname = $1`, publication)
	if err != nil {
		return nil, fmt.Errorf("tables of publication %q: %w", publication, err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out[n] = true
	}
	return out, rows.Err()
}

// Describe reads a source table's copy-relevant facts and routes it by the
// destination's sharding rules.
func Describe(ctx context.Context, conn *pgx.Conn, schema, name string, dst *catalog.Cluster) (*Table, error) {
	t, err := describeTable(ctx, conn, schema, name)
	if err != nil {
		return nil, err
	}
	if err := route(t, dst); err != nil {
		return nil, err
	}
	return t, nil
}

// keyType checks that the sharding column col of t can be hashed as
// data_type typ: its values hashed as another type would land on shards
// where neither PostgreSQL's hash partitioning nor a query router looks for
// them (and a varchar read as an integer fails the copy mid-way). SQLSTATE
// 42804, datatype_mismatch.
func keyType(t *Table, col Column, typ sharding.DataType) error {
	base := col.baseType()
	if base == "" || typ.Accepts(base) {
		// (A table routed without its column types, as the DDL stage
		// routes one: the copy's preflight checked its columns.)
		return nil
	}
	of := col.Type
	if of == "" {
		of = base
	}
	if base != of {
		of = fmt.Sprintf("%s (a domain over %s)", col.Type, base)
	}
	dflt := ""
	if typ == sharding.BigInt {
		dflt = ", the default when data_type is left out"
	}
	if want, ok := sharding.ForColumn(base); ok {
		return job.Errorf("42804", "table %s: its sharding column %s is of type %s, but its [[sharded_tables]] entry says data_type = %q%s: set data_type = %q there",
			t, col.Name, of, typ, dflt, want)
	}
	return job.Errorf("42804", "table %s: its sharding column %s is of type %s, which cannot be a sharding key (data_type %q%s; supported column types: bigint, integer, smallint, varchar, text, character(n), uuid)",
		t, col.Name, of, typ, dflt)
}
