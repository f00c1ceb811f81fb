// Package schema is the schema stage of resharding: it dumps the source's
// schema with pg_dump, splits the dump into statements, places each one in a
// phase (PRE before the data copy, POST after it, CUTOVER and POST_CUTOVER at
// cutover), rewrites what sharding needs (integer primary keys become bigint),
// and applies a phase on every destination shard in parallel, idempotently.
package schema

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"

	"github.com/reshard/reshard/sync/keywords"
)

// Phase is a schema-sync phase.
type Phase string

// The phases, in the order a resharding runs them.
const (
	PhasePre         Phase = "PRE"
	PhasePost        Phase = "POST"
	PhaseCutover     Phase = "CUTOVER"
	PhasePostCutover Phase = "POST_CUTOVER"
)

// Stage orders the POST phase: indexes are built in parallel first, then
// partition indexes attached, then constraints and the rest added in dump
// order, then foreign keys validated in parallel.
type Stage int

// POST stages.
const (
	StageSequential Stage = iota // PRE statements, and POST's ordered middle part
	StageIndexes
	StageAttach
	StageConstraints
	StageValidate
)

// Check is a query answering whether a statement's effect is already present
// on a shard (one boolean column). It makes statements that PostgreSQL has no
// IF NOT EXISTS for idempotent.
type Check struct {
	SQL  string
	Args []any
}

// Statement is one schema statement of a phase.
type Statement struct {
	// SQL is the statement as it runs on the destination.
	SQL string
	// Kind names what it creates: table, index, foreign key, ...
	Kind string
	// Phase is the phase it belongs to.
	Phase Phase
	// Stage orders statements within POST.
	Stage Stage
	// Schema and Table name the relation it is about, if any.
	Schema, Table string
	// Exists, when set, tells whether the statement is already applied.
	Exists *Check
	// roleStatement marks GRANT/REVOKE/OWNER statements: a missing role is
	// reported, not fatal.
	roleStatement bool
	// fk is the foreign key a "foreign key" or "validate foreign key"
	// statement adds or validates: rows without their referenced row on a
	// shard (a key that crosses shards) are counted and reported, and the
	// key left NOT VALID, rather than stopping the phase.
	fk *fkCheck
}

// fkCheck describes a foreign key, to count the rows that break it.
type fkCheck struct {
	name          string
	table, ref    qname
	partitioned   bool // the referencing table is partitioned
	cols, refCols []string
}

// orphansSQL counts the referencing rows whose key is complete (no NULL:
// MATCH SIMPLE exempts those) and has no referenced row.
func (f *fkCheck) orphansSQL() string {
	from := "ONLY " + quoteQualified(f.table.schema, f.table.name)
	if f.partitioned {
		from = quoteQualified(f.table.schema, f.table.name)
	}
	var notNull, match []string
	for i, c := range f.cols {
		notNull = append(notNull, "x."+quoteIdent(c)+" IS NOT NULL")
		if i < len(f.refCols) {
			match = append(match, "r."+quoteIdent(f.refCols[i])+" = x."+quoteIdent(c))
		}
	}
	return fmt.Sprintf("SELECT count(*) FROM %s x WHERE %s AND NOT EXISTS (SELECT 1 FROM %s r WHERE %s)",
		from, strings.Join(notNull, " AND "), quoteQualified(f.ref.schema, f.ref.name), strings.Join(match, " AND "))
}

// Plan is the source schema split into phases.
type Plan struct {
	// Preamble holds the session settings of the dump (search_path, ...),
	// run at the start of every connection that applies statements.
	Preamble []string
	// Pre and Post are the statements of those phases, in apply order.
	Pre, Post []*Statement
	// Widened lists the integer columns made bigint, with their reasons,
	// in column order.
	Widened []Widening
	// Partitioned lists partitioned tables (schema.table).
	Partitioned []string
}

// Statements returns the plan's statements of a phase.
func (p *Plan) Statements(phase Phase) []*Statement {
	switch phase {
	case PhasePre:
		return p.Pre
	case PhasePost:
		return p.Post
	}
	return nil
}

// parsed is one dump statement with its parse tree. Node locations are
// offsets into the dump; offset is where sql starts there.
type parsed struct {
	sql    string
	node   *pg_query.Node
	offset int
}

