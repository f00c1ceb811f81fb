package ddl

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/reshard/reshard/sync/schema"
)

// deparse renders a (modified) statement node as SQL.
func deparse(st Stmt) (string, error) {
	return pg_query.Deparse(&pg_query.ParseResult{Version: st.version, Stmts: []*pg_query.RawStmt{{Stmt: st.Node}}})
}

// QuoteLiteral quotes a string as an SQL literal.
func QuoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// object returns the first captured object of a type.
func (p *planner) object(typ string) (Object, bool) {
	for _, o := range p.c.Objects {
		if o.Type == typ && o.Identity != "" {
			return o, true
		}
	}
	return Object{}, false
}

// createIndex names an unnamed index as the source named it (so a later
// DROP INDEX of that name finds it on the shards), and builds a
// CONCURRENTLY one outside a transaction block, skipping it when a valid
// one is there and dropping the invalid one a build cut short left.
func (p *planner) createIndex(is *pg_query.IndexStmt) error {
	st := p.a.Statement
	sql := st.SQL
	o, named := p.object("index")
	if is.Idxname == "" && named {
		parts := SplitIdentity(o.Identity)
		is.Idxname = parts[len(parts)-1]
		var err error
		if sql, err = deparse(st); err != nil {
			return fmt.Errorf("name the index of %s: %w", abbreviate(st.SQL), err)
		}
	}
	step := Step{SQL: sql, Kind: "index"}
	if is.Concurrent {
		if !named {
			return p.uncarriable("the source recorded no index for it", "create the index on every shard by hand and mark the statement applied")
		}
		name := QuoteLiteral(o.Identity)
		step.Kind = "index, built concurrently"
		step.Outside = true
		step.Present = `SELECT COALESCE((SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(` + name + `)), false)`
		step.Leftover = `SELECT COALESCE((SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(` + name + `)), false)`
		step.Cleanup = "DROP INDEX CONCURRENTLY IF EXISTS " + o.Identity
	}
	p.a.Steps = append(p.a.Steps, step)
	return nil
}

// drop runs a DROP as it is; DROP INDEX CONCURRENTLY runs outside a
// transaction block, skipped when the index is gone.
func (p *planner) drop(ds *pg_query.DropStmt) error {
	if ds.RemoveType == pg_query.ObjectType_OBJECT_INDEX && ds.Concurrent {
		o, ok := p.object("index")
		present := "SELECT true"
		if ok {
			present = `SELECT to_regclass(` + QuoteLiteral(o.Identity) + `) IS NULL`
		}
		p.a.Steps = append(p.a.Steps, Step{SQL: p.a.Statement.SQL, Kind: "drop index, concurrently", Outside: true, Present: present})
		return nil
	}
	p.asIs(strings.ToLower(TagOf(p.a.Statement.Node)))
	return nil
}

// sqlTypeName is a type's SQL name for messages (integer, not int4).
func sqlTypeName(typ string) string {
	switch typ {
	case "int2":
		return "smallint"
	case "int4", "int":
		return "integer"
	case "int8":
		return "bigint"
	case "float4":
		return "real"
	case "float8":
		return "double precision"
	case "bool":
		return "boolean"
	case "varchar":
		return "character varying"
	case "bpchar":
		return "character"
	}
	return typ
}

// intFamily and textFamily are the sharding column types that hash alike
// (integers hash as int8), so a change between them keeps every row's
// shard.
func hashFamily(typ string) string {
	switch typ {
	case "int2", "int4", "int8", "smallint", "integer", "int", "bigint", "serial", "bigserial", "smallserial", "serial4", "serial8", "serial2":
		return "integer"
	case "text", "varchar":
		return "text"
	}
	return typ
}

