package clients

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/commands"
)

// The plan every client runs. Clients read it from stdin, one line each:
// "Q <repeat> <sql>" runs sql repeat times (prepared once where the driver
// prepares); "E <sql>" runs sql, which must fail, then SHOW VERSION on the
// same connection; "C <sql>" runs sql, which waits until cancelled, sends
// cancel requests the driver's way until it returns, then runs SHOW VERSION
// on the same connection. The connection comes from PGHOST, PGPORT, PGUSER,
// PGPASSWORD and PGDATABASE.
type planQuery struct {
	sql    string
	repeat int
}

type planError struct {
	sql, code string
	// cancel: the client cancels sql (which would wait forever).
	cancel bool
}

// repeat is how often each query runs: past pgjdbc's prepareThreshold (5),
// so that it switches to named server-side statements and binary results,
// and past pgx's and node-postgres's statement caches' first use.
const repeat = 12

// schemaSyncCommand is the command every client runs: it changes nothing
// (the schema is there) and answers one typed row per shard.
const schemaSyncCommand = "SCHEMA_SYNC PRE src dst " + publication

// biProbes are what SQL clients and BI tools send on connect, when a data
// source is tested or saved, and when they list what there is: each must be
// answered with PostgreSQL's column names, types and values.
var biProbes = []string{
	// Connection tests: Metabase's, pgjdbc's and most tools' (lib/pq's
	// and pgx's pings, which Grafana's Save & test sends, run first).
	"SELECT 1",
	"SELECT version()",
	"SELECT current_database(), current_user, session_user",
	// Grafana's PostgreSQL data source: the version it reads when the data
	// source is saved, the TimescaleDB probe that follows.
	"SELECT current_setting('server_version_num')::int/100 as version",
	"SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
	"SHOW server_version_num",
	// Metabase: the database's time zone, then the table sync.
	"show timezone;",
	`SELECT n.nspname AS schema, c.relname AS name, CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'PARTITIONED TABLE' WHEN 'v' THEN 'VIEW' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE NULL END AS type, d.description AS description, stat.n_live_tup AS estimated_row_count FROM pg_catalog.pg_class AS c INNER JOIN pg_catalog.pg_namespace AS n ON c.relnamespace = n.oid LEFT JOIN pg_catalog.pg_description AS d ON (c.oid = d.objoid) AND (d.objsubid = 0) AND (d.classoid = 'pg_class'::regclass) LEFT JOIN pg_stat_user_tables AS stat ON (n.nspname = stat.schemaname) AND (c.relname = stat.relname) WHERE (c.relnamespace = n.oid) AND (n.nspname !~ '^pg_') AND (n.nspname <> 'information_schema') AND c.relkind in ('r', 'p', 'v', 'f', 'm') ORDER BY type ASC, schema ASC, name ASC`,
	"SELECT nspname, typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid IN (SELECT DISTINCT enumtypid FROM pg_enum e)",
	// Others: DBeaver, pgAdmin and scripts.
	"SELECT count(*) FROM pg_catalog.pg_class",
	"SELECT pg_backend_pid(), now(), pg_is_in_recovery(), current_setting('server_version')",
}

// emptyProbes answer no rows: the admin database has no tables, types or
// extensions.
var emptyProbes = map[string]bool{
	biProbes[4]: true, biProbes[7]: true, biProbes[8]: true,
}

func testPlan() ([]planQuery, []planError) {
	var qs []planQuery
	for _, v := range commands.Views() {
		qs = append(qs, planQuery{"SHOW " + strings.ToUpper(v), repeat})
	}
	for _, p := range biProbes {
		qs = append(qs, planQuery{p, repeat})
	}
	qs = append(qs, planQuery{schemaSyncCommand, 1})
	errs := []planError{
		{"SHOW no_such_view", commands.CodeUndefinedObject, false},
		{"COPY_DATA src", commands.CodeSyntaxError, false},
		// A SELECT of a table: the admin database has none.
		{"SELECT * FROM orders", commands.CodeUndefinedTable, false},
		{"SELECT current_setting('no_such_setting')", commands.CodeUndefinedObject, false},
		{"VERIFY src nowhere " + publication, commands.CodeUndefinedDatabase, false},
		// Waits on holdSchemaSync's lock until cancelled: query_canceled.
		{"SCHEMA_SYNC POST src2 dst2 " + publication, "57014", true},
	}
	return qs, errs
}