// BuildPlan turns pg_dump --schema-only output into a plan.
func BuildPlan(dump string) (*Plan, error) {
	stmts, err := splitDump(dump)
	if err != nil {
		return nil, err
	}
	info := analyze(stmts)
	widen := info.widenedColumns()
	plan := &Plan{}
	for col, why := range widen {
		plan.Widened = append(plan.Widened, Widening{Column: col.String(), Reason: why})
	}
	sort.Slice(plan.Widened, func(a, b int) bool { return plan.Widened[a].Column < plan.Widened[b].Column })
	for t := range info.partitioned {
		plan.Partitioned = append(plan.Partitioned, t.String())
	}
	sortStrings(plan.Partitioned)
	var post []*Statement
	edits := info.typeEdits(widen)
	for i, ps := range stmts {
		sql := rewrite(ps.sql, edits[i])
		if isPreamble(ps.node) {
			plan.Preamble = append(plan.Preamble, sql)
			continue
		}
		if ownObject(ps.node) {
			continue // reshard's own (DDL capture on the source)
		}
		for _, st := range classify(ps.node, sql, info) {
			if st.Phase == PhasePre {
				plan.Pre = append(plan.Pre, st)
			} else {
				post = append(post, st)
			}
		}
	}
	// POST in stage order, dump order within a stage.
	for _, stage := range []Stage{StageIndexes, StageAttach, StageConstraints, StageValidate} {
		for _, st := range post {
			if st.Stage == stage {
				plan.Post = append(plan.Post, st)
			}
		}
	}
	return plan, nil
}

// splitDump splits the dump into statements, dropping psql meta-commands
// (pg_dump writes \restrict / \unrestrict and \connect lines) and comments.
// The whole dump is parsed once (the scanner-based splitter silently drops
// what it cannot place; the parser reports it); node locations are made
// relative to each statement's own text.
func splitDump(dump string) ([]parsed, error) {
	var b strings.Builder
	for _, line := range strings.SplitAfter(dump, "\n") {
		if strings.HasPrefix(line, "\\") {
			// An empty line instead: the dump's line numbers stay.
			if strings.HasSuffix(line, "\n") {
				b.WriteString("\n")
			}
			continue
		}
		b.WriteString(line)
	}
	tree, text, err := keywords.Parse(b.String(), dumpMajor(b.String()))
	if err != nil {
		return nil, dumpSyntaxError(text, err)
	}
	out := make([]parsed, 0, len(tree.Stmts))
	for _, raw := range tree.Stmts {
		start := int(raw.StmtLocation)
		end := len(text)
		if raw.StmtLen > 0 {
			end = start + int(raw.StmtLen)
		}
		if start < 0 || end > len(text) || start > end {
			return nil, fmt.Errorf("parse schema dump: statement range %d..%d outside the dump", start, end)
		}
		stmt := text[start:end]
		trimmed := stripLeadingComments(stmt)
		offset := start + len(stmt) - len(trimmed)
		sql := strings.TrimRight(trimmed, " \t\r\n")
		if sql == "" {
			continue
		}
		out = append(out, parsed{sql: sql, node: raw.Stmt, offset: offset})
	}
	return out, nil
}

var dumpedFrom = regexp.MustCompile(`(?m)^-- Dumped from database version (\d+)`)

// dumpMajor is the major version of the server a dump was taken from (its
// "-- Dumped from database version" line), 0 when it does not say.
func dumpMajor(dump string) int {
	m := dumpedFrom.FindStringSubmatch(dump)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// dumpSyntaxError names where a dump failed to parse: the line and the
// statement's first line. pg_query's grammar is PostgreSQL 17's: what only
// a newer server's pg_dump writes (PostgreSQL 18's virtual generated
// columns, NOT ENFORCED constraints, WITHOUT OVERLAPS keys, NOT NULL ...
// NOT VALID) does not parse.
func dumpSyntaxError(text string, err error) error {
	var pe *parser.Error
	if !errors.As(err, &pe) {
		return fmt.Errorf("parse schema dump: %w", err)
	}
	at, ok := keywords.ErrorOffset(text, pe.Cursorpos)
	if !ok {
		return fmt.Errorf("parse schema dump: %w", err)
	}
	line := 1 + strings.Count(text[:at], "\n")
	// The statement starts after the previous statement's end and its
	// comments.
	stmt := stripLeadingComments(text[keywords.StatementStart(text, at):])
	if i := strings.IndexByte(stmt, '\n'); i >= 0 {
		stmt = stmt[:i]
	}
	return fmt.Errorf("parse schema dump: %w at line %d, in the statement starting %q (reshard's SQL parser has PostgreSQL 17's grammar: syntax only a newer PostgreSQL has, such as 18's virtual generated columns, NOT ENFORCED constraints or WITHOUT OVERLAPS keys, cannot be planned; create such objects on the shards yourself, or leave them out of the source's schema while resharding)", err, line, stmt)
}

// stripLeadingComments removes the "-- Name: ...; Type: ..." comment lines
// pg_dump writes before each statement.
func stripLeadingComments(sql string) string {
	for {
		s := strings.TrimLeft(sql, " \t\r\n")
		if !strings.HasPrefix(s, "--") {
			return s
		}
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			return ""
		}
		sql = s[i+1:]
	}
}

