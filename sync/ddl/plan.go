package ddl

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/copier"
)

// Rules are what turning a captured statement into a destination's
// statements needs to know of the migration.
type Rules struct {
	// Destination is the cluster the statements run on, whose sharding
	// rules place the tables.
	Destination *catalog.Cluster
	// Publication is the route's publication on the source.
	Publication string
	// Widen applies schema sync's widening of generated integer keys to
	// bigint (the forward direction; the old database keeps its types).
	Widen bool
}

// Step is one statement run on every destination shard.
type Step struct {
	SQL string
	// Kind names what it does, for SHOW DDL and messages.
	Kind string
	// Outside: the statement cannot run inside a transaction block
	// (CONCURRENTLY). It then runs alone, and Present (a query answering
	// one boolean) tells whether its effect is already there, so that a
	// run cut short by a crash is not repeated; Leftover (a query
	// answering one boolean) tells whether a build cut short left an
	// invalid object, which Cleanup removes first.
	Outside           bool
	Present, Leftover string
	Cleanup           string
	// Optional: a failure leaves the shard as it was and is reported (a
	// foreign key that crosses shards is left NOT VALID, as SCHEMA_SYNC
	// POST leaves it).
	Optional bool
}

// Action is what a captured statement does on the destination shards.
type Action struct {
	// Statement is the statement as the source ran it.
	Statement Stmt
	// Steps run in order on every shard, with the statement's search_path.
	Steps []Step
	// Skip, when set, says why nothing runs (a subscription, a command of
	// an extension's script, a part of a DO block already applied).
	Skip string
	// Recopy lists tables (schema.name) whose rows the stream must copy
	// again from the source at a new snapshot: they joined the publication
	// with rows the stream never carried.
	Recopy []string
	// Outside tells that the steps run outside a transaction block.
	Outside bool
}

// UncarriableError is a captured statement that cannot be applied on the
// shards: the task stops on it.
type UncarriableError struct {
	Statement string
	Reason    string
	Advice    string
}

func (e *UncarriableError) Error() string {
	return fmt.Sprintf("DDL statement cannot be carried to the shards: %s: %s; %s", abbreviate(e.Statement), e.Reason, e.Advice)
}

// Plan turns a captured statement into what runs on the destination
// shards. dst is a connection to destination shard 0 whose search_path is
// the statement's (see Captured.SearchPath), inside the transaction the
// statement will run in when it runs in one; src, when not nil, is a
// connection to the source shard, for the source's column types.
func Plan(ctx context.Context, c *Captured, rules Rules, dst, src *pgx.Conn) (*Action, error) {
	if c.Error != "" {
		return nil, &UncarriableError{Statement: c.Query, Reason: "the source's event trigger failed to record it (" + c.Error + ")",
			Advice: "apply the statement on every shard by hand and mark it applied, or stop the migration (ABORT) and run RESHARD again"}
	}
	st, inside, err := c.Statement()
	if err != nil {
		var reason string
		if errors.Is(err, ErrNotFound) {
			reason = err.Error()
		} else {
			reason = "it does not parse: " + err.Error()
		}
		return nil, &UncarriableError{Statement: c.Query, Reason: reason,
			Advice: "run each DDL statement as a query of its own; to go on, apply it on every shard by hand and mark it applied"}
	}
	a := &Action{Statement: st}
	p := &planner{ctx: ctx, c: c, rules: rules, dst: dst, src: src, a: a}
	if inside {
		return p.insideCode()
	}
	if err := p.plan(); err != nil {
		return nil, err
	}
	for _, s := range a.Steps {
		if s.Outside {
			a.Outside = true
		}
	}
	return a, nil
}

// planner is one statement's transformation.
type planner struct {
	ctx   context.Context
	c     *Captured
	rules Rules
	dst   *pgx.Conn
	src   *pgx.Conn
	a     *Action
}

func (p *planner) asIs(kind string) {
	p.a.Steps = append(p.a.Steps, Step{SQL: p.a.Statement.SQL, Kind: kind})
}

func (p *planner) uncarriable(reason, advice string) error {
	return &UncarriableError{Statement: p.a.Statement.SQL, Reason: reason, Advice: advice}
}

