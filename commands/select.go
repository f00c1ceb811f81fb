package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"time"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// More SQLSTATEs the SELECTs of SQL clients can get.
const (
	CodeUndefinedTable    = "42P01"
	CodeUndefinedColumn   = "42703"
	CodeUndefinedFunction = "42883"
	CodeInvalidText       = "22P02" // invalid_text_representation
	CodeNumericOutOfRange = "22003"
	CodeDivisionByZero    = "22012"
	CodeDatatypeMismatch  = "42804"
)

// Select is a SELECT that SQL clients and BI tools send when they connect
// or test a connection, answered by the admin server itself with the values
// and types PostgreSQL would give:
//
//   - constant expressions: SELECT 1, version(), current_database(),
//     current_setting('server_version_num')::int / 100, now(), current_user,
//     pg_backend_pid(), with casts, arithmetic, comparisons and AND/OR/NOT;
//   - probes of the system catalogs a client reads to list schemas, tables,
//     columns, types or extensions (pg_class, pg_namespace, pg_extension,
//     information_schema.tables, ...): the admin database holds none, so the
//     answer has the probe's columns and no rows (an aggregate without GROUP
//     BY gives its one row: count 0).
//
// Anything else (a table that is not a catalog, a function reshard does not
// know, a catalog it does not model) is refused with an error naming it.
type Select struct {
	// Text is the statement as sent.
	Text string
	// cols are the result columns.
	cols []Column
	// exprs evaluate the one row of a constant SELECT; nil for a probe.
	exprs []compiled
	// probe marks a catalog probe: no rows, or aggRow when the targets are
	// aggregates without GROUP BY.
	probe  bool
	aggRow []compiled
}

// Keyword implements Command.
func (Select) Keyword() string { return "SELECT" }

// String renders the statement as sent.
func (s Select) String() string { return s.Text }

func (s Select) columns() []Column { return s.cols }

// Session is what a statement may ask about its connection.
type Session struct {
	// User and Database are the login's; ApplicationName the client's.
	User, Database, ApplicationName string
	// BackendPID is the process id the server gave the connection.
	BackendPID int32
}

type sessionKey struct{}

// WithSession returns ctx carrying the connection's session.
func WithSession(ctx context.Context, s Session) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

// session returns the connection's session, or the admin login's for a
// command run from the CLI.
func (e *Executor) session(ctx context.Context) Session {
	if s, ok := ctx.Value(sessionKey{}).(Session); ok {
		return s
	}
	return Session{User: e.Catalog.Config.Admin.User, Database: e.Catalog.Config.Admin.Name}
}

// started is when this process started: pg_postmaster_start_time().
var started = time.Now()

// evalEnv is what expressions read when they run.
type evalEnv struct {
	session Session
	now     time.Time
}

// compiled is a type-checked expression.
type compiled struct {
	typ  Type
	eval func(env *evalEnv) (any, error)
	// null marks the untyped NULL literal, which takes the type its place
	// needs (a boolean in AND, ...), as PostgreSQL's unknown type does.
	null bool
}

// typeNumeric is a numeric constant (1.5): only a cast's argument, as
// the admin server has no numeric results.
const typeNumeric Type = 1700

func (e *Executor) runSelect(ctx context.Context, s Select) (*Result, error) {
	env := &evalEnv{session: e.session(ctx), now: time.Now()}
	res := &Result{Columns: s.cols, Tag: "SELECT 0"}
	exprs := s.exprs
	if s.probe {
		exprs = s.aggRow
	}
	if exprs == nil {
		return res, nil
	}
	row := make([]any, len(exprs))
	for i, c := range exprs {
		v, err := c.eval(env)
		if err == errNoRow {
			return res, nil
		}
		if err != nil {
			return nil, err
		}
		row[i] = v
	}
	res.Rows = [][]any{row}
	res.Tag = "SELECT 1"
	return res, nil
}

// parseSelect compiles a SELECT statement, or says why it cannot be
// answered. ok is false when text is not one SELECT (the caller's error).
func parseSelect(text string) (Select, *Error, bool) {
	tree, err := pg_query.Parse(text)
	if err != nil || len(tree.Stmts) != 1 {
		return Select{}, nil, false
	}
	sel := tree.Stmts[0].GetStmt().GetSelectStmt()
	if sel == nil {
		return Select{}, nil, false
	}
	s := Select{Text: text}
	if sel.IntoClause != nil || sel.LockingClause != nil {
		return s, Errorf(CodeFeatureNotSupported, "SELECT INTO and SELECT FOR UPDATE are not supported by reshard's admin server"), true
	}
	relations, ctes := relationsOf(text)
	if len(relations) == 0 && len(sel.FromClause) > 0 {
		return s, Errorf(CodeFeatureNotSupported, "SELECT from a subquery or a function is not supported by reshard's admin server").
			WithHint("it answers constant SELECTs (SELECT 1, version(), current_setting(...)), probes of the system catalogs and the SHOW views"), true
	}
	if len(relations) > 0 || sel.Op != pg_query.SetOperation_SETOP_NONE {
		return s, probe(&s, sel, relations, ctes), true
	}
	if len(sel.ValuesLists) > 0 {
		return s, Errorf(CodeFeatureNotSupported, "VALUES lists are not supported by reshard's admin server"), true
	}
	for _, t := range sel.TargetList {
		rt := t.GetResTarget()
		c, err := compile(rt.Val)
		if err != nil {
			return s, err, true
		}
		if c.typ == typeNumeric {
			return s, Errorf(CodeFeatureNotSupported, "numeric values are not supported by reshard's admin server").
				WithHint("cast to float8 or an integer type"), true
		}
		s.cols = append(s.cols, Column{Name: columnName(rt), Type: c.typ})
		s.exprs = append(s.exprs, c)
	}
	if sel.WhereClause != nil {
		// SELECT 1 WHERE false: the row only if the condition holds.
		cond, err := compile(sel.WhereClause)
		if err != nil {
			return s, err, true
		}
		if cond.typ != TypeBool {
			return s, Errorf(CodeDatatypeMismatch, "argument of WHERE must be type boolean, not type %s", FormatType(cond.typ)), true
		}
		s.exprs = filtered(s.exprs, cond)
	}
	return s, nil, true
}