func planText(qs []planQuery, errs []planError) string {
	var b strings.Builder
	for _, q := range qs {
		fmt.Fprintf(&b, "Q %d %s\n", q.repeat, q.sql)
	}
	for _, e := range errs {
		kind := "E"
		if e.cancel {
			kind = "C"
		}
		fmt.Fprintf(&b, "%s %s\n", kind, e.sql)
	}
	return b.String()
}

// report is what a client prints on stdout as JSON.
type report struct {
	Driver string       `json:"driver"`
	Modes  []modeReport `json:"modes"`
}

// modeReport is one connection of a client in one protocol mode.
type modeReport struct {
	Mode    string      `json:"mode"`
	Results []result    `json:"results"`
	Errors  []errResult `json:"errors"`
}

// result is one run of one query as the driver saw it.
type result struct {
	SQL     string    `json:"sql"`
	Run     int       `json:"run"`
	Columns []column  `json:"columns"`
	Rows    [][]value `json:"rows"`
}

// column is a result column: its name and the type the driver reports,
// as a type OID in decimal, a type name (int8) or format_type's (bigint).
type column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// value is one field as the driver decoded it: the kind of native value
// (int, float, bool, time for a time-zone-aware timestamp, naive_time,
// text, null) and a canonical rendering (decimal integer, shortest float,
// true/false, milliseconds since the epoch, the text).
type value struct {
	Kind string `json:"k"`
	Text string `json:"v"`
}

// errResult is a query that failed: the SQLSTATE and message the driver
// got, and the version the same connection answered next ("" if it failed).
type errResult struct {
	SQL     string `json:"sql"`
	Code    string `json:"code"`
	Message string `json:"message"`
	After   string `json:"after"`
}

// kinds maps each column type to the value kind a driver must decode it to.
var kinds = map[commands.Type]string{
	commands.TypeBool:        "bool",
	commands.TypeName:        "text",
	commands.TypeInt2:        "int",
	commands.TypeOid:         "int",
	commands.TypeInt4:        "int",
	commands.TypeInt8:        "int",
	commands.TypeText:        "text",
	commands.TypeFloat8:      "float",
	commands.TypeTimestamptz: "time",
}

// typeNames are the PostgreSQL names of the column types.
var typeNames = map[commands.Type]string{
	commands.TypeBool:        "bool",
	commands.TypeName:        "name",
	commands.TypeInt2:        "int2",
	commands.TypeOid:         "oid",
	commands.TypeInt4:        "int4",
	commands.TypeInt8:        "int8",
	commands.TypeText:        "text",
	commands.TypeFloat8:      "float8",
	commands.TypeTimestamptz: "timestamptz",
}

// volatile columns change between two runs of the same view.
var volatile = map[string]bool{
	"elapsed": true, "elapsed_ms": true, "lsn": true, "lag": true, "lag_bytes": true,
	"last_transaction": true, "last_transaction_ms": true, "retained_wal": true, "retained_wal_bytes": true,
	// the connection's process id, the statement's time
	"pg_backend_pid": true, "now": true,
}