// insideCode handles DDL a DO block (or a function) ran: a DO block that
// only runs DDL is run once on the shards (with its first command); one
// that also writes rows cannot be, since the stream carries those rows.
func (p *planner) insideCode() (*Action, error) {
	st := p.a.Statement
	do := st.Node.GetDoStmt()
	if do == nil {
		return nil, p.uncarriable("the DDL ran inside a function or procedure called by it, which cannot be run again on the shards (it may also write rows the stream carries)",
			"run the DDL as plain statements; to go on, apply it on every shard by hand and mark it applied")
	}
	if writes, word := writesRows(do); writes {
		return nil, p.uncarriable(fmt.Sprintf("the DDL ran inside a DO block that also writes rows (%s), which the stream carries on its own", word),
			"run the DDL as plain statements; to go on, apply it on every shard by hand and mark it applied")
	}
	if p.c.Nth > 1 {
		p.a.Skip = "a later command of a DO block, applied with its first"
		return p.a, nil
	}
	p.asIs("DO block")
	return p.a, nil
}

// writesRows tells whether a DO block's body has statements that write
// rows (or run dynamic SQL, which could).
func writesRows(do *pg_query.DoStmt) (bool, string) {
	var body string
	for _, a := range do.Args {
		if de := a.GetDefElem(); de != nil && de.Defname == "as" {
			body = de.GetArg().GetString_().GetSval()
		}
	}
	res, err := pg_query.Scan(body)
	if err != nil {
		return true, "a body that does not scan"
	}
	for _, t := range res.Tokens {
		word := strings.ToLower(body[t.Start:t.End])
		switch word {
		case "insert", "update", "delete", "merge", "copy", "truncate", "execute", "perform", "call":
			return true, strings.ToUpper(word)
		}
	}
	return false, ""
}

func (p *planner) plan() error {
	st := p.a.Statement
	switch s := st.Node.Node.(type) {
	case *pg_query.Node_CreateSubscriptionStmt, *pg_query.Node_AlterSubscriptionStmt, *pg_query.Node_DropSubscriptionStmt:
		p.a.Skip = "subscriptions are not carried to the shards"
		return nil
	case *pg_query.Node_CreateExtensionStmt, *pg_query.Node_AlterExtensionStmt, *pg_query.Node_AlterExtensionContentsStmt:
		if !strings.HasSuffix(p.c.Tag, "EXTENSION") {
			p.a.Skip = "a command of the extension's script: the extension's own statement creates it"
			return nil
		}
		p.asIs("extension")
		return nil
	case *pg_query.Node_CreateStmt:
		return p.createTable(s.CreateStmt)
	case *pg_query.Node_IndexStmt:
		return p.createIndex(s.IndexStmt)
	case *pg_query.Node_AlterTableStmt:
		return p.alterTable(s.AlterTableStmt)
	case *pg_query.Node_RenameStmt:
		return p.rename(s.RenameStmt)
	case *pg_query.Node_AlterObjectSchemaStmt:
		return p.setSchema(s.AlterObjectSchemaStmt)
	case *pg_query.Node_DropStmt:
		return p.drop(s.DropStmt)
	case *pg_query.Node_AlterPublicationStmt:
		return p.alterPublication(s.AlterPublicationStmt)
	case *pg_query.Node_CreateTableAsStmt:
		return p.createTableAs(s.CreateTableAsStmt.GetInto(), s.CreateTableAsStmt.Objtype == pg_query.ObjectType_OBJECT_MATVIEW)
	case *pg_query.Node_SelectStmt:
		return p.createTableAs(s.SelectStmt.IntoClause, false)
	}
	p.asIs(strings.ToLower(TagOf(st.Node)))
	return nil
}

// column is a destination column: its name and type.
type column struct {
	name, typ string // typ: pg_type.typname (int4, int8, text, ...)
}

// relation is a table on the destination as the statement names it.
type relation struct {
	schema, name string
	kind         string // pg_class.relkind ("" when absent)
	columns      []column
}

func (r *relation) qualified() string { return pgx.Identifier{r.schema, r.name}.Sanitize() }

// display is the relation's name for messages: schema.name, each part
// quoted only when it needs to be.
func (r *relation) display() string { return displayIdent(r.schema) + "." + displayIdent(r.name) }