func (p *planner) alterTable(at *pg_query.AlterTableStmt) error {
	switch at.Objtype {
	case pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_FOREIGN_TABLE:
	default:
		p.asIs(strings.ToLower(TagOf(p.a.Statement.Node)))
		return nil
	}
	rel, err := p.lookup(at.Relation)
	if err != nil {
		return err
	}
	if rel.kind == "" {
		// Not on the shards (ALTER TABLE IF EXISTS of nothing): run it,
		// PostgreSQL says what is wrong.
		p.asIs("alter table")
		return nil
	}
	newCols := rel.names()
	var pre, steps []Step
	sql := p.a.Statement.SQL
	var edits []edit
	var widenTypes []*pg_query.TypeName
	var defaults []func()
	before, placed := p.placementOf(rel)
	for _, c := range at.Cmds {
		cmd := c.GetAlterTableCmd()
		if cmd == nil {
			continue
		}
		switch cmd.Subtype {
		case pg_query.AlterTableType_AT_AddColumn:
			cd := cmd.GetDef().GetColumnDef()
			if cd == nil {
				continue
			}
			if rel.col(cd.Colname) == nil {
				newCols = append(newCols, cd.Colname)
			}
			if p.rules.Widen {
				nc := defineColumn(cd)
				w := nc.widenable && nc.pk && nc.gen
				for _, r := range nc.refs {
					if !w && nc.widenable {
						if sameRelation(r.table, at.Relation) {
							continue
						}
						if w, err = p.widenedOnShards(r); err != nil {
							return err
						}
					}
				}
				if w {
					to := "bigint"
					if isSerial(typeNameOf(cd.TypeName)) {
						to = "bigserial"
					}
					edits = append(edits, edit{loc: int(cd.TypeName.Location) - p.a.Statement.Offset, to: to})
					widenTypes = append(widenTypes, cd.TypeName)
				}
			}
			fix, post, err := p.addedDefault(rel, cd)
			if err != nil {
				return err
			}
			if fix != nil {
				defaults = append(defaults, func() { setDefault(cd, fix) })
				steps = append(steps, post...)
			}
		case pg_query.AlterTableType_AT_DropColumn:
			if placed && !before.omni && cmd.Name == before.column {
				return p.uncarriable(fmt.Sprintf("it drops sharding column %s of table %s", cmd.Name, rel.display()),
					"drop the sharding column only after the migration is finished (after CUTOVER), or stop the migration (ABORT), change the schema, and run RESHARD again")
			}
			newCols = without(newCols, cmd.Name)
		case pg_query.AlterTableType_AT_AlterColumnType:
			cd := cmd.GetDef().GetColumnDef()
			if cd == nil {
				continue
			}
			newType := typeNameOf(cd.TypeName)
			col := rel.col(cmd.Name)
			if placed && !before.omni && cmd.Name == before.column && col != nil && hashFamily(col.typ) != hashFamily(newType) {
				return p.uncarriable(fmt.Sprintf("it changes the type of sharding column %s of table %s from %s to %s, which would place its rows on other shards", cmd.Name, rel.display(), sqlTypeName(col.typ), sqlTypeName(newType)),
					"change the sharding column's type only after the migration is finished (after CUTOVER), or stop the migration (ABORT), change the schema, and run RESHARD again")
			}
			if p.rules.Widen && col != nil && col.typ == "int8" && (narrow(newType) || newType == "integer" || newType == "smallint") && len(at.Cmds) == 1 {
				p.a.Skip = fmt.Sprintf("the shards keep %s.%s as bigint (schema sync widened it)", rel.qualified(), cmd.Name)
				return nil
			}
		case pg_query.AlterTableType_AT_AddConstraint:
			con := cmd.GetDef().GetConstraint()
			if con == nil || len(at.Cmds) != 1 {
				continue
			}
			if con.Contype == pg_query.ConstrType_CONSTR_FOREIGN && p.rules.Widen {
				w, err := p.widenReferencing(rel, con)
				if err != nil {
					return err
				}
				pre = append(pre, w...)
			}
			if planned, ok := p.asPost(rel, con); ok {
				p.a.Steps = append(p.a.Steps, pre...)
				p.a.Steps = append(p.a.Steps, planned...)
				return nil
			}
		case pg_query.AlterTableType_AT_AttachPartition:
			if p.rules.Widen {
				w, err := p.alignPartition(rel, cmd.GetDef().GetPartitionCmd().GetName())
				if err != nil {
					return err
				}
				pre = append(pre, w...)
			}
		case pg_query.AlterTableType_AT_DetachPartition:
			pc := cmd.GetDef().GetPartitionCmd()
			if pc != nil && pc.Concurrent {
				child := pgx.Identifier{pc.GetName().GetRelname()}.Sanitize()
				if s := pc.GetName().GetSchemaname(); s != "" {
					child = pgx.Identifier{s, pc.GetName().GetRelname()}.Sanitize()
				}
				p.a.Steps = append(p.a.Steps, Step{SQL: sql, Kind: "detach partition, concurrently", Outside: true,
					Present:  `SELECT NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(` + QuoteLiteral(child) + `) AND NOT inhdetachpending)`,
					Leftover: `SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(` + QuoteLiteral(child) + `) AND inhdetachpending)`,
					Cleanup:  fmt.Sprintf("ALTER TABLE %s DETACH PARTITION %s FINALIZE", rel.qualified(), child)})
				return nil
			}
		}
	}
	if placed {
		if err := p.keepsPlacement(rel, rel.schema, rel.name, newCols, nil); err != nil {
			return err
		}
	}
	if len(defaults) > 0 {
		// Rewritten from the parse tree: the defaults become the
		// source's values (and the widened types bigint).
		for _, tn := range widenTypes {
			widenType(tn)
		}
		for _, f := range defaults {
			f()
		}
		if sql, err = deparse(p.a.Statement); err != nil {
			return fmt.Errorf("rewrite %s with the source's values: %w", abbreviate(p.a.Statement.SQL), err)
		}
	} else {
		sql = applyEdits(sql, edits)
	}
	p.a.Steps = append(p.a.Steps, pre...)
	p.a.Steps = append(p.a.Steps, Step{SQL: sql, Kind: "alter table"})
	p.a.Steps = append(p.a.Steps, steps...)
	return nil
}

