package clients

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/tests/testkit"
)

// pgxModes are pgx's query execution modes by name: the simple protocol,
// the extended protocol with an unnamed statement, and named statements
// prepared once per connection and cached.
var pgxModes = map[string]pgx.QueryExecMode{
	"simple":          pgx.QueryExecModeSimpleProtocol,
	"exec":            pgx.QueryExecModeExec,
	"cache_statement": pgx.QueryExecModeCacheStatement,
}

// runPgx runs the plan through pgx, one connection per mode.
func runPgx(t *testing.T, ctx context.Context, e *env, qs []planQuery, errs []planError, modes []string) report {
	t.Helper()
	rep := report{Driver: "pgx/v5"}
	for _, name := range modes {
		cfg, err := pgx.ParseConfig(e.dsn())
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = pgxModes[name]
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("pgx %s: connect: %v", name, err)
		}
		// The version libpq, pgjdbc and psql's banner read.
		if v, _ := commands.Setting("server_version"); conn.PgConn().ParameterStatus("server_version") != v {
			t.Errorf("pgx %s: server_version is %q, want %q (as SHOW server_version)", name, conn.PgConn().ParameterStatus("server_version"), v)
		}
		// A pool's health check (Grafana's Save & test): "-- ping".
		if err := conn.Ping(ctx); err != nil {
			t.Fatalf("pgx %s: ping: %v", name, err)
		}
		m := modeReport{Mode: name}
		for _, q := range qs {
			for run := 0; run < q.repeat; run++ {
				r, err := pgxQuery(ctx, conn, q.sql)
				if err != nil {
					t.Fatalf("pgx %s: %s (run %d): %v", name, q.sql, run, err)
				}
				r.Run = run
				m.Results = append(m.Results, r)
			}
		}
		for _, pe := range errs {
			var err error
			if pe.cancel {
				err = untilCanceled(ctx, func() error { _, err := pgxQuery(ctx, conn, pe.sql); return err },
					func() error { return conn.PgConn().CancelRequest(ctx) })
			} else {
				_, err = pgxQuery(ctx, conn, pe.sql)
			}
			er := errResult{SQL: pe.sql}
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				er.Code, er.Message = pgErr.Code, pgErr.Message
			} else {
				er.Message = fmt.Sprint(err)
			}
			if err := conn.QueryRow(ctx, "SHOW VERSION").Scan(&er.After); err != nil {
				er.After = ""
			}
			m.Errors = append(m.Errors, er)
		}
		conn.Close(ctx)
		rep.Modes = append(rep.Modes, m)
	}
	return rep
}

// untilCanceled runs query while sending cancel requests every 100 ms
// until it returns (a request that comes before the command runs finds
// nothing to cancel, as with PostgreSQL).
func untilCanceled(ctx context.Context, query func() error, cancel func() error) error {
	done := make(chan error, 1)
	go func() { done <- query() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			if err := cancel(); err != nil {
				return fmt.Errorf("cancel request: %w", err)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func pgxQuery(ctx context.Context, conn *pgx.Conn, sql string) (result, error) {
	r := result{SQL: sql}
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return r, err
	}
	defer rows.Close()
	for _, fd := range rows.FieldDescriptions() {
		r.Columns = append(r.Columns, column{Name: fd.Name, Type: strconv.Itoa(int(fd.DataTypeOID))})
	}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return r, err
		}
		row := make([]value, len(vals))
		for i, v := range vals {
			row[i] = goValue(v)
		}
		r.Rows = append(r.Rows, row)
	}
	return r, rows.Err()
}

// goValue canonicalises a value as pgx decoded it.
func goValue(v any) value {
	switch x := v.(type) {
	case nil:
		return value{"null", ""}
	case int64:
		return value{"int", strconv.FormatInt(x, 10)}
	case int32:
		return value{"int", strconv.FormatInt(int64(x), 10)}
	case float64:
		return value{"float", strconv.FormatFloat(x, 'g', -1, 64)}
	case bool:
		return value{"bool", strconv.FormatBool(x)}
	case time.Time:
		return value{"time", strconv.FormatInt(x.UnixMilli(), 10)}
	case string:
		return value{"text", x}
	}
	return value{fmt.Sprintf("unexpected %T", v), fmt.Sprint(v)}
}