// filtered makes exprs yield no row when cond is not true: the first
// expression's evaluation reports it with errNoRow.
func filtered(exprs []compiled, cond compiled) []compiled {
	if len(exprs) == 0 {
		return exprs
	}
	out := append([]compiled(nil), exprs...)
	first := out[0].eval
	out[0].eval = func(env *evalEnv) (any, error) {
		v, err := cond.eval(env)
		if err != nil {
			return nil, err
		}
		if v != true {
			return nil, errNoRow
		}
		return first(env)
	}
	return out
}

// errNoRow is a constant SELECT whose WHERE does not hold: no row.
var errNoRow = &Error{Code: "00000", Message: "no row"}

// relationsOf lists the relations a statement reads (schema-qualified as
// written) and the names of its common table expressions, walking
// pg_query's JSON form of the tree so that every subquery, join and CTE
// is seen.
func relationsOf(text string) (relations [][2]string, ctes map[string]bool) {
	js, err := pg_query.ParseToJSON(text)
	if err != nil {
		return nil, nil
	}
	var tree any
	if json.Unmarshal([]byte(js), &tree) != nil {
		return nil, nil
	}
	ctes = map[string]bool{}
	var walk func(any)
	walk = func(n any) {
		switch x := n.(type) {
		case map[string]any:
			if rv, ok := x["RangeVar"].(map[string]any); ok {
				schema, _ := rv["schemaname"].(string)
				rel, _ := rv["relname"].(string)
				relations = append(relations, [2]string{schema, rel})
			}
			if cte, ok := x["CommonTableExpr"].(map[string]any); ok {
				if name, ok := cte["ctename"].(string); ok {
					ctes[name] = true
				}
			}
			for _, v := range x {
				walk(v)
			}
		case []any:
			for _, v := range x {
				walk(v)
			}
		}
	}
	walk(tree)
	return relations, ctes
}

// emptyCatalogs are the catalog relations that describe a database's own
// objects (schemas, relations, columns, types, extensions, constraints,
// statistics): the admin database has none, so they are empty.
var emptyCatalogs = map[string]bool{
	"pg_catalog.pg_namespace": true, "pg_catalog.pg_class": true, "pg_catalog.pg_attribute": true,
	"pg_catalog.pg_attrdef": true, "pg_catalog.pg_type": true, "pg_catalog.pg_enum": true,
	"pg_catalog.pg_extension": true, "pg_catalog.pg_description": true, "pg_catalog.pg_index": true,
	"pg_catalog.pg_constraint": true, "pg_catalog.pg_inherits": true, "pg_catalog.pg_trigger": true,
	"pg_catalog.pg_proc": true, "pg_catalog.pg_depend": true, "pg_catalog.pg_sequence": true,
	"pg_catalog.pg_partitioned_table": true, "pg_catalog.pg_foreign_table": true,
	"pg_catalog.pg_publication": true, "pg_catalog.pg_am": true, "pg_catalog.pg_collation": true,
	"pg_catalog.pg_tables": true, "pg_catalog.pg_views": true, "pg_catalog.pg_matviews": true,
	"pg_catalog.pg_indexes": true, "pg_catalog.pg_sequences": true,
	"pg_catalog.pg_stat_user_tables": true, "pg_catalog.pg_statio_user_tables": true,
	"pg_catalog.pg_stat_all_tables": true, "pg_catalog.pg_statistic_ext": true,
	"information_schema.schemata": true, "information_schema.tables": true, "information_schema.columns": true,
	"information_schema.views": true, "information_schema.table_constraints": true,
	"information_schema.key_column_usage": true, "information_schema.referential_constraints": true,
	"information_schema.constraint_column_usage": true, "information_schema.routines": true,
	"information_schema.parameters": true, "information_schema.sequences": true,
	"information_schema.triggers": true, "information_schema.table_privileges": true,
	"information_schema.column_privileges": true, "information_schema.role_table_grants": true,
}