// placementOf is how the rules place a table today (false when they
// cannot: nothing to keep).
func (p *planner) placementOf(rel *relation) (placement, bool) {
	if len(rel.columns) == 0 {
		return placement{}, false
	}
	pl, err := p.place(rel.schema, rel.name, rel.names())
	return pl, err == nil
}

func without(cols []string, name string) []string {
	out := make([]string, 0, len(cols))
	for _, c := range cols {
		if c != name {
			out = append(out, c)
		}
	}
	return out
}

// addedDefault makes a column added with a default that is not a constant
// get the source's values on the shards. The source evaluated a stable
// default (now(), CURRENT_TIMESTAMP) once and gave every existing row that
// value (pg_attribute.attmissingval); the shards would evaluate it again,
// later. So the column is added there with the source's value as its
// default (fix: what the ADD COLUMN's default becomes), then given its own
// default (post). A volatile default (random(), a sequence) gave each row
// its own value, in a rewrite of the table that logical decoding does not
// carry: the table's rows are copied again (Recopy).
func (p *planner) addedDefault(rel *relation, cd *pg_query.ColumnDef) (fix *pg_query.Node, post []Step, err error) {
	def := cd.RawDefault
	for _, cn := range cd.Constraints {
		if con := cn.GetConstraint(); con != nil && con.Contype == pg_query.ConstrType_CONSTR_DEFAULT {
			def = con.RawExpr
		}
	}
	if def == nil || constant(def) || p.src == nil || rel.kind != "r" && rel.kind != "p" {
		return nil, nil, nil
	}
	var hasMissing, hasDefault bool
	var missing *string
	err = p.src.QueryRow(p.ctx, `SELECT a.atthasmissing, a.atthasdef, (a.attmissingval::text::text[])[1]
		FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped`,
		rel.qualified(), cd.Colname).Scan(&hasMissing, &hasDefault, &missing)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, nil // changed again on the source since: later statements follow
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read the source's value of %s.%s: %w", rel.qualified(), cd.Colname, err)
	}
	switch {
	case hasMissing && missing != nil:
		fix = &pg_query.Node{Node: &pg_query.Node_TypeCast{TypeCast: &pg_query.TypeCast{
			Arg:      &pg_query.Node{Node: &pg_query.Node_AConst{AConst: &pg_query.A_Const{Val: &pg_query.A_Const_Sval{Sval: &pg_query.String{Sval: *missing}}}}},
			TypeName: cd.TypeName, Location: -1}}}
		post = []Step{{SQL: fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT %s", rel.qualified(), pgx.Identifier{cd.Colname}.Sanitize(), deparseExpr(def)),
			Kind: "default (existing rows have the source's value)"}}
		return fix, post, nil
	case !hasMissing && hasDefault:
		p.a.Recopy = append(p.a.Recopy, rel.schema+"."+rel.name)
	}
	return nil, nil, nil
}