// runPsql runs every query through psql in CSV mode and reads the column
// names and types with \gdesc. psql prints text, so each field is parsed as
// PostgreSQL prints its column's type: a wrong text form fails the test.
func runPsql(t *testing.T, ctx context.Context, e *env, qs []planQuery, errs []planError) report {
	t.Helper()
	m := modeReport{Mode: "simple"}
	for _, q := range qs {
		cmds, err := commands.Parse(q.sql)
		if err != nil {
			t.Fatal(err)
		}
		cols, err := e.exec.Columns(cmds[0])
		if err != nil {
			t.Fatal(err)
		}
		for run := 0; run < q.repeat; run++ {
			out, err := psql(ctx, e, q.sql)
			if err != nil {
				t.Fatalf("psql %s: %v\n%s", q.sql, err, out)
			}
			records, err := csv.NewReader(strings.NewReader(out)).ReadAll()
			if err != nil || len(records) == 0 {
				t.Fatalf("psql %s: CSV: %v\n%s", q.sql, err, out)
			}
			r := result{SQL: q.sql, Run: run, Columns: psqlDescribe(t, ctx, e, q.sql)}
			if got := strings.Join(records[0], ","); got != columnNames(r.Columns) {
				t.Errorf("psql %s: header %s, but \\gdesc describes %s", q.sql, got, columnNames(r.Columns))
			}
			for _, rec := range records[1:] {
				row := make([]value, len(rec))
				for i, field := range rec {
					if i < len(cols) {
						row[i] = psqlValue(t, q.sql, cols[i], field)
					}
				}
				r.Rows = append(r.Rows, row)
			}
			m.Results = append(m.Results, r)
		}
	}
	for _, pe := range errs {
		var out string
		var err error
		if pe.cancel {
			out, err = psqlCanceled(ctx, e, pe.sql)
		} else {
			out, err = psql(ctx, e, pe.sql)
		}
		er := errResult{SQL: pe.sql, Message: out}
		if err == nil {
			t.Errorf("psql %q succeeded:\n%s", pe.sql, out)
		}
		if m := psqlError.FindStringSubmatch(out); m != nil {
			er.Code, er.Message = m[1], m[2]
		}
		m.Errors = append(m.Errors, er)
	}
	// psql opens a connection per query: show that one connection survives
	// an error, with two queries in one script. (A cancelled command is
	// followed by SHOW VERSION on a new connection: psql reading a script
	// exits on a SIGINT that comes between two statements.)
	for i, pe := range errs {
		script := pe.sql + ";\nSHOW VERSION"
		if pe.cancel {
			script = "SHOW VERSION"
		}
		out, _ := psql(ctx, e, script)
		if at := strings.Index(out, "version\n"); at >= 0 {
			if recs, err := csv.NewReader(strings.NewReader(out[at:])).ReadAll(); err == nil && len(recs) == 2 {
				m.Errors[i].After = recs[1][0]
			}
		}
	}
	return report{Driver: "psql", Modes: []modeReport{m}}
}