// catalogName resolves a relation as PostgreSQL's search path would for a
// catalog: pg_* names live in pg_catalog.
func catalogName(schema, rel string) string {
	if schema == "" && strings.HasPrefix(rel, "pg_") {
		schema = "pg_catalog"
	}
	return schema + "." + rel
}

// probe fills s for a catalog probe, or says why it cannot be answered.
func probe(s *Select, sel *pg_query.SelectStmt, relations [][2]string, ctes map[string]bool) *Error {
	for _, r := range relations {
		if r[0] == "" && ctes[r[1]] {
			continue
		}
		name := catalogName(r[0], r[1])
		if emptyCatalogs[name] {
			continue
		}
		if r[0] == "pg_catalog" || r[0] == "information_schema" || strings.HasPrefix(name, "pg_catalog.") {
			return Errorf(CodeFeatureNotSupported, "reshard's admin server does not answer queries on %s", name).
				WithHint("the admin database lists no schemas, tables or types; settings: SHOW <name> or SHOW CONFIG; views: %s", viewList())
		}
		e := Errorf(CodeUndefinedTable, "relation %q does not exist", strings.TrimPrefix(catalogName(r[0], r[1]), "."))
		if _, ok := views[strings.ToLower(r[1])]; ok {
			return e.WithHint("reshard's admin views are read with SHOW: SHOW %s", strings.ToUpper(r[1]))
		}
		return e.WithHint("the admin database has no tables: it answers admin commands and the SHOW views (%s)", viewList())
	}
	s.probe = true
	// The columns of a set operation are its first arm's.
	first := sel
	for first.Op != pg_query.SetOperation_SETOP_NONE {
		if first.Larg == nil {
			return Errorf(CodeFeatureNotSupported, "this set operation is not supported by reshard's admin server")
		}
		first = first.Larg
	}
	if len(first.FromClause) == 0 && sel.Op != pg_query.SetOperation_SETOP_NONE {
		return Errorf(CodeFeatureNotSupported, "a set operation with a constant arm is not supported by reshard's admin server")
	}
	aggregates := false
	for _, t := range first.TargetList {
		rt := t.GetResTarget()
		if rt.Val.GetColumnRef() != nil && isStar(rt.Val.GetColumnRef()) {
			return Errorf(CodeFeatureNotSupported, "SELECT * from the system catalogs is not supported by reshard's admin server").
				WithHint("name the columns")
		}
		s.cols = append(s.cols, Column{Name: columnName(rt), Type: guessType(rt.Val)})
		aggregates = aggregates || isAggregate(rt.Val)
	}
	if aggregates && len(first.GroupClause) == 0 && sel.Op == pg_query.SetOperation_SETOP_NONE {
		if first.HavingClause != nil {
			return Errorf(CodeFeatureNotSupported, "HAVING over the system catalogs is not supported by reshard's admin server")
		}
		// Aggregates over no rows: one row, count 0, the others NULL.
		for i, t := range first.TargetList {
			val := t.GetResTarget().Val
			switch {
			case isCount(val):
				s.aggRow = append(s.aggRow, constant(TypeInt8, int64(0)))
			case isAggregate(val):
				s.aggRow = append(s.aggRow, constant(s.cols[i].Type, nil))
			default:
				c, err := compile(val)
				if err != nil {
					return err
				}
				s.aggRow = append(s.aggRow, c)
			}
		}
	}
	return nil
}

func viewList() string {
	names := Views()
	for i, n := range names {
		names[i] = strings.ToUpper(n)
	}
	return strings.Join(names, ", ")
}

func isStar(ref *pg_query.ColumnRef) bool {
	return len(ref.Fields) > 0 && ref.Fields[len(ref.Fields)-1].GetAStar() != nil
}

var aggregateNames = map[string]bool{"count": true, "sum": true, "min": true, "max": true, "avg": true,
	"bool_and": true, "bool_or": true, "every": true, "string_agg": true, "array_agg": true, "json_agg": true, "jsonb_agg": true}

func isAggregate(n *pg_query.Node) bool {
	fn := n.GetFuncCall()
	return fn != nil && fn.Over == nil && aggregateNames[funcName(fn)]
}

func isCount(n *pg_query.Node) bool {
	fn := n.GetFuncCall()
	return fn != nil && fn.Over == nil && funcName(fn) == "count"
}

// catalogColumnTypes are the types of the catalog columns clients probe
// most; other columns of an empty probe are reported as text.
var catalogColumnTypes = map[string]Type{
	"oid": TypeOid, "relnamespace": TypeOid, "typnamespace": TypeOid, "enumtypid": TypeOid, "objoid": TypeOid,
	"classoid": TypeOid, "attrelid": TypeOid, "atttypid": TypeOid, "extnamespace": TypeOid,
	"nspname": TypeName, "relname": TypeName, "attname": TypeName, "typname": TypeName, "extname": TypeName,
	"schemaname": TypeName, "tablename": TypeName, "conname": TypeName, "proname": TypeName,
	"table_schema": TypeName, "table_name": TypeName, "column_name": TypeName, "schema_name": TypeName,
	"table_catalog": TypeName, "constraint_name": TypeName, "udt_name": TypeName, "udt_schema": TypeName,
	"attnum": TypeInt2, "ordinal_position": TypeInt4, "n_live_tup": TypeInt8, "relpages": TypeInt4,
	"attnotnull": TypeBool, "relhasindex": TypeBool, "indisprimary": TypeBool, "indisunique": TypeBool,
}