// setDefault replaces a column definition's default expression.
func setDefault(cd *pg_query.ColumnDef, expr *pg_query.Node) {
	cd.RawDefault = nil
	for _, cn := range cd.Constraints {
		if con := cn.GetConstraint(); con != nil && con.Contype == pg_query.ConstrType_CONSTR_DEFAULT {
			con.RawExpr = expr
			return
		}
	}
	cd.RawDefault = expr
}

// widenType makes a column definition's type bigint (bigserial for a
// serial one).
func widenType(tn *pg_query.TypeName) {
	str := func(s string) *pg_query.Node {
		return &pg_query.Node{Node: &pg_query.Node_String_{String_: &pg_query.String{Sval: s}}}
	}
	if isSerial(typeNameOf(tn)) {
		tn.Names = []*pg_query.Node{str("bigserial")}
		return
	}
	tn.Names = []*pg_query.Node{str("pg_catalog"), str("int8")}
	tn.Typmods = nil
}

// deparseExpr renders an expression as SQL (through a SELECT of it).
func deparseExpr(expr *pg_query.Node) string {
	sel := &pg_query.Node{Node: &pg_query.Node_SelectStmt{SelectStmt: &pg_query.SelectStmt{
		TargetList: []*pg_query.Node{{Node: &pg_query.Node_ResTarget{ResTarget: &pg_query.ResTarget{Val: expr}}}}}}}
	s, err := deparse(Stmt{Node: sel, version: deparseVersion()})
	if err != nil {
		return "NULL"
	}
	return strings.TrimPrefix(s, "SELECT ")
}

// constant tells whether a default is a constant (possibly cast): every
// row gets the same value wherever it is evaluated.
func constant(n *pg_query.Node) bool {
	switch e := n.Node.(type) {
	case *pg_query.Node_AConst:
		return true
	case *pg_query.Node_TypeCast:
		return constant(e.TypeCast.Arg)
	case *pg_query.Node_AExpr:
		return (e.AExpr.Lexpr == nil || constant(e.AExpr.Lexpr)) && (e.AExpr.Rexpr == nil || constant(e.AExpr.Rexpr))
	case *pg_query.Node_AArrayExpr:
		for _, x := range e.AArrayExpr.Elements {
			if !constant(x) {
				return false
			}
		}
		return true
	}
	return false
}

// asPost plans an added foreign key or unique constraint as SCHEMA_SYNC
// POST does (schema.BuildPlan): a foreign key added NOT VALID, then
// validated (a key that crosses shards fails validation and is left NOT
// VALID), a unique constraint built as an index first. Only where the plan
// names the table as the statement does: schema-qualified, or in public.
func (p *planner) asPost(rel *relation, con *pg_query.Constraint) ([]Step, bool) {
	switch con.Contype {
	case pg_query.ConstrType_CONSTR_FOREIGN, pg_query.ConstrType_CONSTR_UNIQUE:
	default:
		return nil, false
	}
	if rel.kind == "p" || con.SkipValidation || con.Conname == "" {
		return nil, false
	}
	at := p.a.Statement.Node.GetAlterTableStmt()
	if at.Relation.Schemaname == "" && rel.schema != "public" {
		return nil, false
	}
	plan, err := schema.BuildPlan(p.a.Statement.SQL + ";\n")
	if err != nil || len(plan.Pre) > 0 || len(plan.Post) == 0 {
		return nil, false
	}
	var out []Step
	for _, st := range plan.Post {
		out = append(out, Step{SQL: st.SQL, Kind: st.Kind, Optional: st.Kind == "validate foreign key"})
	}
	return out, true
}

// widenReferencing widens the integer columns of a new foreign key that
// references a widened column (schema sync would have made them bigint).
func (p *planner) widenReferencing(rel *relation, con *pg_query.Constraint) ([]Step, error) {
	ref := strs(con.PkAttrs)
	var out []Step
	for i, n := range strs(con.FkAttrs) {
		c := rel.col(n)
		if c == nil || !narrow(c.typ) {
			continue
		}
		r := fkRef{table: con.Pktable, position: i}
		if i < len(ref) {
			r.col = ref[i]
		}
		w, err := p.widenedOnShards(r)
		if err != nil {
			return nil, err
		}
		if w {
			out = append(out, Step{SQL: fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE bigint", rel.qualified(), pgx.Identifier{n}.Sanitize()),
				Kind: "column widened (references a widened key)"})
		}
	}
	return out, nil
}