func abbreviate(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}

func isPreamble(n *pg_query.Node) bool {
	switch n.Node.(type) {
	case *pg_query.Node_VariableSetStmt:
		return true
	case *pg_query.Node_SelectStmt:
		// pg_dump's SELECT pg_catalog.set_config('search_path', '', false).
		return true
	}
	return false
}

func relName(rv *pg_query.RangeVar) (string, string) {
	if rv == nil {
		return "", ""
	}
	schema := rv.Schemaname
	if schema == "" {
		schema = "public"
	}
	return schema, rv.Relname
}

// classify places a statement in its phase and stage. Some statements are
// rewritten into several (a unique constraint becomes an index build and a
// constraint using it; a foreign key is added NOT VALID, then validated).
func classify(n *pg_query.Node, sql string, info *schemaInfo) []*Statement {
	pre := func(kind string) []*Statement {
		return []*Statement{{SQL: sql, Kind: kind, Phase: PhasePre}}
	}
	post := func(kind string, stage Stage) []*Statement {
		return []*Statement{{SQL: sql, Kind: kind, Phase: PhasePost, Stage: stage}}
	}
	switch s := n.Node.(type) {
	case *pg_query.Node_CreateSchemaStmt:
		st := pre("schema")
		st[0].Exists = &Check{SQL: `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, Args: []any{s.CreateSchemaStmt.Schemaname}}
		return st
	case *pg_query.Node_CreateExtensionStmt:
		return pre("extension")
	case *pg_query.Node_CreateEnumStmt:
		return typeStatement(pre("type"), s.CreateEnumStmt.TypeName, "e")
	case *pg_query.Node_CompositeTypeStmt:
		sc, name := relName(s.CompositeTypeStmt.Typevar)
		st := pre("type")
		st[0].Exists = typeExists(sc, name, "c")
		return st
	case *pg_query.Node_CreateRangeStmt:
		return typeStatement(pre("type"), s.CreateRangeStmt.TypeName, "r")
	case *pg_query.Node_AlterEnumStmt:
		return pre("type")
	case *pg_query.Node_DefineStmt:
		return pre(strings.ToLower(strings.TrimPrefix(s.DefineStmt.Kind.String(), "OBJECT_")))
	case *pg_query.Node_CreateDomainStmt:
		return typeStatement(pre("domain"), s.CreateDomainStmt.Domainname, "d")
	case *pg_query.Node_CreateFunctionStmt:
		return pre("function")
	case *pg_query.Node_CreateSeqStmt:
		st := pre("sequence")
		st[0].Schema, st[0].Table = relName(s.CreateSeqStmt.Sequence)
		st[0].Exists = relationExists(st[0].Schema, st[0].Table, "S")
		return st
	case *pg_query.Node_AlterSeqStmt:
		st := pre("sequence")
		st[0].Schema, st[0].Table = relName(s.AlterSeqStmt.Sequence)
		st[0].Exists = ownedByExists(s.AlterSeqStmt, quoteQualified(st[0].Schema, st[0].Table))
		return st
	case *pg_query.Node_CreateStmt:
		kind := "table"
		if s.CreateStmt.Partbound != nil {
			kind = "partition"
		}
		st := pre(kind)
		st[0].Schema, st[0].Table = relName(s.CreateStmt.Relation)
		st[0].Exists = relationExists(st[0].Schema, st[0].Table, "r", "p", "f")
		return st
	case *pg_query.Node_ViewStmt:
		st := pre("view")
		st[0].Schema, st[0].Table = relName(s.ViewStmt.View)
		if !s.ViewStmt.Replace {
			st[0].Exists = relationExists(st[0].Schema, st[0].Table, "v")
		}
		return st
	case *pg_query.Node_CreateTableAsStmt:
		st := pre("materialized view")
		st[0].Schema, st[0].Table = relName(s.CreateTableAsStmt.GetInto().GetRel())
		st[0].Exists = relationExists(st[0].Schema, st[0].Table, "m")
		return st
	case *pg_query.Node_CommentStmt:
		switch s.CommentStmt.Objtype {
		case pg_query.ObjectType_OBJECT_INDEX, pg_query.ObjectType_OBJECT_TABCONSTRAINT, pg_query.ObjectType_OBJECT_TRIGGER,
			pg_query.ObjectType_OBJECT_RULE, pg_query.ObjectType_OBJECT_POLICY, pg_query.ObjectType_OBJECT_STATISTIC_EXT,
			pg_query.ObjectType_OBJECT_EVENT_TRIGGER:
			return post("comment", StageConstraints)
		}
		return pre("comment")
	case *pg_query.Node_GrantStmt, *pg_query.Node_GrantRoleStmt, *pg_query.Node_AlterDefaultPrivilegesStmt:
		st := pre("grant")
		st[0].roleStatement = true
		return st
	case *pg_query.Node_AlterOwnerStmt:
		var st []*Statement
		if s.AlterOwnerStmt.ObjectType == pg_query.ObjectType_OBJECT_STATISTIC_EXT || s.AlterOwnerStmt.ObjectType == pg_query.ObjectType_OBJECT_EVENT_TRIGGER {
			st = post("owner", StageConstraints)
		} else {
			st = pre("owner")
		}
		st[0].roleStatement = true
		return st
	case *pg_query.Node_CreatePublicationStmt:
		st := pre("publication")
		st[0].Exists = &Check{SQL: `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, Args: []any{s.CreatePublicationStmt.Pubname}}
		return st
	case *pg_query.Node_AlterPublicationStmt:
		return pre("publication")
	case *pg_query.Node_IndexStmt:
		st := post("index", StageIndexes)
		st[0].Schema, st[0].Table = relName(s.IndexStmt.Relation)
		if s.IndexStmt.Idxname != "" {
			st[0].Exists = relationExists(st[0].Schema, s.IndexStmt.Idxname, "i", "I")
		}
		return st
	case *pg_query.Node_CreateTrigStmt:
		st := post("trigger", StageConstraints)
		st[0].Schema, st[0].Table = relName(s.CreateTrigStmt.Relation)
		if !s.CreateTrigStmt.Replace {
			st[0].Exists = &Check{
				SQL:  `SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = $1 AND tgrelid = to_regclass($2))`,
				Args: []any{s.CreateTrigStmt.Trigname, quoteQualified(st[0].Schema, st[0].Table)},
			}
		}
		return st
	case *pg_query.Node_RuleStmt:
		return post("rule", StageConstraints)
	case *pg_query.Node_CreatePolicyStmt:
		return post("policy", StageConstraints)
	case *pg_query.Node_CreateStatsStmt:
		return post("statistics", StageConstraints)
	case *pg_query.Node_CreateEventTrigStmt, *pg_query.Node_AlterEventTrigStmt:
		return post("event trigger", StageConstraints)
	case *pg_query.Node_AlterTableStmt:
		return classifyAlterTable(s.AlterTableStmt, sql, info)
	}
	return pre(strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(fmt.Sprintf("%T", n.Node), "*pg_query.Node_"), "Stmt")))
}