func TestClientMatrix(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := startEnv(t, ctx)
	qs, errs := testPlan()

	// The reference: pgx in simple protocol mode.
	ref := runPgx(t, ctx, e, qs, errs, []string{"simple"})
	want := map[string]result{}
	for _, r := range ref.Modes[0].Results {
		want[r.SQL] = r
	}
	for _, q := range qs {
		if n := len(want[q.sql].Rows); n == 0 && !emptyProbes[q.sql] {
			t.Fatalf("%s has no rows: the matrix would check no values", q.sql)
		}
	}

	// psql opens one connection per run: once per query is enough.
	once := make([]planQuery, len(qs))
	for i, q := range qs {
		once[i] = planQuery{q.sql, 1}
	}
	clients := []struct {
		name string
		plan []planQuery
		run  func(t *testing.T) report
	}{
		{"pgx", qs, func(t *testing.T) report {
			return runPgx(t, ctx, e, qs, errs, []string{"simple", "exec", "cache_statement"})
		}},
		{"psql", once, func(t *testing.T) report { return runPsql(t, ctx, e, once, errs) }},
		{"jdbc", qs, func(t *testing.T) report { return runScript(t, ctx, e, qs, errs, jdbcCommand(t)) }},
		{"psycopg2", qs, func(t *testing.T) report { return runScript(t, ctx, e, qs, errs, psycopg2Command(t)) }},
		{"node-postgres", qs, func(t *testing.T) report { return runScript(t, ctx, e, qs, errs, nodeCommand(t, ctx)) }},
		{"lib/pq", qs, func(t *testing.T) report { return runLibPQ(t, ctx, e, qs, errs) }},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			rep := c.run(t)
			if len(rep.Modes) == 0 {
				t.Fatalf("%s reported no modes", c.name)
			}
			for _, m := range rep.Modes {
				checkMode(t, e, rep.Driver+" "+m.Mode, m, c.plan, errs, want)
			}
			t.Logf("%s: %d modes checked", rep.Driver, len(rep.Modes))
		})
	}

	// Every driver again, over TLS, to the server that refuses clients
	// without it: both servers take SCRAM-SHA-256 logins only, so each
	// driver has logged in with SCRAM with and without TLS.
	te := e.overTLS()
	tlsPlan := []planQuery{{"SHOW VERSION", 2}, {"SHOW TASKS", 2}}
	tlsOnce := []planQuery{{"SHOW VERSION", 1}, {"SHOW TASKS", 1}}
	tlsClients := []struct {
		name string
		plan []planQuery
		run  func(t *testing.T) report
	}{
		{"pgx", tlsPlan, func(t *testing.T) report {
			return runPgx(t, ctx, te, tlsPlan, nil, []string{"simple", "cache_statement"})
		}},
		{"psql", tlsOnce, func(t *testing.T) report { return runPsql(t, ctx, te, tlsOnce, nil) }},
		{"jdbc", tlsPlan, func(t *testing.T) report { return runScript(t, ctx, te, tlsPlan, nil, jdbcCommand(t)) }},
		{"psycopg2", tlsPlan, func(t *testing.T) report { return runScript(t, ctx, te, tlsPlan, nil, psycopg2Command(t)) }},
		{"node-postgres", tlsPlan, func(t *testing.T) report { return runScript(t, ctx, te, tlsPlan, nil, nodeCommand(t, ctx)) }},
		{"lib/pq", tlsPlan, func(t *testing.T) report { return runLibPQ(t, ctx, te, tlsPlan, nil) }},
	}
	for _, c := range tlsClients {
		t.Run(c.name+"/tls", func(t *testing.T) {
			rep := c.run(t)
			if len(rep.Modes) == 0 {
				t.Fatalf("%s over TLS reported no modes", c.name)
			}
			for _, m := range rep.Modes {
				checkMode(t, te, rep.Driver+" "+m.Mode+" over TLS", m, c.plan, nil, want)
			}
		})
	}
}

// checkMode checks one connection's report: every query ran as often as
// planned, with the declared columns and types, values of the declared
// kinds equal to the reference's, and every error with its SQLSTATE.
func checkMode(t *testing.T, e *env, who string, m modeReport, qs []planQuery, errs []planError, want map[string]result) {
	t.Helper()
	runs := map[string]int{}
	for _, r := range m.Results {
		runs[r.SQL]++
		cmds, err := commands.Parse(r.SQL)
		if err != nil || len(cmds) != 1 {
			t.Fatalf("%s: reported a result for %q, which is not one command", who, r.SQL)
		}
		cols, err := e.exec.Columns(cmds[0])
		if err != nil {
			t.Fatalf("%s: columns of %s: %v", who, r.SQL, err)
		}
		checkColumns(t, fmt.Sprintf("%s: %s (run %d)", who, r.SQL, r.Run), cols, r, want[r.SQL])
	}
	for _, q := range qs {
		if runs[q.sql] != q.repeat {
			t.Errorf("%s: %s ran %d times, want %d", who, q.sql, runs[q.sql], q.repeat)
		}
	}
	version := want["SHOW VERSION"].Rows[0][0].Text
	if len(m.Errors) != len(errs) {
		t.Fatalf("%s: %d errors reported, want %d: %+v", who, len(m.Errors), len(errs), m.Errors)
	}
	for i, pe := range errs {
		got := m.Errors[i]
		if got.SQL != pe.sql || got.Code != pe.code || got.Message == "" {
			t.Errorf("%s: %q failed with [%s] %q, want SQLSTATE %s", who, pe.sql, got.Code, got.Message, pe.code)
		}
		if got.After != version {
			t.Errorf("%s: after %q the connection answered SHOW VERSION with %q, want %q", who, pe.sql, got.After, version)
		}
	}
}

