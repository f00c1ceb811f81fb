package tests

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/tests/testkit"
	"github.com/reshard/reshard/wire"
)

const adminPassword = "s3cret-admin"

// adminServer is an admin server running in the test process.
type adminServer struct {
	port   int
	cancel context.CancelFunc
	done   chan error
	dir    string
}

func (a *adminServer) dsn(extra string) string {
	return fmt.Sprintf("postgres://admin:%s@127.0.0.1:%d/admin?sslmode=disable%s", adminPassword, a.port, extra)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// writeConfig writes a pgdog.toml describing the test cluster: "prod" on
// instance 0 and "prod_sharded" with two shards on instances 1 and 2.
func writeConfig(t *testing.T, dir string, port int, extraGeneral string) (string, string) {
	t.Helper()
	i0, i1, i2 := cluster.Instances[0], cluster.Instances[1], cluster.Instances[2]
	cfg := fmt.Sprintf(`[general]
host = "127.0.0.1"
port = %d
%s

[admin]
password = %q

[[databases]]
name = "prod"
host = "127.0.0.1"
port = %d
database_name = "postgres"

[[databases]]
name = "prod_sharded"
host = "127.0.0.1"
port = %d
database_name = "postgres"
shard = 0

[[databases]]
name = "prod_sharded"
host = "127.0.0.1"
port = %d
database_name = "postgres"
shard = 1

[[sharded_tables]]
database = "prod_sharded"
column = "user_id"
`, port, extraGeneral, adminPassword, i0.Port, i1.Port, i2.Port)
	users := `[[users]]
name = "postgres"
database = "prod"
password = "pgtest-secret"
schema_admin = true

[[users]]
name = "postgres"
database = "prod_sharded"
password = "pgtest-secret"
schema_admin = true
`
	cfgPath, usersPath := filepath.Join(dir, "pgdog.toml"), filepath.Join(dir, "users.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(usersPath, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, usersPath
}

func startAdmin(t *testing.T, extraGeneral string) *adminServer {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	cfgPath, usersPath := writeConfig(t, dir, port, extraGeneral)
	cat, err := catalog.Load(cfgPath, usersPath)
	if err != nil {
		t.Fatal(err)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: os.Stderr})
	srv, err := wire.New(cat, commands.NewExecutor(cat, log), log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &adminServer{port: port, cancel: cancel, done: make(chan error, 1), dir: dir}
	go func() { a.done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-a.done:
		case <-time.After(10 * time.Second):
			t.Error("admin server did not shut down")
		}
	})
	return a
}

// serveAdmin runs an admin server on e's catalog and executor until the test
// ends or shutdown is called, and returns its address.
func serveAdmin(t *testing.T, e *copyEnv, log hclog.Logger) (net.Addr, func()) {
	t.Helper()
	return testkit.ServeAdmin(t, e.cat, e.exec, log)
}