func classifyAlterTable(at *pg_query.AlterTableStmt, sql string, info *schemaInfo) []*Statement {
	schema, table := relName(at.Relation)
	mk := func(kind string, phase Phase, stage Stage) []*Statement {
		return []*Statement{{SQL: sql, Kind: kind, Phase: phase, Stage: stage, Schema: schema, Table: table}}
	}
	if len(at.Cmds) != 1 {
		// pg_dump writes one subcommand per ALTER; anything else keeps its
		// dump position in PRE.
		return mk("alter table", PhasePre, StageSequential)
	}
	cmd := at.Cmds[0].GetAlterTableCmd()
	if cmd == nil {
		return mk("alter table", PhasePre, StageSequential)
	}
	switch at.Objtype {
	case pg_query.ObjectType_OBJECT_INDEX:
		if cmd.Subtype == pg_query.AlterTableType_AT_AttachPartition {
			child := cmd.GetDef().GetPartitionCmd().GetName()
			cs, cn := relName(child)
			st := mk("index attach", PhasePost, StageAttach)
			if info.pkIndexes[qname{schema, table}] {
				st[0].Phase, st[0].Stage = PhasePre, StageSequential
			}
			st[0].Exists = &Check{
				SQL:  `SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1) AND inhparent = to_regclass($2))`,
				Args: []any{quoteQualified(cs, cn), quoteQualified(schema, table)},
			}
			return st
		}
		return mk("index", PhasePost, StageConstraints)
	case pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_FOREIGN_TABLE, pg_query.ObjectType_OBJECT_MATVIEW:
	default:
		return mk("alter "+strings.ToLower(strings.TrimPrefix(at.Objtype.String(), "OBJECT_")), PhasePre, StageSequential)
	}
	rel := quoteQualified(schema, table)
	switch cmd.Subtype {
	case pg_query.AlterTableType_AT_AddConstraint:
		c := cmd.GetDef().GetConstraint()
		if c == nil {
			return mk("constraint", PhasePost, StageConstraints)
		}
		exists := &Check{
			SQL:  `SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = $1 AND conrelid = to_regclass($2))`,
			Args: []any{c.Conname, rel},
		}
		var out []*Statement
		switch c.Contype {
		case pg_query.ConstrType_CONSTR_PRIMARY:
			out = mk("primary key", PhasePre, StageSequential)
		case pg_query.ConstrType_CONSTR_UNIQUE:
			out = uniqueAsIndex(c, schema, table, sql, info)
		case pg_query.ConstrType_CONSTR_EXCLUSION:
			out = mk("exclusion constraint", PhasePost, StageIndexes)
		case pg_query.ConstrType_CONSTR_FOREIGN:
			out = foreignKeyNotValid(c, schema, table, sql, info)
		case pg_query.ConstrType_CONSTR_CHECK:
			out = mk("check constraint", PhasePost, StageConstraints)
		default:
			out = mk("constraint", PhasePost, StageConstraints)
		}
		for _, st := range out {
			if st.Exists == nil && st.Kind != "validate foreign key" && st.Kind != "unique index" {
				st.Exists = exists
			}
		}
		return out
	case pg_query.AlterTableType_AT_AttachPartition:
		child := cmd.GetDef().GetPartitionCmd().GetName()
		cs, cn := relName(child)
		st := mk("partition", PhasePre, StageSequential)
		st[0].Exists = &Check{
			SQL:  `SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1) AND inhparent = to_regclass($2))`,
			Args: []any{quoteQualified(cs, cn), rel},
		}
		return st
	case pg_query.AlterTableType_AT_AddIdentity:
		st := mk("identity", PhasePre, StageSequential)
		st[0].Exists = &Check{
			SQL:  `SELECT COALESCE((SELECT attidentity <> '' FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2), false)`,
			Args: []any{rel, cmd.Name},
		}
		return st
	case pg_query.AlterTableType_AT_ColumnDefault:
		st := mk("default", PhasePre, StageSequential)
		// Already applied when the column has that default, as the shard
		// deparses it (the session's search_path is pg_dump's, so it
		// qualifies names as the dump does).
		if i := strings.LastIndex(strings.ToUpper(sql), " SET DEFAULT "); i >= 0 && cmd.GetDef() != nil {
			st[0].Exists = &Check{
				SQL: `SELECT COALESCE((SELECT pg_get_expr(d.adbin, d.adrelid) = $3 FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
					WHERE a.attrelid = to_regclass($1) AND a.attname = $2), false)`,
				Args: []any{rel, cmd.Name, strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(sql[i+len(" SET DEFAULT "):]), ";"))},
			}
		}
		return st
	case pg_query.AlterTableType_AT_ChangeOwner:
		st := mk("owner", PhasePre, StageSequential)
		st[0].roleStatement = true
		if r := cmd.GetNewowner(); r != nil && r.Roletype == pg_query.RoleSpecType_ROLESPEC_CSTRING {
			// Already applied when the relation has that owner.
			st[0].Exists = &Check{
				SQL:  `SELECT COALESCE((SELECT pg_get_userbyid(relowner) = $2 FROM pg_class WHERE oid = to_regclass($1)), false)`,
				Args: []any{rel, r.Rolename},
			}
		}
		return st
	case pg_query.AlterTableType_AT_ReplicaIdentity:
		return mk("replica identity", PhasePost, StageConstraints)
	case pg_query.AlterTableType_AT_ClusterOn,
		pg_query.AlterTableType_AT_EnableTrig, pg_query.AlterTableType_AT_EnableAlwaysTrig,
		pg_query.AlterTableType_AT_EnableReplicaTrig, pg_query.AlterTableType_AT_DisableTrig,
		pg_query.AlterTableType_AT_EnableRule, pg_query.AlterTableType_AT_EnableAlwaysRule,
		pg_query.AlterTableType_AT_EnableReplicaRule, pg_query.AlterTableType_AT_DisableRule,
		pg_query.AlterTableType_AT_EnableRowSecurity, pg_query.AlterTableType_AT_ForceRowSecurity:
		return mk("table option", PhasePost, StageConstraints)
	}
	return mk("alter table", PhasePre, StageSequential)
}

