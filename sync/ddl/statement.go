package ddl

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/reshard/reshard/sync/keywords"
)

// Captured is one statement the event triggers recorded: a row of
// reshard.ddl.
type Captured struct {
	// ID is the row's id on its source shard (ids of different source
	// shards are unrelated).
	ID int64
	// CapturedAt is when it ran, as the source wrote it.
	CapturedAt string
	// Tag is the command tag (CREATE TABLE, ALTER TABLE, ...).
	Tag string
	// ObjectType is the type of the first object touched.
	ObjectType string
	// Objects are the objects it created, altered or dropped.
	Objects []Object
	// Query is the client query the statement was part of (all of it:
	// current_query()); Nth is the statement's place among the DDL
	// commands of that query, from 1.
	Query string
	Nth   int
	// SearchPath is the search_path it ran with; User the session user.
	SearchPath, User string
	// SourceMajor is the source server's major version (0: unknown). A
	// query from a server older than PostgreSQL 17 may name things by
	// words 17 made keywords (a parameter named json): they are quoted
	// before the query is parsed, and in the statement the shards run.
	SourceMajor int
	// Error is set when the trigger failed to record the statement.
	Error string
}

// Object is one object a statement touched.
type Object struct {
	Type     string `json:"type"`
	Schema   string `json:"schema"`
	Identity string `json:"identity"`
	// Name is set for dropped objects; Tag for created or altered ones.
	Name string `json:"name"`
	Tag  string `json:"tag"`
	// Original marks an object the statement dropped itself (not by
	// dependency).
	Original bool `json:"original"`
}

// Decode builds a Captured from a reshard.ddl row: get returns a column's
// value in text form, and whether it is NULL.
func Decode(get func(column string) (string, bool)) (*Captured, error) {
	c := &Captured{}
	str := func(col string) string {
		v, null := get(col)
		if null {
			return ""
		}
		return v
	}
	id, null := get("id")
	if null {
		return nil, fmt.Errorf("captured statement without an id")
	}
	var err error
	if c.ID, err = strconv.ParseInt(id, 10, 64); err != nil {
		return nil, fmt.Errorf("captured statement id %q: %w", id, err)
	}
	c.CapturedAt, c.Tag, c.ObjectType = str("captured_at"), str("command_tag"), str("object_type")
	c.Query, c.SearchPath, c.User, c.Error = str("statement"), str("search_path"), str("username"), str("error")
	c.Nth = 1
	if n := str("nth"); n != "" {
		if c.Nth, err = strconv.Atoi(n); err != nil {
			return nil, fmt.Errorf("captured statement %d: nth %q: %w", c.ID, n, err)
		}
	}
	if o := str("objects"); o != "" {
		if err := json.Unmarshal([]byte(o), &c.Objects); err != nil {
			return nil, fmt.Errorf("captured statement %d: objects: %w", c.ID, err)
		}
	}
	return c, nil
}

// Stmt is one statement of a captured query.
type Stmt struct {
	// SQL is its text, as the source ran it (with the words newer servers
	// made keywords quoted: split).
	SQL  string
	Node *pg_query.Node
	// Index is its place in the query (from 0), for messages.
	Index int
	// Offset is where SQL starts in the query: node locations are offsets
	// into the query.
	Offset int
	// version is the parser's, which a rewritten Node deparses with.
	version int32
}

