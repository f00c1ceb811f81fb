package commands

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestSelect answers the SELECTs clients send on connect with PostgreSQL's
// column names, types and values, and the catalog probes of Grafana,
// Metabase and pgjdbc with their columns and no rows.
func TestSelect(t *testing.T) {
	ctx := WithSession(context.Background(), Session{User: "ops", Database: "admin", ApplicationName: "grafana", BackendPID: 7})
	e := &Executor{}
	cases := []struct {
		sql  string
		cols []Column
		rows [][]any // nil: no rows
	}{
		{"SELECT 1", cols("?column?", TypeInt4), [][]any{{int32(1)}}},
		{"select 1 as test;", cols("test", TypeInt4), [][]any{{int32(1)}}},
		{"SELECT current_database(), current_user, session_user, current_catalog, user", cols("current_database", TypeName, "current_user", TypeName,
			"session_user", TypeName, "current_catalog", TypeName, "user", TypeName), [][]any{{"admin", "ops", "ops", "admin", "ops"}}},
		// Grafana's version probe.
		{"SELECT current_setting('server_version_num')::int/100 as version", cols("version", TypeInt4), [][]any{{int32(1500)}}},
		{"SELECT current_setting('server_version_num')::integer", cols("current_setting", TypeInt4), [][]any{{int32(150000)}}},
		{"SELECT pg_catalog.current_setting('application_name'), current_setting('nope', true)", cols("current_setting", TypeText, "current_setting", TypeText),
			[][]any{{"grafana", nil}}},
		{"SELECT 1::int8, '7'::bigint + 1, 'x'::text, 2::text, 'on'::boolean, 1.5::float8", cols("int8", TypeInt8, "?column?", TypeInt8, "text", TypeText,
			"text", TypeText, "bool", TypeBool, "float8", TypeFloat8), [][]any{{int64(1), int64(8), "x", "2", true, 1.5}}},
		{"SELECT 10 % 3, -5, 7 / 2, 3000000000, 'a' || 1, 2 > 1, 'b' < 'a', NULL", cols("?column?", TypeInt4, "?column?", TypeInt4, "?column?", TypeInt4,
			"?column?", TypeInt8, "?column?", TypeText, "?column?", TypeBool, "?column?", TypeBool, "?column?", TypeText),
			[][]any{{int32(1), int32(-5), int32(3), int64(3000000000), "a1", true, false, nil}}},
		{"SELECT true AND NULL, false AND NULL, true OR NULL, NOT true, NULL IS NULL, 1 IS NOT NULL", cols("?column?", TypeBool, "?column?", TypeBool,
			"?column?", TypeBool, "?column?", TypeBool, "?column?", TypeBool, "?column?", TypeBool), [][]any{{nil, false, true, false, true, true}}},
		{"SELECT pg_backend_pid(), pg_is_in_recovery(), current_schema()", cols("pg_backend_pid", TypeInt4, "pg_is_in_recovery", TypeBool, "current_schema", TypeName),
			[][]any{{int32(7), false, nil}}},
		{"SELECT 1 WHERE false", cols("?column?", TypeInt4), nil},
		{"SELECT 1 WHERE 1 = 1", cols("?column?", TypeInt4), [][]any{{int32(1)}}},
		// Catalog probes: Grafana's TimescaleDB and table probes.
		{"SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", cols("extversion", TypeText), nil},
		{`SELECT quote_ident(table_name) AS "table" FROM information_schema.tables WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog')
		  AND quote_ident(table_schema) IN (SELECT CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
		  FROM generate_series(array_lower(string_to_array(current_setting('search_path'),','),1), array_upper(string_to_array(current_setting('search_path'),','),1)) as i,
		  string_to_array(current_setting('search_path'),',') s) ORDER BY 1`, cols("table", TypeText), nil},
		// Metabase's sync: tables and enum types.
		{`SELECT n.nspname AS schema, c.relname AS name, CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'v' THEN 'VIEW' ELSE NULL END AS type,
		  d.description AS description, stat.n_live_tup AS estimated_row_count FROM pg_catalog.pg_class AS c
		  INNER JOIN pg_catalog.pg_namespace AS n ON c.relnamespace = n.oid
		  LEFT JOIN pg_catalog.pg_description AS d ON (c.oid = d.objoid) AND (d.objsubid = 0) AND (d.classoid = 'pg_class'::regclass)
		  LEFT JOIN pg_stat_user_tables AS stat ON (n.nspname = stat.schemaname) AND (c.relname = stat.relname)
		  WHERE (c.relnamespace = n.oid) AND (n.nspname !~ '^pg_') AND (n.nspname <> 'information_schema') AND c.relkind in ('r', 'p', 'v', 'f', 'm')
		  ORDER BY type ASC, schema ASC, name ASC`,
			cols("schema", TypeName, "name", TypeName, "type", TypeText, "description", TypeText, "estimated_row_count", TypeInt8), nil},
		{"SELECT nspname, typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid IN (SELECT DISTINCT enumtypid FROM pg_enum e)",
			cols("nspname", TypeName, "typname", TypeName), nil},
		// pgjdbc's DatabaseMetaData.getSchemas.
		{`SELECT nspname AS TABLE_SCHEM, NULL AS TABLE_CATALOG FROM pg_catalog.pg_namespace WHERE nspname <> 'pg_toast'
		  AND (nspname !~ '^pg_temp_' OR nspname = (pg_catalog.current_schemas(true))[1]) ORDER BY TABLE_SCHEM`,
			cols("table_schem", TypeName, "table_catalog", TypeText), nil},
		{"SELECT count(*), max(relname), 1 FROM pg_catalog.pg_class", cols("count", TypeInt8, "max", TypeText, "?column?", TypeInt4), [][]any{{int64(0), nil, int32(1)}}},
		{"WITH x AS (SELECT oid FROM pg_class) SELECT oid FROM x", cols("oid", TypeOid), nil},
		{"SELECT nspname FROM pg_namespace UNION ALL SELECT relname FROM pg_class", cols("nspname", TypeName), nil},
	}
	for _, c := range cases {
		cmds, err := Parse(c.sql)
		if err != nil {
			t.Errorf("Parse(%.60q): %v", c.sql, err)
			continue
		}
		cols, err := e.Columns(cmds[0])
		if err != nil || !reflect.DeepEqual(cols, c.cols) {
			t.Errorf("%.60q: columns %v (%v), want %v", c.sql, cols, err, c.cols)
			continue
		}
		res, err := e.Execute(ctx, cmds[0])
		if err != nil {
			t.Errorf("%.60q: %v", c.sql, err)
			continue
		}
		if !reflect.DeepEqual(res.Rows, c.rows) || !reflect.DeepEqual(res.Columns, c.cols) {
			t.Errorf("%.60q: rows %#v, want %#v", c.sql, res.Rows, c.rows)
		}
		if want := map[bool]string{true: "SELECT 0", false: "SELECT 1"}[c.rows == nil]; res.Tag != want {
			t.Errorf("%.60q: tag %q, want %q", c.sql, res.Tag, want)
		}
	}

	// version() in PostgreSQL's form, and now() is now.
	res := run(t, e, ctx, "SELECT version(), now()")
	if v := res.Rows[0][0].(string); !strings.HasPrefix(v, "PostgreSQL 15.0 (reshard "+Version+" admin server) on ") {
		t.Fatalf("version() = %q", v)
	}
	if d := time.Since(res.Rows[0][1].(time.Time)); d < 0 || d > time.Minute {
		t.Fatalf("now() is %v ago", d)
	}
}