// alignPartition gives a table attached as a partition the column types
// its partitioned table has on the shards: a partition tree is one unit,
// and the columns schema sync widened in it are bigint in every table.
func (p *planner) alignPartition(root *relation, child *pg_query.RangeVar) ([]Step, error) {
	c, err := p.lookup(child)
	if err != nil || c.kind == "" {
		return nil, err
	}
	var out []Step
	for _, rc := range root.columns {
		cc := c.col(rc.name)
		if rc.typ == "int8" && cc != nil && narrow(cc.typ) {
			out = append(out, Step{SQL: fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE bigint", c.qualified(), pgx.Identifier{rc.name}.Sanitize()),
				Kind: "partition column widened as its tree"})
		}
	}
	return out, nil
}

// rename checks that renaming a table or a column keeps the table's
// placement.
func (p *planner) rename(rs *pg_query.RenameStmt) error {
	switch rs.RenameType {
	case pg_query.ObjectType_OBJECT_COLUMN:
		if rs.RelationType != pg_query.ObjectType_OBJECT_TABLE && rs.RelationType != pg_query.ObjectType_OBJECT_FOREIGN_TABLE {
			break
		}
		rel, err := p.lookup(rs.Relation)
		if err != nil {
			return err
		}
		cols := rel.names()
		for i, c := range cols {
			if c == rs.Subname {
				cols[i] = rs.Newname
			}
		}
		if err := p.keepsPlacement(rel, rel.schema, rel.name, cols, map[string]string{rs.Subname: rs.Newname}); err != nil {
			return err
		}
	case pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_FOREIGN_TABLE:
		rel, err := p.lookup(rs.Relation)
		if err != nil {
			return err
		}
		if err := p.keepsPlacement(rel, rel.schema, rs.Newname, rel.names(), nil); err != nil {
			return err
		}
	}
	p.asIs("rename")
	return nil
}

// setSchema checks that moving a table to another schema keeps its
// placement.
func (p *planner) setSchema(as *pg_query.AlterObjectSchemaStmt) error {
	if as.ObjectType == pg_query.ObjectType_OBJECT_TABLE || as.ObjectType == pg_query.ObjectType_OBJECT_FOREIGN_TABLE {
		rel, err := p.lookup(as.Relation)
		if err != nil {
			return err
		}
		if err := p.keepsPlacement(rel, as.Newschema, rel.name, rel.names(), nil); err != nil {
			return err
		}
	}
	p.asIs("set schema")
	return nil
}

// alterPublication runs the statement, and when it adds tables to the
// route's publication, has their rows copied again: the stream carried
// none of their changes before.
func (p *planner) alterPublication(ap *pg_query.AlterPublicationStmt) error {
	p.asIs("publication")
	if ap.Pubname != p.rules.Publication || ap.Action == pg_query.AlterPublicationAction_AP_DropObjects {
		return nil
	}
	for _, o := range ap.Pubobjects {
		spec := o.GetPublicationObjSpec()
		if spec == nil {
			continue
		}
		switch spec.Pubobjtype {
		case pg_query.PublicationObjSpecType_PUBLICATIONOBJ_TABLE:
			rel, err := p.lookup(spec.GetPubtable().GetRelation())
			if err != nil {
				return err
			}
			if rel.kind != "" {
				p.a.Recopy = append(p.a.Recopy, rel.schema+"."+rel.name)
			}
		case pg_query.PublicationObjSpecType_PUBLICATIONOBJ_TABLES_IN_SCHEMA:
			rows, err := p.dst.Query(p.ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 2`, spec.Name)
			if err != nil {
				return fmt.Errorf("tables of schema %s: %w", spec.Name, err)
			}
			for rows.Next() {
				var s, n string
				if err := rows.Scan(&s, &n); err != nil {
					rows.Close()
					return err
				}
				p.a.Recopy = append(p.a.Recopy, s+"."+n)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// SplitIdentity splits an object identity as PostgreSQL writes it
// (public."Weird name") into its unquoted parts.
func SplitIdentity(s string) []string { return schema.SplitQualified(s) }

// deparseVersion is the parser's version (what a parse tree to deparse
// carries).
func deparseVersion() int32 {
	tree, err := pg_query.Parse("SELECT 1")
	if err != nil {
		return 0
	}
	return tree.Version
}