// notDDL are statements that fire no ddl_command_end event: they do not
// count among a query's DDL commands. DO blocks and function calls can run
// DDL inside; they are told apart where they matter.
func notDDL(n *pg_query.Node) bool {
	if s := n.GetSelectStmt(); s != nil && s.IntoClause != nil {
		return false // SELECT ... INTO creates a table
	}
	switch n.Node.(type) {
	case *pg_query.Node_SelectStmt, *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt, *pg_query.Node_DeleteStmt,
		*pg_query.Node_MergeStmt, *pg_query.Node_TransactionStmt, *pg_query.Node_VariableSetStmt, *pg_query.Node_VariableShowStmt,
		*pg_query.Node_CopyStmt, *pg_query.Node_ExplainStmt, *pg_query.Node_VacuumStmt, *pg_query.Node_LockStmt,
		*pg_query.Node_TruncateStmt, *pg_query.Node_NotifyStmt, *pg_query.Node_ListenStmt, *pg_query.Node_UnlistenStmt,
		*pg_query.Node_DoStmt, *pg_query.Node_CallStmt, *pg_query.Node_PrepareStmt, *pg_query.Node_ExecuteStmt,
		*pg_query.Node_DeallocateStmt, *pg_query.Node_DeclareCursorStmt, *pg_query.Node_FetchStmt, *pg_query.Node_ClosePortalStmt,
		*pg_query.Node_CheckPointStmt, *pg_query.Node_DiscardStmt, *pg_query.Node_LoadStmt, *pg_query.Node_ClusterStmt,
		*pg_query.Node_ReindexStmt, *pg_query.Node_CreatedbStmt, *pg_query.Node_DropdbStmt, *pg_query.Node_AlterDatabaseStmt,
		*pg_query.Node_AlterDatabaseSetStmt, *pg_query.Node_AlterDatabaseRefreshCollStmt, *pg_query.Node_CreateRoleStmt,
		*pg_query.Node_AlterRoleStmt, *pg_query.Node_AlterRoleSetStmt, *pg_query.Node_DropRoleStmt, *pg_query.Node_GrantRoleStmt,
		*pg_query.Node_CreateTableSpaceStmt, *pg_query.Node_DropTableSpaceStmt, *pg_query.Node_AlterTableSpaceOptionsStmt,
		*pg_query.Node_CreateEventTrigStmt, *pg_query.Node_AlterEventTrigStmt, *pg_query.Node_AlterSystemStmt,
		*pg_query.Node_ConstraintsSetStmt, *pg_query.Node_ReassignOwnedStmt:
		return true
	}
	return false
}

// runsCode tells statements that can run DDL from inside a function.
func runsCode(n *pg_query.Node) bool {
	switch s := n.Node.(type) {
	case *pg_query.Node_DoStmt, *pg_query.Node_CallStmt:
		return true
	case *pg_query.Node_SelectStmt:
		return len(s.SelectStmt.TargetList) > 0 // SELECT f(...)
	}
	return false
}

// ErrNotFound marks a captured row whose statement cannot be found in its
// query.
var ErrNotFound = fmt.Errorf("statement not found in the captured query")

// Statement finds the captured statement in its query: the Nth DDL
// command. A query that is a DO block (or calls a function) that ran the
// DDL is returned whole, with inside set.
func (c *Captured) Statement() (st Stmt, inside bool, err error) {
	stmts, err := split(c.Query, c.SourceMajor)
	if err != nil {
		return Stmt{}, false, fmt.Errorf("parse the captured query: %w", err)
	}
	var ddl, code, blocks []Stmt
	for _, s := range stmts {
		switch {
		case !notDDL(s.Node):
			ddl = append(ddl, s)
		case runsCode(s.Node):
			code = append(code, s)
			if s.Node.GetSelectStmt() == nil {
				blocks = append(blocks, s)
			}
		}
	}
	switch {
	case len(ddl) == 0 && len(code) == 1:
		// The DDL ran inside a DO block or a function.
		return code[0], true, nil
	case len(ddl) == 0:
		return Stmt{}, false, fmt.Errorf("%w: the query has no DDL statement of its own (it ran inside one of its DO blocks or function calls)", ErrNotFound)
	case len(blocks) > 0:
		return Stmt{}, false, fmt.Errorf("%w: the query mixes DDL statements with DO blocks or procedure calls that may run DDL too, so which statement this row records cannot be told", ErrNotFound)
	}
	if len(ddl) == 1 {
		// Nested commands (an extension's script, a statement that runs
		// others) all name the query's one statement.
		return ddl[0], false, nil
	}
	if c.Nth >= 1 && c.Nth <= len(ddl) {
		s := ddl[c.Nth-1]
		if t := TagOf(s.Node); t == "" || t == c.Tag {
			return s, false, nil
		}
	}
	// The count was thrown off (a statement that fires more than once):
	// take the only statement with the tag.
	var same []Stmt
	for _, s := range ddl {
		if TagOf(s.Node) == c.Tag {
			same = append(same, s)
		}
	}
	if len(same) == 1 {
		return same[0], false, nil
	}
	return Stmt{}, false, fmt.Errorf("%w: %s #%d among %d DDL statements", ErrNotFound, c.Tag, c.Nth, len(ddl))
}