func run(t *testing.T, e *Executor, ctx context.Context, sql string) *Result {
	t.Helper()
	cmds, err := Parse(sql)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Execute(ctx, cmds[0])
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestSelectRuntimeErrors: errors that only running the SELECT finds get
// PostgreSQL's SQLSTATEs.
func TestSelectRuntimeErrors(t *testing.T) {
	ctx := WithSession(context.Background(), Session{User: "ops", Database: "admin"})
	for sql, code := range map[string]string{
		"SELECT current_setting('no_such_setting')":     CodeUndefinedObject,
		"SELECT 2147483647 + 1":                         CodeNumericOutOfRange,
		"SELECT 9223372036854775807 * 2":                CodeNumericOutOfRange,
		"SELECT 1 / 0":                                  CodeDivisionByZero,
		"SELECT 'x'::int":                               CodeInvalidText,
		"SELECT '99999'::int2":                          CodeNumericOutOfRange,
		"SELECT current_setting('server_version')::int": CodeInvalidText,
	} {
		cmds, err := Parse(sql)
		if err != nil {
			t.Errorf("Parse(%q): %v", sql, err)
			continue
		}
		_, err = (&Executor{}).Execute(ctx, cmds[0])
		var e *Error
		if !errors.As(err, &e) || e.Code != code {
			t.Errorf("%s: %v, want SQLSTATE %s", sql, err, code)
		}
	}
}