// uniqueAsIndex turns ADD CONSTRAINT c UNIQUE (cols) into a parallel-built
// CREATE UNIQUE INDEX c and ADD CONSTRAINT c UNIQUE USING INDEX c. Forms
// USING INDEX cannot express (partitioned tables, storage options,
// tablespaces) keep the original statement in the index stage.
func uniqueAsIndex(c *pg_query.Constraint, schema, table, sql string, info *schemaInfo) []*Statement {
	orig := []*Statement{{SQL: sql, Kind: "unique constraint", Phase: PhasePost, Stage: StageIndexes, Schema: schema, Table: table}}
	if info.partitioned[qname{schema, table}] || len(c.Options) > 0 || c.Indexspace != "" || c.Indexname != "" || len(c.Keys) == 0 {
		return orig
	}
	rel := quoteQualified(schema, table)
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE UNIQUE INDEX IF NOT EXISTS %s ON %s USING btree (%s)", quoteIdent(c.Conname), rel, identList(c.Keys))
	if len(c.Including) > 0 {
		fmt.Fprintf(&b, " INCLUDE (%s)", identList(c.Including))
	}
	if c.NullsNotDistinct {
		b.WriteString(" NULLS NOT DISTINCT")
	}
	var add strings.Builder
	fmt.Fprintf(&add, "ALTER TABLE ONLY %s ADD CONSTRAINT %s UNIQUE USING INDEX %s", rel, quoteIdent(c.Conname), quoteIdent(c.Conname))
	if c.Deferrable {
		add.WriteString(" DEFERRABLE")
		if c.Initdeferred {
			add.WriteString(" INITIALLY DEFERRED")
		}
	}
	return []*Statement{
		{SQL: b.String(), Kind: "unique index", Phase: PhasePost, Stage: StageIndexes, Schema: schema, Table: table,
			Exists: &Check{
				SQL:  `SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = $1 AND conrelid = to_regclass($2))`,
				Args: []any{c.Conname, rel},
			}},
		{SQL: add.String(), Kind: "unique constraint", Phase: PhasePost, Stage: StageConstraints, Schema: schema, Table: table},
	}
}

