package schema

import (
	"fmt"
	"sort"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
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
	name    string
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
	parent      map[qname]qname // partition (or inheritance child) -> parent
	pks         map[qname][]string
	pkIndexes   map[qname]bool // primary-key index names (schema-qualified)
	fks         []foreignKey
	seqOwner    map[qname]colKey
	seqType     map[qname]typeRef
	// seqDefault maps a column to the sequence its DEFAULT nextval(...)
	// draws from; identity marks identity columns.
	seqDefault map[colKey]qname
	identity   map[colKey]bool
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
		seqDefault:  map[colKey]qname{},
		identity:    map[colKey]bool{},
	}
	for i, ps := range stmts {
		switch s := ps.node.Node.(type) {
		case *pg_query.Node_CreateStmt:
			cs := s.CreateStmt
			t := qnameOf(cs.Relation)
			if cs.Partspec != nil {
				info.partitioned[t] = true
			}
			// A partition (PARTITION OF) or an inheritance child (INHERITS
			// one parent): either way its inherited columns must keep the
			// parent's types.
			if len(cs.InhRelations) == 1 {
				if rv := cs.InhRelations[0].GetRangeVar(); rv != nil {
					info.parent[t] = qnameOf(rv)
				}
			}
			for _, elt := range cs.TableElts {
				if cd := elt.GetColumnDef(); cd != nil {
					k := colKey{t, cd.Colname}
					info.tableCols[t] = append(info.tableCols[t], cd.Colname)
					if tn := cd.TypeName; tn != nil && len(tn.ArrayBounds) == 0 {
						info.columns[k] = typeRef{stmt: i, loc: int(tn.Location) - ps.offset, typ: typeNameOf(tn)}
					}
					if cd.RawDefault != nil {
						info.noteDefault(k, cd.RawDefault)
					}
					for _, c := range cd.Constraints {
						if con := c.GetConstraint(); con != nil {
							switch con.Contype {
							case pg_query.ConstrType_CONSTR_DEFAULT:
								info.noteDefault(k, con.RawExpr)
							case pg_query.ConstrType_CONSTR_IDENTITY:
								info.identity[k] = true
							default:
								info.addConstraint(t, con, []string{cd.Colname})
							}
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
				if cmd == nil || at.Objtype != pg_query.ObjectType_OBJECT_TABLE {
					continue
				}
				switch cmd.Subtype {
				case pg_query.AlterTableType_AT_AddConstraint:
					if con := cmd.GetDef().GetConstraint(); con != nil {
						info.addConstraint(t, con, nil)
					}
				case pg_query.AlterTableType_AT_AttachPartition:
					if child := cmd.GetDef().GetPartitionCmd().GetName(); child != nil {
						info.parent[qnameOf(child)] = t
					}
				case pg_query.AlterTableType_AT_AddInherit:
					if rv := cmd.GetDef().GetRangeVar(); rv != nil {
						info.parent[t] = qnameOf(rv)
					}
				case pg_query.AlterTableType_AT_ColumnDefault:
					if cmd.GetDef() != nil {
						info.noteDefault(colKey{t, cmd.Name}, cmd.GetDef())
					}
				case pg_query.AlterTableType_AT_AddIdentity:
					info.identity[colKey{t, cmd.Name}] = true
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

// noteDefault records a column default of the form nextval('seq'[::regclass]).
func (info *schemaInfo) noteDefault(k colKey, expr *pg_query.Node) {
	if seq, ok := nextvalSequence(expr); ok {
		info.seqDefault[k] = seq
	}
}

// nextvalSequence returns the sequence of a nextval('name') call.
func nextvalSequence(expr *pg_query.Node) (qname, bool) {
	fc := expr.GetFuncCall()
	if fc == nil || len(fc.Args) != 1 {
		return qname{}, false
	}
	var fn []string
	for _, n := range fc.Funcname {
		fn = append(fn, n.GetString_().GetSval())
	}
	if len(fn) == 0 || fn[len(fn)-1] != "nextval" || (len(fn) == 2 && fn[0] != "pg_catalog") || len(fn) > 2 {
		return qname{}, false
	}
	arg := fc.Args[0]
	if tc := arg.GetTypeCast(); tc != nil {
		arg = tc.Arg
	}
	c := arg.GetAConst()
	if c == nil || c.GetSval() == nil {
		return qname{}, false
	}
	parts := splitQualified(c.GetSval().Sval)
	switch len(parts) {
	case 1:
		return qname{"public", parts[0]}, true
	case 2:
		return qname{parts[0], parts[1]}, true
	}
	return qname{}, false
}

// splitQualified splits a (possibly quoted) dotted SQL name such as
// public."Weird; Seq" into its identifiers, unquoted; unquoted parts are
// folded to lower case as PostgreSQL does.
func splitQualified(s string) []string {
	var parts []string
	var cur strings.Builder
	quoted := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case quoted && ch == '"' && i+1 < len(s) && s[i+1] == '"':
			cur.WriteByte('"')
			i++
		case ch == '"':
			quoted = !quoted
		case !quoted && ch == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		case !quoted && ch >= 'A' && ch <= 'Z':
			cur.WriteByte(ch + 'a' - 'A')
		default:
			cur.WriteByte(ch)
		}
	}
	return append(parts, cur.String())
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
		info.fks = append(info.fks, foreignKey{name: con.Conname, table: t, cols: cols, ref: qnameOf(con.Pktable), refCols: keys(con.PkAttrs)})
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

// Widening is one integer column schema sync makes bigint on the shards,
// and why.
type Widening struct {
	// Column is schema.table.column.
	Column string
	// Reason says what makes it a generated key (a sequence-backed primary
	// key, or a foreign key pointing at one) and, for a partition or an
	// inheritance child, which tree it belongs to.
	Reason string
}

func (w Widening) String() string { return w.Column + " (" + w.Reason + ")" }

// root returns the top of t's partition (or inheritance) tree.
func (info *schemaInfo) root(t qname) qname {
	seen := map[qname]bool{}
	for {
		p, ok := info.parent[t]
		if !ok || seen[p] {
			return t
		}
		seen[t] = true
		t = p
	}
}

// members lists every table of each tree, keyed by root.
func (info *schemaInfo) members() map[qname][]qname {
	out := map[qname][]qname{}
	for t := range info.tableCols {
		r := info.root(t)
		out[r] = append(out[r], t)
	}
	for r := range out {
		sort.Slice(out[r], func(a, b int) bool { return out[r][a].String() < out[r][b].String() })
	}
	return out
}

// sequenceOf tells whether a column takes its values from a sequence, and
// how (identity, serial, DEFAULT nextval, OWNED BY), looking at every table
// of its tree: a partition often has its parent's default, or only its own.
func (info *schemaInfo) sequenceOf(members []qname, col string) (string, bool) {
	for _, t := range members {
		if info.identity[colKey{t, col}] {
			return "identity", true
		}
	}
	for _, t := range members {
		k := colKey{t, col}
		if seq, ok := info.seqDefault[k]; ok {
			if owner, owned := info.seqOwner[seq]; owned && owner == k {
				return fmt.Sprintf("serial (sequence %s)", seq), true
			}
			return fmt.Sprintf("DEFAULT nextval('%s')", seq), true
		}
	}
	for seq, owner := range info.seqOwner {
		for _, t := range members {
			if owner == (colKey{t, col}) {
				return fmt.Sprintf("sequence %s OWNED BY it", seq), true
			}
		}
	}
	return "", false
}

// decision is why a column of a tree is widened, and which table of the
// tree declares what decided it.
type decision struct {
	why string
	at  qname
}

// widenedColumns decides which integer columns become bigint. A column is
// widened when it is a generated key: a primary-key column that takes its
// values from a sequence (serial, identity, DEFAULT nextval), or a column
// whose foreign key references a widened column, transitively. A partition
// tree (or inheritance tree) is one unit: a column is decided once for the
// whole tree, whichever level declares the key, the foreign key or the
// default, and then widened in every table of it. Every other integer
// column (discriminators inside composite keys, ordinals, counters) keeps
// its type. The result maps each widened column to its reason.
func (info *schemaInfo) widenedColumns() map[colKey]string {
	members := info.members()
	// Decisions are per (tree root, column name).
	tree := map[colKey]decision{}
	narrowSomewhere := func(root qname, col string) bool {
		for _, t := range members[root] {
			if ref, ok := info.columns[colKey{t, col}]; ok && isNarrowInt(ref.typ) {
				return true
			}
		}
		return false
	}
	var pkTables []qname
	for t := range info.pks {
		pkTables = append(pkTables, t)
	}
	sort.Slice(pkTables, func(a, b int) bool { return pkTables[a].String() < pkTables[b].String() })
	for _, t := range pkTables {
		r := info.root(t)
		for _, c := range info.pks[t] {
			k := colKey{r, c}
			if _, done := tree[k]; done || !narrowSomewhere(r, c) {
				continue
			}
			if how, ok := info.sequenceOf(members[r], c); ok {
				tree[k] = decision{why: "primary key, " + how, at: t}
			}
		}
	}
	// The referenced columns of a foreign key: its own list, else the
	// primary key of the referenced table (or of its tree).
	refCols := func(fk foreignKey) []string {
		if len(fk.refCols) > 0 {
			return fk.refCols
		}
		if pk, ok := info.pks[fk.ref]; ok {
			return pk
		}
		return info.pks[info.root(fk.ref)]
	}
	for changed := true; changed; {
		changed = false
		for _, fk := range info.fks {
			rc := refCols(fk)
			from, to := info.root(fk.table), info.root(fk.ref)
			for i, c := range fk.cols {
				if i >= len(rc) {
					break
				}
				if _, ok := tree[colKey{to, rc[i]}]; !ok {
					continue
				}
				k := colKey{from, c}
				if _, done := tree[k]; done || !narrowSomewhere(from, c) {
					continue
				}
				name := "foreign key"
				if fk.name != "" {
					name += " " + fk.name
				}
				tree[k] = decision{why: fmt.Sprintf("%s references %s.%s", name, fk.ref, rc[i]), at: fk.table}
				changed = true
			}
		}
	}
	w := map[colKey]string{}
	for k, d := range tree {
		for _, t := range members[k.table] {
			ck := colKey{t, k.col}
			ref, ok := info.columns[ck]
			if !ok || !isNarrowInt(ref.typ) {
				continue
			}
			if t != d.at {
				w[ck] = fmt.Sprintf("%s, declared on %s (same partition tree)", d.why, d.at)
			} else {
				w[ck] = d.why
			}
		}
	}
	return w
}

// typeEdits maps statement index -> offsets of type names to widen: a
// widened column's integer/smallint, and the AS type of a sequence that
// feeds a widened column (owned by it, or named by its nextval default).
func (info *schemaInfo) typeEdits(w map[colKey]string) map[int][]int {
	edits := map[int][]int{}
	seqs := map[qname]bool{}
	for k := range w {
		if ref, ok := info.columns[k]; ok {
			edits[ref.stmt] = append(edits[ref.stmt], ref.loc)
		}
		if seq, ok := info.seqDefault[k]; ok {
			seqs[seq] = true
		}
	}
	for seq, owner := range info.seqOwner {
		if _, ok := w[owner]; ok {
			seqs[seq] = true
		}
	}
	for seq := range seqs {
		if ref, ok := info.seqType[seq]; ok && isNarrowInt(ref.typ) {
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