func checkColumns(t *testing.T, what string, cols []commands.Column, got, want result) {
	t.Helper()
	if len(got.Columns) != len(cols) {
		t.Errorf("%s: %d columns %v, want %d", what, len(got.Columns), got.Columns, len(cols))
		return
	}
	for i, c := range cols {
		g := got.Columns[i]
		if g.Name != c.Name {
			t.Errorf("%s: column %d is %q, want %q", what, i, g.Name, c.Name)
		}
		if g.Type != strconv.Itoa(int(c.Type)) && g.Type != typeNames[c.Type] && g.Type != commands.FormatType(c.Type) {
			t.Errorf("%s: column %s has type %q, want %s (OID %d)", what, c.Name, g.Type, typeNames[c.Type], c.Type)
		}
	}
	for _, row := range got.Rows {
		if len(row) != len(cols) {
			t.Errorf("%s: row of %d values, want %d", what, len(row), len(cols))
			return
		}
		for i, v := range row {
			if v.Kind != "null" && v.Kind != kinds[cols[i].Type] {
				t.Errorf("%s: column %s decoded as %s %q, want %s", what, cols[i].Name, v.Kind, v.Text, kinds[cols[i].Type])
			}
		}
	}
	if len(got.Rows) != len(want.Rows) {
		t.Errorf("%s: %d rows, want %d", what, len(got.Rows), len(want.Rows))
		return
	}
	for r := range got.Rows {
		for i, c := range cols {
			if volatile[c.Name] {
				continue
			}
			if g, w := got.Rows[r][i], want.Rows[r][i]; !sameValue(g, w) {
				t.Errorf("%s: row %d column %s = %s %q, want %s %q", what, r, c.Name, g.Kind, g.Text, w.Kind, w.Text)
			}
		}
	}
}

// sameValue compares canonical values; floats by value, as drivers print
// them with different digits.
func sameValue(a, b value) bool {
	if a.Kind == "float" && b.Kind == "float" {
		x, errx := strconv.ParseFloat(a.Text, 64)
		y, erry := strconv.ParseFloat(b.Text, 64)
		return errx == nil && erry == nil && x == y
	}
	return a == b
}

// runScript runs an external client with the plan on stdin and decodes the
// report it prints.
func runScript(t *testing.T, ctx context.Context, e *env, qs []planQuery, errs []planError, argv []string) report {
	t.Helper()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), e.libpqEnv()...)
	cmd.Stdin = strings.NewReader(planText(qs, errs))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstderr:\n%s\nstdout:\n%.2000s", strings.Join(argv, " "), err, stderr.String(), stdout.String())
	}
	var rep report
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("%s: report: %v\nstderr:\n%s", strings.Join(argv, " "), err, stderr.String())
	}
	if reflect.ValueOf(rep).IsZero() {
		t.Fatalf("%s: empty report", argv[0])
	}
	return rep
}

// libpqEnv is the connection to the admin server in libpq's variables
// (the scripts read them too: PGSSLMODE=require asks for TLS).
func (e *env) libpqEnv() []string {
	addr, sslmode := e.target()
	return []string{
		"PGHOST=" + addr.IP.String(), fmt.Sprintf("PGPORT=%d", addr.Port),
		"PGUSER=" + adminUser, "PGPASSWORD=" + adminPassword, "PGDATABASE=" + adminUser,
		"PGSSLMODE=" + sslmode, "PGCONNECT_TIMEOUT=10",
	}
}
