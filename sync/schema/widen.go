package schema

import (
	"sort"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v5"
)

// qname is a schema-qualified relation name.
type qname struct{ schema, name string }

func (q qname) String() string { return q.schema + "." + q.name }

// colKey is one column of one table.
type colKey struct {
	table qname
	col   string
}

func (c colKey) String() string { return c.table.String() + "." + c.col }

// typeRef is where a column's (or sequence's) type is written in a statement.
type typeRef struct {
	stmt int    // statement index in the dump
	loc  int    // byte offset of the type name in the statement
	typ  string // int2, int4, int8, ...
}

type foreignKey struct {
	table   qname
	cols    []string
	ref     qname
	refCols []string // empty: the referenced table's primary key
}

// schemaInfo is what the dump says about tables, keys and sequences: the
// facts needed to widen integer keys and to classify statements.
type schemaInfo struct {
	columns     map[colKey]typeRef
	tableCols   map[qname][]string
	partitioned map[qname]bool
	parent      map[qname]qname // partition -> partitioned table
	pks         map[qname][]string
	pkIndexes   map[qname]bool // primary-key index names (schema-qualified)
	fks         []foreignKey
	seqOwner    map[qname]colKey
	seqType     map[qname]typeRef
}

func analyze(stmts []parsed) *schemaInfo {
	info := &schemaInfo{
		columns:     map[colKey]typeRef{},
		tableCols:   map[qname][]string{},
		partitioned: map[qname]bool{},
		parent:      map[qname]qname{},
		pks:         map[qname][]string{},
		pkIndexes:   map[qname]bool{},
		seqOwner:    map[qname]colKey{},
		seqType:     map[qname]typeRef{},
	}
	for i, ps := range stmts {
		switch s := ps.node.Node.(type) {
		case *pg_query.Node_CreateStmt:
			cs := s.CreateStmt
			t := qnameOf(cs.Relation)
			if cs.Partspec != nil {
				info.partitioned[t] = true
			}
			if cs.Partbound != nil && len(cs.InhRelations) == 1 {
				if rv := cs.InhRelations[0].GetRangeVar(); rv != nil {
					info.parent[t] = qnameOf(rv)
				}
			}
			for _, elt := range cs.TableElts {
				if cd := elt.GetColumnDef(); cd != nil {
					info.tableCols[t] = append(info.tableCols[t], cd.Colname)
					if tn := cd.TypeName; tn != nil && len(tn.ArrayBounds) == 0 {
						info.columns[colKey{t, cd.Colname}] = typeRef{stmt: i, loc: int(tn.Location) - ps.offset, typ: typeNameOf(tn)}
					}
					for _, c := range cd.Constraints {
						if con := c.GetConstraint(); con != nil {
							info.addConstraint(t, con, []string{cd.Colname})
						}
					}
				}
				if con := elt.GetConstraint(); con != nil {
					info.addConstraint(t, con, nil)
				}
			}
		case *pg_query.Node_AlterTableStmt:
			at := s.AlterTableStmt
			t := qnameOf(at.Relation)
			for _, c := range at.Cmds {
				cmd := c.GetAlterTableCmd()
				if cmd == nil {
					continue
				}
				switch cmd.Subtype {
				case pg_query.AlterTableType_AT_AddConstraint:
					if con := cmd.GetDef().GetConstraint(); con != nil && at.Objtype == pg_query.ObjectType_OBJECT_TABLE {
						info.addConstraint(t, con, nil)
					}
				case pg_query.AlterTableType_AT_AttachPartition:
					if at.Objtype == pg_query.ObjectType_OBJECT_TABLE {
						if child := cmd.GetDef().GetPartitionCmd().GetName(); child != nil {
							info.parent[qnameOf(child)] = t
						}
					}
				}
			}
		case *pg_query.Node_CreateSeqStmt:
			seq := qnameOf(s.CreateSeqStmt.Sequence)
			for _, o := range s.CreateSeqStmt.Options {
				if de := o.GetDefElem(); de != nil && de.Defname == "as" {
					if tn := de.GetArg().GetTypeName(); tn != nil {
						info.seqType[seq] = typeRef{stmt: i, loc: int(tn.Location) - ps.offset, typ: typeNameOf(tn)}
					}
				}
			}
		case *pg_query.Node_AlterSeqStmt:
			seq := qnameOf(s.AlterSeqStmt.Sequence)
			for _, o := range s.AlterSeqStmt.Options {
				de := o.GetDefElem()
				if de == nil || de.Defname != "owned_by" {
					continue
				}
				var names []string
				for _, n := range de.GetArg().GetList().GetItems() {
					names = append(names, n.GetString_().GetSval())
				}
				switch len(names) {
				case 2:
					info.seqOwner[seq] = colKey{qname{"public", names[0]}, names[1]}
				case 3:
					info.seqOwner[seq] = colKey{qname{names[0], names[1]}, names[2]}
				}
			}
		}
	}
	return info
}