// guessType is the type of a catalog probe's column: a cast's, an
// aggregate's, a known catalog column's, or text.
func guessType(n *pg_query.Node) Type {
	switch {
	case n.GetTypeCast() != nil:
		if t, ok := castType(n.GetTypeCast().TypeName); ok {
			return t
		}
	case isCount(n):
		return TypeInt8
	case n.GetColumnRef() != nil:
		if t, ok := catalogColumnTypes[lastField(n.GetColumnRef())]; ok {
			return t
		}
	case n.GetBoolExpr() != nil || n.GetNullTest() != nil || n.GetSubLink() != nil && n.GetSubLink().SubLinkType == pg_query.SubLinkType_EXISTS_SUBLINK:
		return TypeBool
	}
	if c, err := compile(n); err == nil {
		return c.typ
	}
	return TypeText
}

func lastField(ref *pg_query.ColumnRef) string {
	if len(ref.Fields) == 0 {
		return ""
	}
	return ref.Fields[len(ref.Fields)-1].GetString_().GetSval()
}

func funcName(fn *pg_query.FuncCall) string {
	n := names(fn.Funcname)
	return strings.TrimPrefix(n, "pg_catalog.")
}

// columnName is PostgreSQL's name for a result column (FigureColname):
// the alias, a column's or function's name, a cast's argument's name or
// its type's, or ?column?.
func columnName(rt *pg_query.ResTarget) string {
	if rt.Name != "" {
		return rt.Name
	}
	name, _ := figureName(rt.Val)
	if name == "" {
		return "?column?"
	}
	return name
}

// figureName names an expression and says how strongly (2: a name, 1: a
// type's name, 0: none), as PostgreSQL's FigureColnameInternal does.
func figureName(n *pg_query.Node) (string, int) {
	switch {
	case n.GetColumnRef() != nil:
		if f := lastField(n.GetColumnRef()); f != "" {
			return f, 2
		}
	case n.GetFuncCall() != nil && len(n.GetFuncCall().Funcname) > 0:
		fn := n.GetFuncCall()
		return fn.Funcname[len(fn.Funcname)-1].GetString_().GetSval(), 2
	case n.GetTypeCast() != nil:
		tc := n.GetTypeCast()
		if name, strength := figureName(tc.Arg); strength > 1 {
			return name, strength
		}
		if tc.TypeName == nil || len(tc.TypeName.Names) == 0 {
			return "", 0
		}
		parts := tc.TypeName.Names
		return parts[len(parts)-1].GetString_().GetSval(), 1
	case n.GetSqlvalueFunction() != nil:
		return sqlValueNames[n.GetSqlvalueFunction().Op], 2
	case n.GetCaseExpr() != nil:
		return "case", 1
	case n.GetCoalesceExpr() != nil:
		return "coalesce", 2
	case n.GetSubLink() != nil && n.GetSubLink().SubLinkType == pg_query.SubLinkType_EXISTS_SUBLINK:
		return "exists", 2
	}
	return "", 0
}

var sqlValueNames = map[pg_query.SQLValueFunctionOp]string{
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_DATE:      "current_date",
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_TIMESTAMP: "current_timestamp",
	pg_query.SQLValueFunctionOp_SVFOP_LOCALTIMESTAMP:    "localtimestamp",
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_ROLE:      "current_role",
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_USER:      "current_user",
	pg_query.SQLValueFunctionOp_SVFOP_USER:              "user",
	pg_query.SQLValueFunctionOp_SVFOP_SESSION_USER:      "session_user",
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_CATALOG:   "current_catalog",
	pg_query.SQLValueFunctionOp_SVFOP_CURRENT_SCHEMA:    "current_schema",
}

func constant(t Type, v any) compiled {
	return compiled{typ: t, eval: func(*evalEnv) (any, error) { return v, nil }}
}

// ServerVersionString is what version() answers: PostgreSQL's form, so
// that tools parsing "PostgreSQL <major>.<minor>" read 15.0, and reshard's
// own version after it.
func ServerVersionString() string {
	return fmt.Sprintf("PostgreSQL %s (reshard %s admin server) on %s, compiled by %s, 64-bit",
		settings["server_version"], Version, runtime.GOARCH+"-"+runtime.GOOS, runtime.Version())
}