// foreignKeyNotValid adds a foreign key NOT VALID (instant), then validates
// it in the parallel VALIDATE stage (a weaker lock, and all FKs at once). A
// key that is NOT VALID on the source stays so. PostgreSQL 15 cannot add a
// NOT VALID key to a partitioned table; those are added as they are.
func foreignKeyNotValid(c *pg_query.Constraint, schema, table, sql string, info *schemaInfo) []*Statement {
	t := qname{schema, table}
	fk := &fkCheck{name: c.Conname, table: t, ref: qnameOf(c.Pktable), partitioned: info.partitioned[t]}
	for _, n := range c.FkAttrs {
		fk.cols = append(fk.cols, n.GetString_().GetSval())
	}
	for _, n := range c.PkAttrs {
		fk.refCols = append(fk.refCols, n.GetString_().GetSval())
	}
	if len(fk.refCols) == 0 {
		if fk.refCols = info.pks[fk.ref]; len(fk.refCols) == 0 {
			fk.refCols = info.pks[info.root(fk.ref)]
		}
	}
	if c.SkipValidation || fk.partitioned {
		// Added as it is: NOT VALID on the source stays so; on a
		// partitioned table it is added valid, and may fail like a
		// validation.
		return []*Statement{{SQL: sql, Kind: "foreign key", Phase: PhasePost, Stage: StageConstraints, Schema: schema, Table: table, fk: fk}}
	}
	rel := quoteQualified(schema, table)
	return []*Statement{
		{SQL: strings.TrimRight(strings.TrimSpace(sql), ";") + " NOT VALID", Kind: "foreign key", Phase: PhasePost, Stage: StageConstraints, Schema: schema, Table: table, fk: fk},
		{SQL: fmt.Sprintf("ALTER TABLE ONLY %s VALIDATE CONSTRAINT %s", rel, quoteIdent(c.Conname)), Kind: "validate foreign key", Phase: PhasePost, Stage: StageValidate, Schema: schema, Table: table, fk: fk,
			Exists: &Check{
				SQL:  `SELECT COALESCE((SELECT convalidated FROM pg_constraint WHERE conname = $1 AND conrelid = to_regclass($2)), false)`,
				Args: []any{c.Conname, rel},
			}},
	}
}