// displayIdent quotes an identifier for a message only when it is not a
// plain lower-case name.
func displayIdent(s string) string {
	plain := s != ""
	for i, c := range s {
		if !(c >= 'a' && c <= 'z' || c == '_' || i > 0 && (c >= '0' && c <= '9' || c == '$')) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	return pgx.Identifier{s}.Sanitize()
}

func (r *relation) names() []string {
	out := make([]string, len(r.columns))
	for i, c := range r.columns {
		out[i] = c.name
	}
	return out
}

func (r *relation) col(name string) *column {
	for i := range r.columns {
		if r.columns[i].name == name {
			return &r.columns[i]
		}
	}
	return nil
}

// lookup reads a table as the statement names it (through its
// search_path) on destination shard 0. A table that is not there has no
// kind.
func (p *planner) lookup(rv *pg_query.RangeVar) (*relation, error) {
	if rv == nil {
		return nil, fmt.Errorf("statement names no relation")
	}
	name := pgx.Identifier{rv.Relname}.Sanitize()
	if rv.Schemaname != "" {
		name = pgx.Identifier{rv.Schemaname, rv.Relname}.Sanitize()
	}
	return p.lookupName(p.dst, name)
}

func (p *planner) lookupName(conn *pgx.Conn, name string) (*relation, error) {
	r := &relation{}
	err := conn.QueryRow(p.ctx, `SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1)`, name).Scan(&r.schema, &r.name, &r.kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	rows, err := conn.Query(p.ctx, `SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum`, name)
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var c column
		if err := rows.Scan(&c.name, &c.typ); err != nil {
			return nil, err
		}
		r.columns = append(r.columns, c)
	}
	return r, rows.Err()
}

// placement is how the sharding rules place a table.
type placement struct {
	omni   bool
	column string
}

func (pl placement) String() string {
	if pl.omni {
		return "copied whole to every shard (omni)"
	}
	return "sharded by " + pl.column
}

func (p *planner) place(schemaName, name string, cols []string) (placement, error) {
	// A partition follows the rules naming the tables above it.
	ancestors, err := copier.Ancestors(p.ctx, p.dst, pgx.Identifier{schemaName, name}.Sanitize())
	if err != nil {
		ancestors = nil // a table not there yet (renamed): none
	}
	_, col, err := copier.RouteColumns(schemaName, name, ancestors, cols, nil, p.rules.Destination)
	if err != nil {
		return placement{}, err
	}
	if col < 0 {
		return placement{omni: true}, nil
	}
	return placement{column: cols[col]}, nil
}

// keepsPlacement checks that a change of a published table's name or
// columns leaves it placed as it was: its rows sit on the shards by its
// placement, and a table that would be placed otherwise (its sharding
// column dropped or renamed, a sharding column added to an omni table, a
// rename out of its rule) would need its rows moved.
func (p *planner) keepsPlacement(r *relation, newSchema, newName string, newCols []string, renamed map[string]string) error {
	if r.kind == "" || len(r.columns) == 0 {
		return nil
	}
	before, err := p.place(r.schema, r.name, r.names())
	if err != nil {
		return nil // the table is not placed by the rules today either
	}
	after, err := p.place(newSchema, newName, newCols)
	if err != nil {
		return p.uncarriable(fmt.Sprintf("table %s is %s; after it the sharding rules cannot place it (%v)", r.display(), before, err),
			"leave the sharding column as it is until the migration is finished (after CUTOVER), or change the [[sharded_tables]] rule and start the migration again")
	}
	same := before.omni == after.omni
	if same && !before.omni {
		want := before.column
		if n, ok := renamed[want]; ok {
			want = n
		}
		same = want == after.column && renamed[before.column] == ""
	}
	if !same {
		return p.uncarriable(fmt.Sprintf("table %s is %s on the shards; after it the sharding rules would place it %s", r.display(), before, after),
			"leave the sharding column (and the table's name) as they are until the migration is finished (after CUTOVER), or stop the migration (ABORT), change the schema, and run RESHARD again")
	}
	return nil
}

func (p *planner) createTable(cs *pg_query.CreateStmt) error {
	if p.rules.Widen && cs.Partbound == nil && len(cs.InhRelations) == 0 {
		sql, extra, err := p.widenTable(cs)
		if err != nil {
			return err
		}
		p.a.Steps = append(p.a.Steps, Step{SQL: sql, Kind: "table"})
		p.a.Steps = append(p.a.Steps, extra...)
		return nil
	}
	p.asIs("table")
	return nil
}

// createTableAs creates the table on the shards without rows: the rows the
// source's statement wrote reach them through the stream.
func (p *planner) createTableAs(into *pg_query.IntoClause, matview bool) error {
	if matview || into == nil {
		p.asIs("materialized view")
		return nil
	}
	if into.SkipData {
		p.asIs("table")
		return nil
	}
	st := p.a.Statement
	into.SkipData = true
	sql, err := deparse(st)
	into.SkipData = false
	if err != nil {
		return p.uncarriable("it cannot be rewritten WITH NO DATA ("+err.Error()+")", "create the table on every shard by hand and mark the statement applied")
	}
	p.a.Steps = append(p.a.Steps, Step{SQL: sql, Kind: "table (rows through the stream)"})
	return nil
}

func abbreviate(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