// compile type-checks an expression of a constant SELECT.
func compile(n *pg_query.Node) (compiled, *Error) {
	switch {
	case n.GetAConst() != nil:
		return compileConst(n.GetAConst())
	case n.GetTypeCast() != nil:
		tc := n.GetTypeCast()
		arg, err := compile(tc.Arg)
		if err != nil {
			return arg, err
		}
		to, ok := castType(tc.TypeName)
		if !ok {
			return arg, Errorf(CodeFeatureNotSupported, "casts to %s are not supported by reshard's admin server", names(tc.TypeName.Names))
		}
		return compiled{typ: to, eval: func(env *evalEnv) (any, error) {
			v, err := arg.eval(env)
			if err != nil || v == nil {
				return nil, err
			}
			return cast(v, arg.typ, to)
		}}, nil
	case n.GetSqlvalueFunction() != nil:
		return compileSQLValue(n.GetSqlvalueFunction())
	case n.GetFuncCall() != nil:
		return compileFunc(n.GetFuncCall())
	case n.GetAExpr() != nil:
		return compileOp(n.GetAExpr())
	case n.GetBoolExpr() != nil:
		return compileBool(n.GetBoolExpr())
	case n.GetNullTest() != nil:
		nt := n.GetNullTest()
		arg, err := compile(nt.Arg)
		if err != nil {
			return arg, err
		}
		isNull := nt.Nulltesttype == pg_query.NullTestType_IS_NULL
		return compiled{typ: TypeBool, eval: func(env *evalEnv) (any, error) {
			v, err := arg.eval(env)
			return (v == nil) == isNull, err
		}}, nil
	case n.GetColumnRef() != nil:
		return compiled{}, Errorf(CodeUndefinedColumn, "column %q does not exist", lastField(n.GetColumnRef())).
			WithHint("the admin database has no tables: it answers admin commands and the SHOW views (%s)", viewList())
	case n.GetParamRef() != nil:
		return compiled{}, Errorf(CodeFeatureNotSupported, "parameters are not supported in SELECTs by reshard's admin server")
	}
	return compiled{}, Errorf(CodeFeatureNotSupported, "this expression is not supported by reshard's admin server").
		WithHint("it answers constant SELECTs (SELECT 1, version(), current_setting(...)) and the SHOW views")
}

func compileConst(c *pg_query.A_Const) (compiled, *Error) {
	switch v := c.Val.(type) {
	case nil:
		c := constant(TypeText, nil)
		c.null = true
		return c, nil
	case *pg_query.A_Const_Ival:
		return constant(TypeInt4, v.Ival.Ival), nil
	case *pg_query.A_Const_Fval:
		// An integer too large for int4 arrives as a float constant.
		if i, err := strconv.ParseInt(v.Fval.Fval, 10, 64); err == nil {
			return constant(TypeInt8, i), nil
		}
		return constant(typeNumeric, v.Fval.Fval), nil
	case *pg_query.A_Const_Sval:
		return constant(TypeText, v.Sval.Sval), nil
	case *pg_query.A_Const_Boolval:
		return constant(TypeBool, v.Boolval.Boolval), nil
	}
	return compiled{}, Errorf(CodeFeatureNotSupported, "bit-string constants are not supported by reshard's admin server")
}

// castType maps a type name to one of the admin server's types.
func castType(tn *pg_query.TypeName) (Type, bool) {
	if tn == nil || len(tn.ArrayBounds) > 0 {
		return 0, false
	}
	switch strings.TrimPrefix(names(tn.Names), "pg_catalog.") {
	case "int2", "smallint":
		return TypeInt2, true
	case "int4", "int", "integer":
		return TypeInt4, true
	case "int8", "bigint":
		return TypeInt8, true
	case "text", "varchar":
		return TypeText, true
	case "name":
		return TypeName, true
	case "bool", "boolean":
		return TypeBool, true
	case "float8", "double precision":
		return TypeFloat8, true
	case "oid", "regclass", "regtype":
		return TypeOid, true
	case "timestamptz":
		return TypeTimestamptz, true
	}
	return 0, false
}

// cast converts v from one admin server type to another, as PostgreSQL's
// casts and input functions do.
func cast(v any, from, to Type) (any, error) {
	if from == to || (isText(from) && isText(to)) {
		return v, nil
	}
	if from == typeNumeric {
		f, err := strconv.ParseFloat(v.(string), 64)
		if err != nil {
			return nil, Errorf(CodeInvalidText, "invalid input syntax for type numeric: %q", v)
		}
		if isText(to) {
			return v, nil
		}
		return cast(f, TypeFloat8, to)
	}
	if isText(to) {
		return formatValue(v), nil
	}
	if isText(from) {
		return parseValue(strings.TrimSpace(v.(string)), to)
	}
	if isInt(from) && isInt(to) {
		return intOf(v, to)
	}
	switch {
	case isInt(from) && to == TypeFloat8:
		return float64(asInt64(v)), nil
	case from == TypeFloat8 && isInt(to):
		f := math.RoundToEven(v.(float64))
		if f > math.MaxInt64 || f < math.MinInt64 {
			return nil, outOfRange(to)
		}
		return intOf(int64(f), to)
	case from == TypeBool && to == TypeInt4:
		if v.(bool) {
			return int32(1), nil
		}
		return int32(0), nil
	case isInt(from) && to == TypeBool:
		return asInt64(v) != 0, nil
	}
	return nil, Errorf(CodeFeatureNotSupported, "cannot cast type %s to %s", FormatType(from), FormatType(to))
}

func isText(t Type) bool { return t == TypeText || t == TypeName }