func (info *schemaInfo) addConstraint(t qname, con *pg_query.Constraint, colDefault []string) {
	keys := func(nodes []*pg_query.Node) []string {
		var out []string
		for _, n := range nodes {
			out = append(out, n.GetString_().GetSval())
		}
		return out
	}
	switch con.Contype {
	case pg_query.ConstrType_CONSTR_PRIMARY:
		cols := keys(con.Keys)
		if len(cols) == 0 {
			cols = colDefault
		}
		info.pks[t] = cols
		name := con.Conname
		if name == "" {
			name = t.name + "_pkey"
		}
		info.pkIndexes[qname{t.schema, name}] = true
	case pg_query.ConstrType_CONSTR_FOREIGN:
		cols := keys(con.FkAttrs)
		if len(cols) == 0 {
			cols = colDefault
		}
		info.fks = append(info.fks, foreignKey{table: t, cols: cols, ref: qnameOf(con.Pktable), refCols: keys(con.PkAttrs)})
	}
}

func qnameOf(rv *pg_query.RangeVar) qname {
	s, n := relName(rv)
	return qname{s, n}
}

func typeNameOf(tn *pg_query.TypeName) string {
	var parts []string
	for _, n := range tn.Names {
		parts = append(parts, n.GetString_().GetSval())
	}
	if len(parts) == 2 && parts[0] == "pg_catalog" {
		return parts[1]
	}
	return strings.Join(parts, ".")
}

func isNarrowInt(typ string) bool { return typ == "int4" || typ == "int2" }

// widenedColumns is the set of integer columns that become bigint: every
// int2/int4 primary-key column, every foreign-key column that references
// one, and the same columns of every partition of a widened table, until
// nothing more changes.
func (info *schemaInfo) widenedColumns() map[colKey]bool {
	w := map[colKey]bool{}
	add := func(k colKey) bool {
		if w[k] {
			return false
		}
		if ref, ok := info.columns[k]; ok && isNarrowInt(ref.typ) {
			w[k] = true
			return true
		}
		return false
	}
	for t, cols := range info.pks {
		for _, c := range cols {
			add(colKey{t, c})
		}
	}
	for changed := true; changed; {
		changed = false
		for _, fk := range info.fks {
			refCols := fk.refCols
			if len(refCols) == 0 {
				refCols = info.pks[fk.ref]
			}
			for i, c := range fk.cols {
				if i < len(refCols) && w[colKey{fk.ref, refCols[i]}] && add(colKey{fk.table, c}) {
					changed = true
				}
			}
		}
		for child, parent := range info.parent {
			for _, c := range info.tableCols[child] {
				if w[colKey{parent, c}] && add(colKey{child, c}) {
					changed = true
				}
			}
		}
	}
	return w
}

// typeEdits maps statement index -> offsets of type names to widen: a
// widened column's integer/smallint, and the AS type of a sequence owned by
// a widened column.
func (info *schemaInfo) typeEdits(w map[colKey]bool) map[int][]int {
	edits := map[int][]int{}
	for k := range w {
		if ref, ok := info.columns[k]; ok {
			edits[ref.stmt] = append(edits[ref.stmt], ref.loc)
		}
	}
	for seq, owner := range info.seqOwner {
		if ref, ok := info.seqType[seq]; ok && w[owner] && isNarrowInt(ref.typ) {
			edits[ref.stmt] = append(edits[ref.stmt], ref.loc)
		}
	}
	return edits
}

// rewrite returns sql with bigint written at each of locs (offsets of an
// integer type name in sql).
func rewrite(sql string, locs []int) string {
	if len(locs) == 0 {
		return sql
	}
	// Replace from the end so earlier offsets stay valid.
	sort.Sort(sort.Reverse(sort.IntSlice(locs)))
	for _, loc := range locs {
		if loc < 0 || loc >= len(sql) {
			continue
		}
		end := loc
		for end < len(sql) && (isIdentByte(sql[end])) {
			end++
		}
		switch strings.ToLower(sql[loc:end]) {
		case "integer", "int", "int4", "smallint", "int2":
			sql = sql[:loc] + "bigint" + sql[end:]
		}
	}
	return sql
}

func isIdentByte(b byte) bool {
	return b == '_' || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9')
}

func sortStrings(s []string) { sort.Strings(s) }