func connect(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

var execModes = map[string]pgx.QueryExecMode{
	"simple":          pgx.QueryExecModeSimpleProtocol,
	"exec":            pgx.QueryExecModeExec,
	"cache_statement": pgx.QueryExecModeCacheStatement,
	"cache_describe":  pgx.QueryExecModeCacheDescribe,
	"describe_exec":   pgx.QueryExecModeDescribeExec,
}

func TestAdminViewsPgx(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := startAdmin(t, "")
	conn := connect(t, ctx, a.dsn(""))
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	for name, mode := range execModes {
		t.Run(name, func(t *testing.T) {
			var version string
			if err := conn.QueryRow(ctx, "SHOW VERSION", mode).Scan(&version); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(version, "reshard "+commands.Version) {
				t.Fatalf("version %q", version)
			}

			rows, err := conn.Query(ctx, "show databases;", mode)
			if err != nil {
				t.Fatal(err)
			}
			type dbrow struct {
				name, host, dbname, role string
				port, shard              int64
				ro                       bool
			}
			var got []dbrow
			for rows.Next() {
				var r dbrow
				if err := rows.Scan(&r.name, &r.host, &r.port, &r.dbname, &r.role, &r.shard, &r.ro); err != nil {
					t.Fatal(err)
				}
				got = append(got, r)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			fds := rows.FieldDescriptions()
			wantCols := []string{"name", "host", "port", "database_name", "role", "shard", "resharding_only"}
			if len(fds) != len(wantCols) {
				t.Fatalf("columns %v", fds)
			}
			for i, fd := range fds {
				if fd.Name != wantCols[i] {
					t.Fatalf("column %d = %s, want %s", i, fd.Name, wantCols[i])
				}
			}
			if fds[2].DataTypeOID != 20 || fds[6].DataTypeOID != 16 {
				t.Fatalf("port/resharding_only types %d/%d, want int8/bool", fds[2].DataTypeOID, fds[6].DataTypeOID)
			}
			if len(got) != 3 || got[0].name != "prod" || got[1].name != "prod_sharded" || got[2].shard != 1 ||
				got[2].port != int64(cluster.Instances[2].Port) || got[0].role != "primary" {
				t.Fatalf("SHOW DATABASES = %+v", got)
			}

			rows, err = conn.Query(ctx, "SHOW CONFIG", mode)
			if err != nil {
				t.Fatal(err)
			}
			cfg := map[string]string{}
			for rows.Next() {
				var k, v string
				if err := rows.Scan(&k, &v); err != nil {
					t.Fatal(err)
				}
				cfg[k] = v
			}
			if rows.Err() != nil {
				t.Fatal(rows.Err())
			}
			if cfg["general.port"] != fmt.Sprint(a.port) || cfg["admin.password"] != "********" || cfg["users[1].password"] != "********" {
				t.Fatalf("SHOW CONFIG: %v", cfg)
			}
			for k, v := range cfg {
				for _, secret := range []string{adminPassword, "pgtest-secret"} {
					if strings.Contains(v, secret) {
						t.Fatalf("SHOW CONFIG leaks a password in %s", k)
					}
				}
			}

			// Progress views answer with their DESIGN columns (empty: no task runs).
			for view, first := range map[string]string{"TABLE_COPIES": "schema", "SCHEMA_SYNC": "database", "REPLICATION_SLOTS": "host", "TASKS": "id", "VERIFY": "task"} {
				rows, err := conn.Query(ctx, "SHOW "+view, mode)
				if err != nil {
					t.Fatal(err)
				}
				n := 0
				for rows.Next() {
					n++
				}
				if rows.Err() != nil {
					t.Fatalf("SHOW %s: %v", view, rows.Err())
				}
				if fds := rows.FieldDescriptions(); len(fds) == 0 || fds[0].Name != first || n != 0 {
					t.Fatalf("SHOW %s: columns %v rows %d", view, fds, n)
				}
			}

			// Driver probes.
			var iso string
			if err := conn.QueryRow(ctx, "SHOW transaction_isolation", mode).Scan(&iso); err != nil || iso != "read committed" {
				t.Fatalf("transaction_isolation = %q, %v", iso, err)
			}
			var scs string
			if err := conn.QueryRow(ctx, "SHOW standard_conforming_strings", mode).Scan(&scs); err != nil || scs != "on" {
				t.Fatalf("standard_conforming_strings = %q, %v", scs, err)
			}
			if _, err := conn.Exec(ctx, "SET extra_float_digits = 3", mode); err != nil {
				t.Fatalf("SET: %v", err)
			}
		})
	}
}

func TestAdminMultipleStatements(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := startAdmin(t, "")
	conn := connect(t, ctx, a.dsn(""))
	results, err := conn.PgConn().Exec(ctx, "SHOW VERSION; SHOW DATABASES").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 || len(results[0].Rows) != 1 || len(results[1].Rows) != 3 {
		t.Fatalf("got %d results", len(results))
	}
	if results[0].FieldDescriptions[0].Name != "version" || results[1].FieldDescriptions[0].Name != "name" {
		t.Fatalf("wrong result order: %v / %v", results[0].FieldDescriptions, results[1].FieldDescriptions)
	}
	// The extended protocol takes one command per statement, as PostgreSQL does.
	_, err = conn.PgConn().ExecParams(ctx, "SHOW VERSION; SHOW DATABASES", nil, nil, nil, nil).Close()
	expectCode(t, err, "42601")
	// An error in any statement of a simple query runs none of them.
	_, err = conn.PgConn().Exec(ctx, "SHOW VERSION; SHOW NOPE_NOT_A_VIEW").ReadAll()
	expectCode(t, err, "42704")
}

func expectCode(t *testing.T, err error, code string) *pgconn.PgError {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("want SQLSTATE %s, got %v", code, err)
	}
	if pe.Code != code {
		t.Fatalf("want SQLSTATE %s, got %s: %s (hint %q)", code, pe.Code, pe.Message, pe.Hint)
	}
	return pe
}

// TestAdminAuth logs in with each [general] auth_type (SCRAM-SHA-256 by
// default, md5, clear text): the server asks for that method and nothing
// else (read from the raw protocol), pgx and psql log in with it, a wrong
// password or user gets FATAL 28P01, a wrong database 3D000, and the
// server keeps serving.
func TestAdminAuth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, method := range []string{"", catalog.AuthSCRAM, catalog.AuthMD5, catalog.AuthPlain} {
		t.Run("auth_type="+method, func(t *testing.T) {
			extra := ""
			if method != "" {
				extra = fmt.Sprintf("auth_type = %q", method)
			}
			a := startAdmin(t, extra)
			want := map[string]string{"": "SCRAM-SHA-256", catalog.AuthSCRAM: "SCRAM-SHA-256", catalog.AuthMD5: "md5", catalog.AuthPlain: "clear text"}[method]
			if got := askedMethod(t, a.port); got != want {
				t.Fatalf("the server asked for %s, want %s", got, want)
			}
			conn := connect(t, ctx, a.dsn(""))
			var v string
			if err := conn.QueryRow(ctx, "SHOW VERSION").Scan(&v); err != nil {
				t.Fatal(err)
			}
			if out, err := runPsql(t, a, adminPassword, "-c", "SHOW VERSION"); err != nil || !strings.Contains(out, "(1 row)") {
				t.Fatalf("psql: %v\n%s", err, out)
			}
			if out, err := runPsql(t, a, "wrong", "-c", "SHOW VERSION"); err == nil || !strings.Contains(out, `password authentication failed for user "admin"`) {
				t.Fatalf("psql with a wrong password: %v\n%s", err, out)
			}
			_, err := pgx.Connect(ctx, strings.Replace(a.dsn(""), adminPassword, "wrong", 1))
			pe := expectCode(t, err, "28P01")
			if pe.Severity != "FATAL" || pe.Message != `password authentication failed for user "admin"` {
				t.Fatalf("wrong password: %s %q", pe.Severity, pe.Message)
			}
			// The right password for another user: refused the same way.
			_, err = pgx.Connect(ctx, strings.Replace(a.dsn(""), "admin:", "root:", 1))
			if pe := expectCode(t, err, "28P01"); pe.Message != `password authentication failed for user "root"` {
				t.Fatalf("wrong user: %q", pe.Message)
			}
			_, err = pgx.Connect(ctx, strings.Replace(a.dsn(""), "/admin?", "/prod?", 1))
			pe = expectCode(t, err, "3D000")
			if !strings.Contains(pe.Message, `"prod"`) {
				t.Fatalf("message %q does not name the database", pe.Message)
			}
			// The server is still fine after refused logins.
			if err := connect(t, ctx, a.dsn("")).Ping(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// askedMethod sends a StartupMessage for the admin user and names the
// authentication the server asks for first ("SCRAM-SHA-256" for SASL
// offering only it).
func askedMethod(t *testing.T, port int) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "admin", "database": "admin"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	switch m := msg.(type) {
	case *pgproto3.AuthenticationSASL:
		return strings.Join(m.AuthMechanisms, ",")
	case *pgproto3.AuthenticationMD5Password:
		return "md5"
	case *pgproto3.AuthenticationCleartextPassword:
		return "clear text"
	}
	return fmt.Sprintf("%T", msg)
}

// TestAdminSCRAMMalformed: a SCRAM exchange that breaks the protocol (an
// unknown mechanism, a garbled client-first message, a proof for another
// nonce) is refused FATAL with 08P01 or 28P01, and the server serves the
// next client.
func TestAdminSCRAMMalformed(t *testing.T) {
	a := startAdmin(t, "")
	cases := []struct {
		name  string
		steps func(fe *pgproto3.Frontend) error
		code  string
	}{
		{"unknown mechanism", func(fe *pgproto3.Frontend) error {
			fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-1", Data: []byte("n,,n=,r=abc")})
			return fe.Flush()
		}, "08P01"},
		{"garbled client-first", func(fe *pgproto3.Frontend) error {
			fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("x,garbage")})
			return fe.Flush()
		}, "08P01"},
		{"channel binding the server did not offer", func(fe *pgproto3.Frontend) error {
			fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("p=tls-server-end-point,,n=,r=abc")})
			return fe.Flush()
		}, "08P01"},
		{"proof of the wrong nonce", func(fe *pgproto3.Frontend) error {
			fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=clientnonce")})
			if err := fe.Flush(); err != nil {
				return err
			}
			if _, err := fe.Receive(); err != nil { // AuthenticationSASLContinue
				return err
			}
			fe.Send(&pgproto3.SASLResponse{Data: []byte("c=biws,r=othernonce,p=dGhpcyBpcyBub3QgYSBwcm9vZg==")})
			return fe.Flush()
		}, "08P01"},
	}
	for _, tc := range cases {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", a.port), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fe := pgproto3.NewFrontend(c, c)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "admin", "database": "admin"}})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		if _, err := fe.Receive(); err != nil { // AuthenticationSASL
			t.Fatal(err)
		}
		if err := tc.steps(fe); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		msg, err := fe.Receive()
		er, ok := msg.(*pgproto3.ErrorResponse)
		if err != nil || !ok || er.Code != tc.code || er.Severity != "FATAL" {
			t.Fatalf("%s: got %#v (%v), want FATAL %s", tc.name, msg, err, tc.code)
		}
		c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := connect(t, ctx, a.dsn("")).Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestAdminMalformed sends malformed and unrunnable commands through the
// wire: each gets an ErrorResponse with a SQLSTATE naming the problem, and
// the same connection keeps working afterwards.
func TestAdminMalformed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := startAdmin(t, "")
	conn := connect(t, ctx, a.dsn(""))
	cases := []adminErrorCase{
		{"SCHEMA_SYNC", "42601", "missing the phase"},
		{"SCHEMA_SYNC PRE prod", "42601", "missing <destination>"},
		{"SCHEMA_SYNC LATER prod prod_sharded pub", "42601", "unknown schema sync phase"},
		{"SCHEMA_SYNC PRE prod prod_sharded pub extra", "42601", `"extra"`},
		{"SCHEMA_SYNC PRE 'prod' prod_sharded pub", "42601", "string constant"},
		{"COPY_DATA prod", "42601", "missing <destination>"},
		{"COPY_DATA prod prod_sharded pub slot more", "42601", `"more"`},
		{"REPLICATE prod prod_sharded pub", "42601", "missing <replication slot>"},
		{"RESHARD prod prod_sharded", "42601", "missing <publication>"},
		{"VERIFY", "42601", "missing <source>"},
		{"CUTOVER", "42601", "missing the task id"},
		{"CUTOVER 1 2", "42601", `"2"`},
		{"STOP_TASK", "42601", "missing the task id"},
		{"SHOW", "42601", "missing what to show"},
		{"SHOW TASKS please", "42601", `"please"`},
		{"SHOW nonsense_view", "42704", `"nonsense_view"`},
		{"SELECT * FROM t", "42P01", `relation "t" does not exist`},
		{"INSERT INTO t VALUES (1)", "42601", `unknown admin command "INSERT"`},
		{"COPYDATA prod prod_sharded pub", "42601", "COPYDATA"},
		{"'SHOW' TASKS", "42601", "starts with a keyword"},
		{`SHOW "unterminated`, "42601", "unterminated"},
		{"SHOW TASKS; 'oops", "42601", "unterminated"},
		{"/* never closed", "42601", "unterminated"},
		{"RESHARD a.b c d", "42601", `"."`},
		{"VERIFY prod prod_sharded pub;;; BOGUS", "42601", "BOGUS"},
		{`RESHARD "" prod_sharded pub`, "42601", "zero-length"},
		{"SCHEMA_SYNC PRE nope prod_sharded pub", "3D000", `"nope"`},
		{"COPY_DATA prod missing_db pub", "3D000", `"missing_db"`},
		{"RESHARD Prod_Sharded2 prod pub", "3D000", `"prod_sharded2"`},
		{`VERIFY "PROD" prod_sharded pub`, "3D000", `"PROD"`},
		{"REPLICATE prod prod pub slot", "22023", "source and destination"},
		{"SCHEMA_SYNC PRE prod prod_sharded pub", "42704", `publication "pub" does not exist`},
		{"STOP_TASK 999", "42704", `task "999" does not exist`},
		{"CUTOVER 1", "42704", `task "1" does not exist`},
		{"SHOW " + strings.Repeat("x", commands.MaxQueryBytes), "54000", "longer than"},
		{`COPY_DATA prod prod_sharded pub "Bad Slot"`, "42602", `invalid replication slot name "Bad Slot"`},
		{"REPLICATE prod prod_sharded pub s; x", "42601", `"x"`},
		{"REPLICATE prod prod_sharded pub " + strings.Repeat("s", 64), "42622", "at most 63"},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	expectAdminErrors(t, ctx, conn, cases)
}

// adminErrorCase is a query the admin server must refuse with an
// ErrorResponse carrying code and a message (or detail) containing msg.
type adminErrorCase struct{ sql, code, msg string }

// expectAdminErrors sends each case through the simple and the extended
// protocol, checks the ErrorResponse, and that the connection still works.
func expectAdminErrors(t *testing.T, ctx context.Context, conn *pgx.Conn, cases []adminErrorCase) {
	t.Helper()
	for _, c := range cases {
		for _, extended := range []bool{false, true} {
			var err error
			if extended {
				_, err = conn.PgConn().ExecParams(ctx, c.sql, nil, nil, nil, nil).Close()
			} else {
				_, err = conn.Exec(ctx, c.sql, pgx.QueryExecModeSimpleProtocol)
			}
			mode := map[bool]string{false: "simple", true: "extended"}[extended]
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				t.Fatalf("%.50q (%s): want an ErrorResponse, got %v", c.sql, mode, err)
			}
			if pe.Code != c.code || !strings.Contains(pe.Message+" "+pe.Detail, c.msg) {
				t.Errorf("%.50q (%s): got [%s] %.300q, want [%s] containing %q", c.sql, mode, pe.Code, pe.Message, c.code, c.msg)
			}
			if len(pe.Message)+len(pe.Detail) > 1000 {
				t.Errorf("%.50q (%s): a %d-byte message echoes too much of the query", c.sql, mode, len(pe.Message)+len(pe.Detail))
			}
			if pe.Code == "42601" && strings.HasPrefix(strings.ToUpper(c.sql), "SCHEMA_SYNC") && !strings.Contains(pe.Hint, "SCHEMA_SYNC PRE|POST|CUTOVER|POST_CUTOVER") {
				t.Errorf("%q: hint %q lacks the expected form", c.sql, pe.Hint)
			}
			var v string
			if err := conn.QueryRow(ctx, "SHOW VERSION").Scan(&v); err != nil {
				t.Fatalf("connection unusable after %q: %v", c.sql, err)
			}
		}
	}
}

func psqlPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("psql")
	if err != nil {
		t.Fatal("psql is not installed: .ci/run installs postgresql-client")
	}
	return p
}

func runPsql(t *testing.T, a *adminServer, password string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(psqlPath(t), append([]string{"-X", "-h", "127.0.0.1", "-p", fmt.Sprint(a.port), "-U", "admin", "-d", "admin"}, args...)...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestAdminPsql(t *testing.T) {
	a := startAdmin(t, "")
	out, err := runPsql(t, a, adminPassword, "-c", "SHOW VERSION")
	if err != nil || !strings.Contains(out, "reshard "+commands.Version) || !strings.Contains(out, "(1 row)") {
		t.Fatalf("SHOW VERSION via psql: %v\n%s", err, out)
	}
	out, err = runPsql(t, a, adminPassword, "-A", "-F", "|", "-c", "SHOW DATABASES")
	want := fmt.Sprintf("prod_sharded|127.0.0.1|%d|postgres|primary|1|f", cluster.Instances[2].Port)
	if err != nil || !strings.Contains(out, want) || !strings.Contains(out, "(3 rows)") {
		t.Fatalf("SHOW DATABASES via psql: %v\n%s\nwant line %s", err, out, want)
	}
	out, err = runPsql(t, a, adminPassword, "-c", "SHOW CONFIG")
	if err != nil || !strings.Contains(out, "admin.password") || strings.Contains(out, adminPassword) {
		t.Fatalf("SHOW CONFIG via psql: %v\n%s", err, out)
	}
	// Both results of one query string.
	out, err = runPsql(t, a, adminPassword, "-c", "SHOW VERSION; SHOW DATABASES")
	if err != nil || !strings.Contains(out, "(1 row)") || !strings.Contains(out, "(3 rows)") {
		t.Fatalf("two statements via psql: %v\n%s", err, out)
	}
	// Errors carry SQLSTATE and hint; psql exits non-zero; the server stays up.
	out, err = runPsql(t, a, adminPassword, "-v", "VERBOSITY=verbose", "-c", "SCHEMA_SYNC PRE prod")
	if err == nil || !strings.Contains(out, "42601") || !strings.Contains(out, "HINT:  expected: SCHEMA_SYNC PRE|POST|CUTOVER|POST_CUTOVER") {
		t.Fatalf("syntax error via psql: %v\n%s", err, out)
	}
	out, err = runPsql(t, a, "wrong-password", "-c", "SHOW VERSION")
	if err == nil || !strings.Contains(out, "password authentication failed") {
		t.Fatalf("wrong password via psql: %v\n%s", err, out)
	}
	// What people type first: the server's version, the list of tables
	// (psql's \dt reads pg_class: the admin database has none).
	out, err = runPsql(t, a, adminPassword, "-c", "SELECT version()", "-c", `\dt`)
	if err != nil || !strings.Contains(out, "PostgreSQL 15.0 (reshard "+commands.Version+" admin server)") || !strings.Contains(out, "Did not find any relations.") {
		t.Fatalf("SELECT version() and \\dt via psql: %v\n%s", err, out)
	}
	out, err = runPsql(t, a, adminPassword, "-v", "VERBOSITY=verbose", "-c", "SELECT * FROM orders")
	if err == nil || !strings.Contains(out, `42P01: relation "orders" does not exist`) || !strings.Contains(out, "HINT:  the admin database has no tables") {
		t.Fatalf("SELECT from a table via psql: %v\n%s", err, out)
	}
	// Script mode: several lines, comments, and a ping-style empty query.
	out, err = runPsql(t, a, adminPassword, "-v", "ON_ERROR_STOP=1", "-c", "-- just a comment", "-c", "SET application_name = 'ops'", "-c", "show tasks")
	if err != nil || !strings.Contains(out, "SET") || !strings.Contains(out, "(0 rows)") {
		t.Fatalf("psql script: %v\n%s", err, out)
	}
}

// startTLSAdmin starts an admin server with a self-signed certificate and
// the extra [general] settings.
func startTLSAdmin(t *testing.T, extra string) *adminServer {
	t.Helper()
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testkit.WriteSelfSigned(t, certPath, keyPath)
	return startAdmin(t, fmt.Sprintf("tls_certificate = %q\ntls_private_key = %q\n%s", certPath, keyPath, extra))
}

func TestAdminTLS(t *testing.T) {
	a := startTLSAdmin(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := connect(t, ctx, strings.Replace(a.dsn(""), "sslmode=disable", "sslmode=require", 1))
	if _, ok := conn.PgConn().Conn().(*tls.Conn); !ok {
		t.Fatalf("connection is %T, not TLS", conn.PgConn().Conn())
	}
	var v string
	if err := conn.QueryRow(ctx, "SHOW VERSION").Scan(&v); err != nil {
		t.Fatal(err)
	}
	out, err := runPsqlTLS(t, a)
	if err != nil || !strings.Contains(out, "SSL connection") {
		t.Fatalf("psql over TLS: %v\n%s", err, out)
	}
}

// TestAdminTLSRequired: with tls_client_required a client without TLS is
// refused (FATAL 28000, before it sends its password); with TLS it works.
func TestAdminTLSRequired(t *testing.T) {
	a := startTLSAdmin(t, "tls_client_required = true")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := pgx.Connect(ctx, a.dsn(""))
	pe := expectCode(t, err, "28000")
	if pe.Severity != "FATAL" || !strings.Contains(pe.Message, "requires TLS") || !strings.Contains(pe.Hint, "sslmode=require") {
		t.Fatalf("refusal without TLS: %s %q hint %q", pe.Severity, pe.Message, pe.Hint)
	}
	// A wrong password without TLS gets the same refusal: the password is
	// never asked for.
	_, err = pgx.Connect(ctx, strings.Replace(a.dsn(""), adminPassword, "wrong", 1))
	expectCode(t, err, "28000")
	for _, mode := range []string{"require", "prefer"} {
		conn := connect(t, ctx, strings.Replace(a.dsn(""), "sslmode=disable", "sslmode="+mode, 1))
		if _, ok := conn.PgConn().Conn().(*tls.Conn); !ok {
			t.Fatalf("sslmode=%s: connection is %T, not TLS", mode, conn.PgConn().Conn())
		}
		var v string
		if err := conn.QueryRow(ctx, "SHOW VERSION").Scan(&v); err != nil {
			t.Fatal(err)
		}
	}
	// Over TLS the password is still checked.
	_, err = pgx.Connect(ctx, strings.Replace(strings.Replace(a.dsn(""), "sslmode=disable", "sslmode=require", 1), adminPassword, "wrong", 1))
	expectCode(t, err, "28P01")
	out, err := runPsql(t, a, adminPassword, "-c", "SHOW VERSION")
	if err == nil || !strings.Contains(out, "requires TLS") {
		t.Fatalf("psql without TLS: %v\n%s", err, out)
	}
	if out, err := runPsqlTLS(t, a); err != nil || !strings.Contains(out, "SSL connection") {
		t.Fatalf("psql over TLS: %v\n%s", err, out)
	}
}

func runPsqlTLS(t *testing.T, a *adminServer) (string, error) {
	cmd := exec.Command(psqlPath(t), "-X", "-h", "127.0.0.1", "-p", fmt.Sprint(a.port), "-U", "admin", "-d", "admin", "-c", `\conninfo`)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+adminPassword, "PGSSLMODE=require", "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	return string(out), err
}