func isInt(t Type) bool { return t == TypeInt2 || t == TypeInt4 || t == TypeInt8 || t == TypeOid }

func asInt64(v any) int64 {
	switch x := v.(type) {
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case int64:
		return x
	case uint32:
		return int64(x)
	}
	return 0
}

func outOfRange(t Type) *Error {
	return Errorf(CodeNumericOutOfRange, "%s out of range", FormatType(t))
}

// intOf is n as the Go value of integer type t, or an out-of-range error.
func intOf(v any, t Type) (any, error) {
	n := asInt64(v)
	switch t {
	case TypeInt2:
		if n < math.MinInt16 || n > math.MaxInt16 {
			return nil, outOfRange(t)
		}
		return int16(n), nil
	case TypeInt4:
		if n < math.MinInt32 || n > math.MaxInt32 {
			return nil, outOfRange(t)
		}
		return int32(n), nil
	case TypeOid:
		if n < 0 || n > math.MaxUint32 {
			return nil, outOfRange(t)
		}
		return uint32(n), nil
	}
	return n, nil
}

func parseValue(s string, to Type) (any, error) {
	bad := func() error {
		return Errorf(CodeInvalidText, "invalid input syntax for type %s: %q", FormatType(to), s)
	}
	switch {
	case isInt(to):
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return nil, outOfRange(to)
			}
			return nil, bad()
		}
		return intOf(n, to)
	case to == TypeFloat8:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, bad()
		}
		return f, nil
	case to == TypeBool:
		switch strings.ToLower(s) {
		case "t", "true", "on", "yes", "y", "1":
			return true, nil
		case "f", "false", "off", "no", "n", "0":
			return false, nil
		}
		return nil, bad()
	case to == TypeTimestamptz:
		for _, layout := range []string{"2006-01-02 15:04:05.999999Z07", "2006-01-02 15:04:05.999999Z07:00", time.RFC3339Nano, "2006-01-02 15:04:05.999999", "2006-01-02"} {
			if t, err := time.Parse(layout, s); err == nil {
				return t, nil
			}
		}
		return nil, bad()
	}
	return nil, bad()
}

// formatValue is a value's text form, as PostgreSQL's output functions
// write it.
func formatValue(v any) string {
	switch x := v.(type) {
	case bool:
		if x {
			return "true"
		}
		return "false"
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case time.Time:
		return x.UTC().Format("2006-01-02 15:04:05.999999") + "+00"
	case string:
		return x
	}
	return strconv.FormatInt(asInt64(v), 10)
}

func compileSQLValue(f *pg_query.SQLValueFunction) (compiled, *Error) {
	switch f.Op {
	case pg_query.SQLValueFunctionOp_SVFOP_CURRENT_USER, pg_query.SQLValueFunctionOp_SVFOP_USER,
		pg_query.SQLValueFunctionOp_SVFOP_CURRENT_ROLE, pg_query.SQLValueFunctionOp_SVFOP_SESSION_USER:
		return compiled{typ: TypeName, eval: func(env *evalEnv) (any, error) { return env.session.User, nil }}, nil
	case pg_query.SQLValueFunctionOp_SVFOP_CURRENT_CATALOG:
		return compiled{typ: TypeName, eval: func(env *evalEnv) (any, error) { return env.session.Database, nil }}, nil
	case pg_query.SQLValueFunctionOp_SVFOP_CURRENT_SCHEMA:
		// No schema of the search path exists in the admin database.
		return constant(TypeName, nil), nil
	case pg_query.SQLValueFunctionOp_SVFOP_CURRENT_TIMESTAMP:
		return compiled{typ: TypeTimestamptz, eval: func(env *evalEnv) (any, error) { return env.now, nil }}, nil
	}
	return compiled{}, Errorf(CodeFeatureNotSupported, "%s is not supported by reshard's admin server", sqlValueNames[f.Op])
}

// functions are the functions a constant SELECT may call: what clients
// ask at connect time.
var functions = map[string]func(args []compiled) (compiled, *Error){
	"version":                  noArgs(TypeText, func(*evalEnv) any { return ServerVersionString() }),
	"current_database":         noArgs(TypeName, func(env *evalEnv) any { return env.session.Database }),
	"current_user":             noArgs(TypeName, func(env *evalEnv) any { return env.session.User }),
	"session_user":             noArgs(TypeName, func(env *evalEnv) any { return env.session.User }),
	"current_schema":           noArgs(TypeName, func(*evalEnv) any { return nil }),
	"pg_backend_pid":           noArgs(TypeInt4, func(env *evalEnv) any { return env.session.BackendPID }),
	"now":                      noArgs(TypeTimestamptz, func(env *evalEnv) any { return env.now }),
	"transaction_timestamp":    noArgs(TypeTimestamptz, func(env *evalEnv) any { return env.now }),
	"statement_timestamp":      noArgs(TypeTimestamptz, func(env *evalEnv) any { return env.now }),
	"clock_timestamp":          noArgs(TypeTimestamptz, func(*evalEnv) any { return time.Now() }),
	"pg_postmaster_start_time": noArgs(TypeTimestamptz, func(*evalEnv) any { return started }),
	"pg_is_in_recovery":        noArgs(TypeBool, func(*evalEnv) any { return false }),
	"pg_client_encoding":       noArgs(TypeName, func(*evalEnv) any { return "UTF8" }),
	"current_setting":          currentSetting,
}