// pgTimestamptz is PostgreSQL's text form of a timestamptz under DateStyle
// ISO: microseconds at most, a numeric zone offset.
var pgTimestamptz = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?[+-]\d\d(:\d\d)?$`)

// psqlDescribe reads a query's columns with psql's \gdesc, which describes
// the statement through the extended protocol and names its types with
// format_type.
func psqlDescribe(t *testing.T, ctx context.Context, e *env, sql string) []column {
	t.Helper()
	// \gdesc describes the query buffer: no terminating semicolon.
	out, err := psql(ctx, e, strings.TrimSuffix(sql, ";")+" \\gdesc")
	if err != nil {
		t.Fatalf("psql %s \\gdesc: %v\n%s", sql, err, out)
	}
	records, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(records) == 0 || strings.Join(records[0], ",") != "Column,Type" {
		t.Fatalf("psql %s \\gdesc: %v\n%s", sql, err, out)
	}
	var cols []column
	for _, rec := range records[1:] {
		cols = append(cols, column{Name: rec[0], Type: rec[1]})
	}
	return cols
}

func columnNames(cols []column) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	return strings.Join(names, ",")
}

var psqlError = regexp.MustCompile(`ERROR:  ([0-9A-Z]{5}): (.*)`)

// psql runs a script through psql in CSV mode with verbose errors.
func psql(ctx context.Context, e *env, script string) (string, error) {
	cmd := exec.CommandContext(ctx, "psql", "-X", "--csv", "-v", "VERBOSITY=verbose", "-v", "ON_ERROR_STOP=0")
	cmd.Env = append(os.Environ(), e.libpqEnv()...)
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil && strings.Contains(out.String(), "ERROR:") {
		err = errors.New("psql printed an error")
	}
	return out.String(), err
}

// psqlCanceled runs a SCHEMA_SYNC in psql and, once SHOW SCHEMA_SYNC
// lists its statements (psql handles SIGINT only once connected), interrupts
// psql every 100 ms (SIGINT, as Ctrl-C: psql sends a cancel request) until
// it reports an error.
func psqlCanceled(ctx context.Context, e *env, sql string) (string, error) {
	admin, err := pgx.Connect(ctx, e.dsn())
	if err != nil {
		return "", err
	}
	defer admin.Close(ctx)
	statements := func() int { return schemaSyncRows(ctx, admin) }
	before := statements()
	cmd := exec.CommandContext(ctx, "psql", "-X", "--csv", "-v", "VERBOSITY=verbose", "-c", sql)
	cmd.Env = append(os.Environ(), e.libpqEnv()...)
	var out testkit.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	running := false
	for {
		select {
		case err := <-done:
			return out.String(), err
		case <-tick.C:
			running = running || statements() > before
			if running && !strings.Contains(out.String(), "ERROR:") {
				_ = cmd.Process.Signal(os.Interrupt)
			}
		}
	}
}

// psqlValue parses a field psql printed in its column's PostgreSQL text
// form. psql prints NULL as an empty field.
func psqlValue(t *testing.T, sql string, c commands.Column, field string) value {
	t.Helper()
	if field == "" && c.Type != commands.TypeText {
		return value{"null", ""}
	}
	bad := func(err error) value {
		t.Errorf("psql %s: column %s: %q is not %s text: %v", sql, c.Name, field, typeNames[c.Type], err)
		return value{"text", field}
	}
	switch c.Type {
	case commands.TypeInt8, commands.TypeInt4, commands.TypeInt2, commands.TypeOid:
		n, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			return bad(err)
		}
		return value{"int", strconv.FormatInt(n, 10)}
	case commands.TypeFloat8:
		f, err := strconv.ParseFloat(field, 64)
		if err != nil {
			return bad(err)
		}
		return value{"float", strconv.FormatFloat(f, 'g', -1, 64)}
	case commands.TypeBool:
		if field != "t" && field != "f" {
			return bad(errors.New("want t or f"))
		}
		return value{"bool", strconv.FormatBool(field == "t")}
	case commands.TypeTimestamptz:
		if !pgTimestamptz.MatchString(field) {
			return bad(errors.New("not in PostgreSQL's ISO form"))
		}
		ts, err := time.Parse("2006-01-02 15:04:05.999999Z07", field)
		if err != nil {
			return bad(err)
		}
		return value{"time", strconv.FormatInt(ts.UnixMilli(), 10)}
	}
	return value{"text", field}
}

// jdbcCommand runs java/Matrix.java against Debian's pgjdbc.
func jdbcCommand(t *testing.T) []string {
	t.Helper()
	jar := "/usr/share/java/postgresql.jar"
	if _, err := os.Stat(jar); err != nil {
		t.Fatalf("pgjdbc is not installed (%v): scripts/deps.sh installs libpostgresql-jdbc-java", err)
	}
	java := lookPath(t, "java", "default-jre-headless")
	return []string{java, "-cp", jar, filepath.Join("java", "Matrix.java")}
}

// psycopg2Command runs python/matrix.py with Debian's python3, for which
// python3-psycopg2 is built (a python3 earlier on PATH may lack it).
func psycopg2Command(t *testing.T) []string {
	t.Helper()
	py := "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import psycopg2").CombinedOutput(); err != nil {
		t.Fatalf("psycopg2 is not importable by %s (%v: %s): scripts/deps.sh installs python3-psycopg2", py, err, out)
	}
	return []string{py, filepath.Join("python", "matrix.py")}
}

// nodeCommand runs node/matrix.js, installing node-postgres from
// package-lock.json first when node_modules is missing.
func nodeCommand(t *testing.T, ctx context.Context) []string {
	t.Helper()
	node := lookPath(t, "node", "nodejs")
	if _, err := os.Stat(filepath.Join("node", "node_modules", "pg")); err != nil {
		npm := lookPath(t, "npm", "npm")
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = "node"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in tests/clients/node: %v\n%s", err, out)
		}
	}
	return []string{node, filepath.Join("node", "matrix.js")}
}

func lookPath(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: scripts/deps.sh installs %s", name, pkg)
	}
	return p
}