func identList(nodes []*pg_query.Node) string {
	parts := make([]string, 0, len(nodes))
	for _, n := range nodes {
		parts = append(parts, quoteIdent(n.GetString_().GetSval()))
	}
	return strings.Join(parts, ", ")
}

// quoteIdent double-quotes an identifier (always: exact, and safe).
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// quoteQualified renders schema.name, both quoted.
func quoteQualified(schema, name string) string { return quoteIdent(schema) + "." + quoteIdent(name) }

// ownedByExists checks, for ALTER SEQUENCE ... OWNED BY table.column alone
// (as pg_dump writes it), that the sequence is owned by that column; nil
// for any other ALTER SEQUENCE.
func ownedByExists(s *pg_query.AlterSeqStmt, seq string) *Check {
	if len(s.Options) != 1 {
		return nil
	}
	de := s.Options[0].GetDefElem()
	if de == nil || de.Defname != "owned_by" {
		return nil
	}
	var names []string
	for _, n := range de.GetArg().GetList().GetItems() {
		names = append(names, n.GetString_().GetSval())
	}
	var table, column string
	switch len(names) {
	case 2:
		table, column = quoteQualified("public", names[0]), names[1]
	case 3:
		table, column = quoteQualified(names[0], names[1]), names[2]
	default:
		return nil // OWNED BY NONE
	}
	return &Check{
		SQL: `SELECT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
			WHERE d.classid = 'pg_class'::regclass AND d.objid = to_regclass($1) AND d.refclassid = 'pg_class'::regclass
			AND d.refobjid = to_regclass($2) AND a.attname = $3 AND d.deptype = 'a')`,
		Args: []any{seq, table, column},
	}
}

// relationExists checks that a relation of one of the given kinds is there.
// A relation of another kind under the same name is a conflict the CREATE
// then reports, rather than something silently taken as applied.
func relationExists(schema, name string, kinds ...string) *Check {
	return &Check{
		SQL:  `SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass($1) AND relkind::text = ANY($2))`,
		Args: []any{quoteQualified(schema, name), kinds},
	}
}

// typeExists checks for a type of the given typtype (e enum, c composite,
// d domain, r range).
func typeExists(schema, name, typtype string) *Check {
	return &Check{
		SQL:  `SELECT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $1 AND t.typname = $2 AND t.typtype = $3)`,
		Args: []any{schema, name, typtype},
	}
}

func typeStatement(st []*Statement, names []*pg_query.Node, typtype string) []*Statement {
	var parts []string
	for _, n := range names {
		parts = append(parts, n.GetString_().GetSval())
	}
	schema, name := "public", ""
	switch len(parts) {
	case 1:
		name = parts[0]
	case 2:
		schema, name = parts[0], parts[1]
	default:
		return st
	}
	st[0].Exists = typeExists(schema, name, typtype)
	return st
}
