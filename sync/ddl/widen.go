package ddl

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Schema sync makes generated integer keys bigint on the shards (see
// schema.Widening): a primary-key column that takes its values from a
// sequence, and every column whose foreign key references a widened
// column, transitively. A captured statement gets the same rule, decided
// against what the shards already hold: a column the shards hold as bigint
// where the source has an integer is a widened one.

// narrow tells the integer types schema sync widens to bigint.
func narrow(typ string) bool { return typ == "int4" || typ == "int2" }

// typeNameOf returns a column type's last name (int4, serial, text, ...).
func typeNameOf(tn *pg_query.TypeName) string {
	if tn == nil || len(tn.Names) == 0 {
		return ""
	}
	return tn.Names[len(tn.Names)-1].GetString_().GetSval()
}

func isSerial(typ string) bool {
	switch typ {
	case "serial", "serial4", "smallserial", "serial2":
		return true
	}
	return false
}

// edit replaces the integer type name at an offset of a statement.
type edit struct {
	loc int
	to  string
}

// applyEdits rewrites sql with each edit's type name replaced (the word
// at the offset, when it is an integer or serial type name).
func applyEdits(sql string, edits []edit) string {
	sort.Slice(edits, func(a, b int) bool { return edits[a].loc > edits[b].loc })
	for _, e := range edits {
		if e.loc < 0 || e.loc >= len(sql) {
			continue
		}
		end := e.loc
		for end < len(sql) && (sql[end] == '_' || sql[end] >= 'a' && sql[end] <= 'z' || sql[end] >= 'A' && sql[end] <= 'Z' || sql[end] >= '0' && sql[end] <= '9') {
			end++
		}
		switch strings.ToLower(sql[e.loc:end]) {
		case "integer", "int", "int4", "smallint", "int2", "serial", "serial4", "smallserial", "serial2":
			sql = sql[:e.loc] + e.to + sql[end:]
		}
	}
	return sql
}

// newColumn is a column a statement defines.
type newColumn struct {
	def *pg_query.ColumnDef
	// pk: part of the primary key; gen: takes its values from a sequence
	// (serial, identity, DEFAULT nextval), seq naming it for a default.
	pk, gen bool
	seq     string
	refs    []fkRef
	// widenable: an integer or serial type (not an array).
	widenable bool
}

// fkRef is what a foreign-key column references: a table and its column,
// or (col empty) the column at position in the table's primary key.
type fkRef struct {
	table    *pg_query.RangeVar
	col      string
	position int
}

// defineColumn reads a column definition.
func defineColumn(cd *pg_query.ColumnDef) *newColumn {
	nc := &newColumn{def: cd}
	typ := typeNameOf(cd.TypeName)
	nc.widenable = cd.TypeName != nil && len(cd.TypeName.ArrayBounds) == 0 && (narrow(typ) || isSerial(typ))
	nc.gen = isSerial(typ)
	if cd.RawDefault != nil {
		if seq, ok := nextvalOf(cd.RawDefault); ok {
			nc.gen, nc.seq = true, seq
		}
	}
	for _, cn := range cd.Constraints {
		con := cn.GetConstraint()
		if con == nil {
			continue
		}
		switch con.Contype {
		case pg_query.ConstrType_CONSTR_PRIMARY:
			nc.pk = true
		case pg_query.ConstrType_CONSTR_IDENTITY:
			nc.gen = true
		case pg_query.ConstrType_CONSTR_DEFAULT:
			if seq, ok := nextvalOf(con.RawExpr); ok {
				nc.gen, nc.seq = true, seq
			}
		case pg_query.ConstrType_CONSTR_FOREIGN:
			r := fkRef{table: con.Pktable}
			if ref := strs(con.PkAttrs); len(ref) > 0 {
				r.col = ref[0]
			}
			nc.refs = append(nc.refs, r)
		}
	}
	return nc
}

// tableFK adds a table constraint's foreign key to its columns.
func tableFK(con *pg_query.Constraint, byName map[string]*newColumn) {
	ref := strs(con.PkAttrs)
	for i, n := range strs(con.FkAttrs) {
		nc := byName[n]
		if nc == nil {
			continue
		}
		r := fkRef{table: con.Pktable, position: i}
		if i < len(ref) {
			r.col = ref[i]
		}
		nc.refs = append(nc.refs, r)
	}
}

// widenTable rewrites a CREATE TABLE with its generated keys (and the
// columns referencing widened keys) made bigint, and returns the extra
// steps that go with it (sequences the shards hold as integer made
// bigint).
func (p *planner) widenTable(cs *pg_query.CreateStmt) (string, []Step, error) {
	var cols []*newColumn
	byName := map[string]*newColumn{}
	for _, elt := range cs.TableElts {
		if cd := elt.GetColumnDef(); cd != nil {
			nc := defineColumn(cd)
			cols = append(cols, nc)
			byName[cd.Colname] = nc
		}
	}
	var pkOrder []string
	for _, nc := range cols {
		if nc.pk {
			pkOrder = append(pkOrder, nc.def.Colname)
		}
	}
	for _, elt := range cs.TableElts {
		con := elt.GetConstraint()
		if con == nil {
			continue
		}
		switch con.Contype {
		case pg_query.ConstrType_CONSTR_PRIMARY:
			pkOrder = strs(con.Keys)
			for _, k := range pkOrder {
				if nc := byName[k]; nc != nil {
					nc.pk = true
				}
			}
		case pg_query.ConstrType_CONSTR_FOREIGN:
			tableFK(con, byName)
		}
	}
	self := cs.Relation
	widened := map[string]bool{}
	for _, nc := range cols {
		if nc.widenable && nc.pk && nc.gen {
			widened[nc.def.Colname] = true
		}
	}
	// Foreign keys to this table's widened columns (again and again: a
	// chain inside the table), or to columns the shards hold widened.
	for changed := true; changed; {
		changed = false
		for _, nc := range cols {
			if !nc.widenable || widened[nc.def.Colname] {
				continue
			}
			for _, r := range nc.refs {
				var w bool
				if sameRelation(r.table, self) {
					col := r.col
					if col == "" && r.position < len(pkOrder) {
						col = pkOrder[r.position]
					}
					w = widened[col]
				} else {
					var err error
					if w, err = p.widenedOnShards(r); err != nil {
						return "", nil, err
					}
				}
				if w {
					widened[nc.def.Colname] = true
					changed = true
					break
				}
			}
		}
	}
	sql, extra, err := p.widenDefs(cols, widened)
	return sql, extra, err
}

// widenDefs rewrites the statement's widened column definitions.
func (p *planner) widenDefs(cols []*newColumn, widened map[string]bool) (string, []Step, error) {
	st := p.a.Statement
	var edits []edit
	var extra []Step
	for _, nc := range cols {
		if !widened[nc.def.Colname] {
			continue
		}
		to := "bigint"
		if isSerial(typeNameOf(nc.def.TypeName)) {
			to = "bigserial"
		}
		edits = append(edits, edit{loc: int(nc.def.TypeName.Location) - st.Offset, to: to})
		if nc.seq != "" {
			s, err := p.narrowSequence(nc.seq)
			if err != nil {
				return "", nil, err
			}
			if s != "" {
				extra = append(extra, Step{SQL: "ALTER SEQUENCE " + s + " AS bigint", Kind: "sequence widened"})
			}
		}
	}
	return applyEdits(st.SQL, edits), extra, nil
}

// sameRelation tells whether a reference names the table being created.
func sameRelation(a, b *pg_query.RangeVar) bool {
	return a != nil && b != nil && a.Relname == b.Relname && (a.Schemaname == "" || b.Schemaname == "" || a.Schemaname == b.Schemaname)
}

// widenedOnShards tells whether a foreign key references a column the
// shards hold as bigint where the source holds an integer (without a
// source connection: bigint on the shards).
func (p *planner) widenedOnShards(r fkRef) (bool, error) {
	rel, err := p.lookup(r.table)
	if err != nil || rel.kind == "" {
		return false, err
	}
	col := r.col
	if col == "" {
		pk, err := primaryKey(p, p.dst, rel.qualified())
		if err != nil {
			return false, err
		}
		if r.position >= len(pk) {
			return false, nil
		}
		col = pk[r.position]
	}
	c := rel.col(col)
	if c == nil || c.typ != "int8" {
		return false, nil
	}
	if p.src == nil {
		return true, nil
	}
	srcRel, err := p.lookupName(p.src, rel.qualified())
	if err != nil || srcRel.kind == "" {
		return true, err
	}
	sc := srcRel.col(col)
	return sc == nil || narrow(sc.typ), nil
}

// primaryKey lists a table's primary-key columns in key order.
func primaryKey(p *planner, conn *pgx.Conn, name string) ([]string, error) {
	rows, err := conn.Query(p.ctx, `SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY k.ord`, name)
	if err != nil {
		return nil, fmt.Errorf("primary key of %s: %w", name, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func strs(nodes []*pg_query.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.GetString_().GetSval())
	}
	return out
}

// nextvalOf returns the sequence of a nextval('name') default.
func nextvalOf(expr *pg_query.Node) (string, bool) {
	fc := expr.GetFuncCall()
	if fc == nil || len(fc.Args) != 1 {
		return "", false
	}
	fn := strs(fc.Funcname)
	if len(fn) == 0 || fn[len(fn)-1] != "nextval" {
		return "", false
	}
	arg := fc.Args[0]
	if tc := arg.GetTypeCast(); tc != nil {
		arg = tc.Arg
	}
	c := arg.GetAConst()
	if c == nil || c.GetSval() == nil {
		return "", false
	}
	return c.GetSval().Sval, true
}

// narrowSequence returns the quoted name of a sequence the shards hold as
// an integer sequence, or "" when it is not one (or not there).
func (p *planner) narrowSequence(name string) (string, error) {
	var typ, schemaName, seq string
	err := p.dst.QueryRow(p.ctx, `SELECT s.seqtypid::regtype::text, n.nspname, c.relname FROM pg_sequence s
		JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE s.seqrelid = to_regclass($1)`, name).Scan(&typ, &schemaName, &seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("sequence %s: %w", name, err)
	}
	if typ != "integer" && typ != "smallint" {
		return "", nil
	}
	return pgx.Identifier{schemaName, seq}.Sanitize(), nil
}