func noArgs(t Type, f func(env *evalEnv) any) func([]compiled) (compiled, *Error) {
	return func(args []compiled) (compiled, *Error) {
		if len(args) != 0 {
			return compiled{}, nil
		}
		return compiled{typ: t, eval: func(env *evalEnv) (any, error) { return f(env), nil }}, nil
	}
}

// currentSetting is current_setting(name [, missing_ok]): what SHOW name
// answers.
func currentSetting(args []compiled) (compiled, *Error) {
	if len(args) < 1 || len(args) > 2 || !isText(args[0].typ) || (len(args) == 2 && args[1].typ != TypeBool) {
		return compiled{}, nil
	}
	return compiled{typ: TypeText, eval: func(env *evalEnv) (any, error) {
		name, err := args[0].eval(env)
		if err != nil || name == nil {
			return nil, err
		}
		missingOK := false
		if len(args) == 2 {
			ok, err := args[1].eval(env)
			if err != nil {
				return nil, err
			}
			missingOK = ok == true
		}
		key := strings.ToLower(name.(string))
		if key == "application_name" {
			return env.session.ApplicationName, nil
		}
		if v, ok := settings[key]; ok {
			return v, nil
		}
		if missingOK {
			return nil, nil
		}
		return nil, Errorf(CodeUndefinedObject, "unrecognized configuration parameter %q", name)
	}}, nil
}

func compileFunc(fn *pg_query.FuncCall) (compiled, *Error) {
	name := funcName(fn)
	var args []compiled
	for _, a := range fn.Args {
		c, err := compile(a)
		if err != nil {
			return c, err
		}
		args = append(args, c)
	}
	signature := func() string {
		types := make([]string, len(args))
		for i, a := range args {
			types[i] = FormatType(a.typ)
		}
		return fmt.Sprintf("%s(%s)", name, strings.Join(types, ", "))
	}
	build, ok := functions[name]
	if !ok || fn.AggStar || fn.Over != nil || fn.AggDistinct || len(fn.AggOrder) > 0 {
		return compiled{}, Errorf(CodeUndefinedFunction, "function %s is not supported by reshard's admin server", signature()).
			WithHint("it answers version(), current_database(), current_user, current_setting(...), pg_backend_pid(), now() and the SHOW views")
	}
	c, err := build(args)
	if err != nil {
		return c, err
	}
	if c.eval == nil {
		return c, Errorf(CodeUndefinedFunction, "function %s does not exist", signature())
	}
	return c, nil
}

func compileBool(b *pg_query.BoolExpr) (compiled, *Error) {
	var args []compiled
	for _, a := range b.Args {
		c, err := compile(a)
		if err != nil {
			return c, err
		}
		if c.typ != TypeBool && !c.null {
			return c, Errorf(CodeDatatypeMismatch, "argument of %s must be type boolean, not type %s",
				strings.TrimSuffix(b.Boolop.String(), "_EXPR"), FormatType(c.typ))
		}
		args = append(args, c)
	}
	op := b.Boolop
	return compiled{typ: TypeBool, eval: func(env *evalEnv) (any, error) {
		// SQL's three-valued logic: NULL is unknown.
		result := any(op == pg_query.BoolExprType_AND_EXPR)
		for _, a := range args {
			v, err := a.eval(env)
			if err != nil {
				return nil, err
			}
			switch {
			case op == pg_query.BoolExprType_NOT_EXPR:
				if v == nil {
					return nil, nil
				}
				return !v.(bool), nil
			case v == nil:
				result = nil
			case op == pg_query.BoolExprType_AND_EXPR && !v.(bool):
				return false, nil
			case op == pg_query.BoolExprType_OR_EXPR && v.(bool):
				return true, nil
			}
		}
		return result, nil
	}}, nil
}

func compileOp(e *pg_query.A_Expr) (compiled, *Error) {
	if e.Kind != pg_query.A_Expr_Kind_AEXPR_OP || len(e.Name) != 1 || e.Rexpr == nil {
		return compiled{}, Errorf(CodeFeatureNotSupported, "this operator is not supported by reshard's admin server")
	}
	op := e.Name[0].GetString_().GetSval()
	r, err := compile(e.Rexpr)
	if err != nil {
		return r, err
	}
	if e.Lexpr == nil {
		if op != "-" || !isInt(r.typ) && r.typ != TypeFloat8 {
			return r, Errorf(CodeFeatureNotSupported, "prefix operator %s is not supported by reshard's admin server", op)
		}
		zero := constant(r.typ, any(int32(0)))
		if r.typ == TypeFloat8 {
			zero = constant(TypeFloat8, 0.0)
		} else if z, err := intOf(int64(0), r.typ); err == nil {
			zero = constant(r.typ, z)
		}
		return arithmetic("-", zero, r)
	}
	l, err := compile(e.Lexpr)
	if err != nil {
		return l, err
	}
	switch op {
	case "+", "-", "*", "/", "%":
		return arithmetic(op, l, r)
	case "||":
		return compiled{typ: TypeText, eval: func(env *evalEnv) (any, error) {
			a, b, err := both(env, l, r)
			if err != nil || a == nil || b == nil {
				return nil, err
			}
			return formatValue(a) + formatValue(b), nil
		}}, nil
	case "=", "<>", "!=", "<", ">", "<=", ">=":
		return comparison(op, l, r)
	}
	return compiled{}, Errorf(CodeUndefinedFunction, "operator %s is not supported by reshard's admin server", op)
}