// split parses a query a server of major version major ran into its
// statements with their texts (keywords.Parse: with the words newer
// servers made keywords quoted).
func split(query string, major int) ([]Stmt, error) {
	tree, query, err := keywords.Parse(query, major)
	if err != nil {
		return nil, err
	}
	var out []Stmt
	for i, raw := range tree.Stmts {
		start := int(raw.StmtLocation)
		end := len(query)
		if raw.StmtLen > 0 {
			end = start + int(raw.StmtLen)
		}
		if start < 0 || end > len(query) || start > end {
			return nil, fmt.Errorf("statement %d: range %d..%d outside the query", i, start, end)
		}
		text := query[start:end]
		trimmed := strings.TrimLeft(text, " \t\r\n")
		offset := start + len(text) - len(trimmed)
		sql := strings.TrimRight(trimmed, " \t\r\n")
		sql = strings.TrimRight(strings.TrimSuffix(sql, ";"), " \t\r\n")
		out = append(out, Stmt{SQL: sql, Node: raw.Stmt, Index: i, Offset: offset, version: tree.Version})
	}
	return out, nil
}

// TagOf is the command tag PostgreSQL reports for a statement, for the
// statements whose tag follows from their kind ("" for the others).
func TagOf(n *pg_query.Node) string {
	obj := func(o pg_query.ObjectType) string {
		s := strings.TrimPrefix(o.String(), "OBJECT_")
		switch s {
		case "MATVIEW":
			s = "MATERIALIZED VIEW"
		case "FOREIGN_TABLE":
			s = "FOREIGN TABLE"
		case "TABCONSTRAINT":
			s = "TABLE"
		}
		return strings.ReplaceAll(s, "_", " ")
	}
	switch s := n.Node.(type) {
	case *pg_query.Node_CreateStmt:
		return "CREATE TABLE"
	case *pg_query.Node_SelectStmt:
		if s.SelectStmt.IntoClause != nil {
			return "SELECT INTO"
		}
	case *pg_query.Node_CreateTableAsStmt:
		if s.CreateTableAsStmt.Objtype == pg_query.ObjectType_OBJECT_MATVIEW {
			return "CREATE MATERIALIZED VIEW"
		}
		return "CREATE TABLE AS"
	case *pg_query.Node_IndexStmt:
		return "CREATE INDEX"
	case *pg_query.Node_AlterTableStmt:
		return "ALTER " + obj(s.AlterTableStmt.Objtype)
	case *pg_query.Node_DropStmt:
		return "DROP " + obj(s.DropStmt.RemoveType)
	case *pg_query.Node_RenameStmt:
		t := s.RenameStmt.RenameType
		switch t {
		case pg_query.ObjectType_OBJECT_COLUMN, pg_query.ObjectType_OBJECT_TABCONSTRAINT:
			t = s.RenameStmt.RelationType
		}
		return "ALTER " + obj(t)
	case *pg_query.Node_AlterObjectSchemaStmt:
		return "ALTER " + obj(s.AlterObjectSchemaStmt.ObjectType)
	case *pg_query.Node_CreateEnumStmt, *pg_query.Node_CompositeTypeStmt, *pg_query.Node_CreateRangeStmt:
		return "CREATE TYPE"
	case *pg_query.Node_AlterEnumStmt:
		return "ALTER TYPE"
	case *pg_query.Node_CreateSeqStmt:
		return "CREATE SEQUENCE"
	case *pg_query.Node_AlterSeqStmt:
		return "ALTER SEQUENCE"
	case *pg_query.Node_ViewStmt:
		return "CREATE VIEW"
	case *pg_query.Node_CreateFunctionStmt:
		if s.CreateFunctionStmt.IsProcedure {
			return "CREATE PROCEDURE"
		}
		return "CREATE FUNCTION"
	case *pg_query.Node_CreateSchemaStmt:
		return "CREATE SCHEMA"
	case *pg_query.Node_CreateExtensionStmt:
		return "CREATE EXTENSION"
	case *pg_query.Node_CreateTrigStmt:
		return "CREATE TRIGGER"
	case *pg_query.Node_CommentStmt:
		return "COMMENT"
	case *pg_query.Node_GrantStmt:
		if s.GrantStmt.IsGrant {
			return "GRANT"
		}
		return "REVOKE"
	case *pg_query.Node_CreateDomainStmt:
		return "CREATE DOMAIN"
	case *pg_query.Node_CreatePublicationStmt:
		return "CREATE PUBLICATION"
	case *pg_query.Node_AlterPublicationStmt:
		return "ALTER PUBLICATION"
	case *pg_query.Node_CreateSubscriptionStmt:
		return "CREATE SUBSCRIPTION"
	case *pg_query.Node_AlterSubscriptionStmt:
		return "ALTER SUBSCRIPTION"
	case *pg_query.Node_DropSubscriptionStmt:
		return "DROP SUBSCRIPTION"
	case *pg_query.Node_RefreshMatViewStmt:
		return "REFRESH MATERIALIZED VIEW"
	}
	return ""
}