func both(env *evalEnv, l, r compiled) (any, any, error) {
	a, err := l.eval(env)
	if err != nil {
		return nil, nil, err
	}
	b, err := r.eval(env)
	return a, b, err
}

// arithmetic applies + - * / % to integers (checked for overflow, as
// PostgreSQL's are: the wider operand's type) and floats.
func arithmetic(op string, l, r compiled) (compiled, *Error) {
	numeric := func(t Type) bool { return isInt(t) && t != TypeOid || t == TypeFloat8 }
	if !numeric(l.typ) || !numeric(r.typ) {
		return compiled{}, Errorf(CodeUndefinedFunction, "operator does not exist: %s %s %s", FormatType(l.typ), op, FormatType(r.typ))
	}
	t := TypeInt4
	switch {
	case l.typ == TypeFloat8 || r.typ == TypeFloat8:
		t = TypeFloat8
	case l.typ == TypeInt8 || r.typ == TypeInt8:
		t = TypeInt8
	case l.typ == TypeInt2 && r.typ == TypeInt2:
		t = TypeInt2
	}
	return compiled{typ: t, eval: func(env *evalEnv) (any, error) {
		a, b, err := both(env, l, r)
		if err != nil || a == nil || b == nil {
			return nil, err
		}
		if t == TypeFloat8 {
			x, _ := cast(a, l.typ, TypeFloat8)
			y, _ := cast(b, r.typ, TypeFloat8)
			fx, fy := x.(float64), y.(float64)
			switch op {
			case "+":
				return fx + fy, nil
			case "-":
				return fx - fy, nil
			case "*":
				return fx * fy, nil
			case "/":
				if fy == 0 {
					return nil, Errorf(CodeDivisionByZero, "division by zero")
				}
				return fx / fy, nil
			}
			return nil, Errorf(CodeUndefinedFunction, "operator does not exist: double precision %% double precision")
		}
		x, y := asInt64(a), asInt64(b)
		var n int64
		overflow := false
		switch op {
		case "+":
			n = x + y
			overflow = (y > 0 && n < x) || (y < 0 && n > x)
		case "-":
			n = x - y
			overflow = (y < 0 && n < x) || (y > 0 && n > x)
		case "*":
			n = x * y
			overflow = x != 0 && (n/x != y || (x == -1 && y == math.MinInt64))
		case "/", "%":
			if y == 0 {
				return nil, Errorf(CodeDivisionByZero, "division by zero")
			}
			if x == math.MinInt64 && y == -1 {
				overflow = op == "/"
			} else if op == "/" {
				n = x / y
			} else {
				n = x % y
			}
		}
		if overflow {
			return nil, outOfRange(t)
		}
		return intOf(n, t)
	}}, nil
}

func comparison(op string, l, r compiled) (compiled, *Error) {
	switch {
	case l.null || r.null:
		return constant(TypeBool, nil), nil
	case isText(l.typ) && isText(r.typ), isInt(l.typ) && isInt(r.typ), l.typ == r.typ:
	case (isInt(l.typ) || l.typ == TypeFloat8) && (isInt(r.typ) || r.typ == TypeFloat8):
	default:
		return compiled{}, Errorf(CodeUndefinedFunction, "operator does not exist: %s %s %s", FormatType(l.typ), op, FormatType(r.typ))
	}
	return compiled{typ: TypeBool, eval: func(env *evalEnv) (any, error) {
		a, b, err := both(env, l, r)
		if err != nil || a == nil || b == nil {
			return nil, err
		}
		var c int
		switch {
		case isText(l.typ):
			c = strings.Compare(a.(string), b.(string))
		case l.typ == TypeBool:
			c = boolInt(a.(bool)) - boolInt(b.(bool))
		case l.typ == TypeTimestamptz:
			c = a.(time.Time).Compare(b.(time.Time))
		case l.typ == TypeFloat8 || r.typ == TypeFloat8:
			x, _ := cast(a, l.typ, TypeFloat8)
			y, _ := cast(b, r.typ, TypeFloat8)
			c = cmpFloat(x.(float64), y.(float64))
		default:
			x, y := asInt64(a), asInt64(b)
			c = boolInt(x > y) - boolInt(x < y)
		}
		switch op {
		case "=":
			return c == 0, nil
		case "<>", "!=":
			return c != 0, nil
		case "<":
			return c < 0, nil
		case ">":
			return c > 0, nil
		case "<=":
			return c <= 0, nil
		}
		return c >= 0, nil
	}}, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
