package tests

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/metrics"
	"github.com/reshard/reshard/tests/testkit"
)

// Distinctive passwords, with characters a DSN must escape.
const (
	leakAdminPW = "AdmPw-7f3k'\"@/:%?;ü"
	leakSrcPW   = "SrcPw-q8z1 @/:%#&="
	leakDstPW   = "DstPw-m2x9'\\\"%"
	leakWrongPW = "WrongPw-v5c0@/:"
	leakNodePW  = "NodePw-h4j6%20"
	leakLoginPW = "LoginPw-r1t8@x"
)

// TestPasswordsNeverShown runs real operations — a RESHARD that streams,
// VERIFY, every SHOW view and /metrics scrape, and failing ones: a shard with a wrong password,
// an unreachable shard, admin logins with a wrong password by every
// auth_type (SCRAM-SHA-256, md5, clear text) — with
// distinctive passwords, captures reshard's logs (trace level) and every
// row, error, detail and hint the admin server sent, and checks that no
// password appears in them, raw or URL-encoded.
func TestPasswordsNeverShown(t *testing.T) {
	e := newCopyEnv(t, "leak", 1, 2, "")
	src := e.src[0]
	for _, inst := range cluster.Instances {
		for user, pw := range map[string]string{"leak_src": leakSrcPW, "leak_dst": leakDstPW} {
			sql := fmt.Sprintf(`DO $$BEGIN CREATE ROLE %s LOGIN SUPERUSER; EXCEPTION WHEN duplicate_object THEN NULL; END$$; ALTER ROLE %s PASSWORD '%s'`,
				user, user, strings.ReplaceAll(pw, "'", "''"))
			if err := inst.Exec(context.Background(), "postgres", sql); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(cfg), fmt.Sprintf("password = %q", adminPassword), fmt.Sprintf("password = %q", leakAdminPW), 1)
	// Two more destinations: one whose user has a wrong password, one whose
	// shard 1 is unreachable (and has its own node password).
	d0, d1 := e.dst[0], e.dst[1]
	for _, c := range []struct {
		name  string
		port1 int
		extra string
	}{{"dst_badpw", d1.inst.Port, ""}, {"dst_down", freePort(t), fmt.Sprintf("password = %q\n", leakNodePW)}} {
		text += fmt.Sprintf("[[databases]]\nname = %q\nhost = \"127.0.0.1\"\nport = %d\ndatabase_name = %q\nshard = 0\n\n", c.name, d0.inst.Port, d0.db)
		text += fmt.Sprintf("[[databases]]\nname = %q\nhost = \"127.0.0.1\"\nport = %d\ndatabase_name = %q\nshard = 1\n%s\n", c.name, c.port1, d1.db, c.extra)
	}
	users := ""
	for _, u := range []struct{ user, db, pw string }{
		{"leak_src", "src", leakSrcPW}, {"leak_dst", "dst", leakDstPW},
		{"leak_dst", "dst_badpw", leakWrongPW}, {"leak_dst", "dst_down", leakDstPW},
	} {
		users += fmt.Sprintf("[[users]]\nname = %q\ndatabase = %q\npassword = %q\nschema_admin = true\n\n", u.user, u.db, u.pw)
	}
	if err := os.WriteFile(e.cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.usersPath, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Buffer{}
	log := hclog.New(&hclog.LoggerOptions{Name: "reshard", Level: hclog.Trace, Output: logs})
	e.load(t)
	e.exec = commands.NewExecutor(e.cat, log)
	src.exec(t, copySchema)
	loadData(t, src, 0, 1, 500)
	src.exec(t, `ALTER TABLE orders REPLICA IDENTITY FULL`)

	addr, shutdown := serveAdmin(t, e, log)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// The metrics endpoint, as reshard serve runs it with openmetrics_port.
	ms, err := metrics.Listen("127.0.0.1", freePort(t), metrics.NewRegistry(e.exec.Registry, e.exec.Tasks), log)
	if err != nil {
		t.Fatal(err)
	}
	mctx, stopMetrics := context.WithCancel(ctx)
	defer stopMetrics()
	go func() { _ = ms.Serve(mctx) }()
	dsn := func(pw string) string {
		return (&url.URL{Scheme: "postgres", User: url.UserPassword("admin", pw), Host: addr.String(), Path: "/admin", RawQuery: "sslmode=disable"}).String()
	}
	// Refused logins: the attempted password is not logged.
	for _, pw := range []string{leakLoginPW, leakAdminPW + "x"} {
		if _, err := pgconn.Connect(ctx, dsn(pw)); err == nil {
			t.Fatal("a wrong admin password was accepted")
		}
	}
	// The same with the other auth_type methods (clear text sends the
	// password itself), each on its own admin server.
	for _, method := range []string{catalog.AuthMD5, catalog.AuthPlain} {
		other := regexp.MustCompile(`(?m)^port = \d+$`).ReplaceAllString(text, fmt.Sprintf("port = %d", freePort(t)))
		other = strings.Replace(other, "[general]\n", fmt.Sprintf("[general]\nauth_type = %q\n", method), 1)
		dir := t.TempDir()
		cfgPath := filepath.Join(dir, "pgdog.toml")
		if err := os.WriteFile(cfgPath, []byte(other), 0o600); err != nil {
			t.Fatal(err)
		}
		cat, err := catalog.Load(cfgPath, e.usersPath)
		if err != nil {
			t.Fatal(err)
		}
		addr, stop := serveAdmin(t, &copyEnv{cat: cat, exec: e.exec}, log)
		for _, pw := range []string{leakLoginPW, leakAdminPW + "x", leakAdminPW} {
			u := &url.URL{Scheme: "postgres", User: url.UserPassword("admin", pw), Host: addr.String(), Path: "/admin", RawQuery: "sslmode=disable"}
			c, err := pgconn.Connect(ctx, u.String())
			if (err == nil) != (pw == leakAdminPW) {
				t.Fatalf("auth_type %s: login with a wrong password: %v", method, err)
			}
			if err == nil {
				c.Close(ctx)
			}
		}
		stop()
	}
	admin, err := pgconn.Connect(ctx, dsn(leakAdminPW))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())

	var out strings.Builder
	run := func(sql string) [][]string {
		fmt.Fprintf(&out, "> %s\n", sql)
		results, err := admin.Exec(ctx, sql).ReadAll()
		if err != nil {
			fmt.Fprintf(&out, "error: %v\n", err)
			if pe, ok := err.(*pgconn.PgError); ok {
				fmt.Fprintf(&out, "%s\n%s\n%s\n", pe.Message, pe.Detail, pe.Hint)
			}
		}
		var rows [][]string
		for _, r := range results {
			for _, row := range r.Rows {
				vals := make([]string, len(row))
				for i, v := range row {
					vals[i] = string(v)
				}
				rows = append(rows, vals)
				fmt.Fprintf(&out, "%s\n", strings.Join(vals, " | "))
			}
		}
		return rows
	}
	showAll := func() {
		for _, v := range []string{"CONFIG", "DATABASES", "TASKS", "TABLE_COPIES", "REPLICATION_SLOTS", "SCHEMA_SYNC", "VERIFY", "VERSION"} {
			run("SHOW " + v)
		}
		for _, accept := range []string{"", "application/openmetrics-text"} {
			_, body := get(t, "http://"+ms.Addr()+"/metrics", accept)
			fmt.Fprintf(&out, "> GET /metrics (%s)\n%s\n", accept, body)
		}
	}
	// Failing operations: a wrong password for a shard, an unreachable shard.
	for _, dst := range []string{"dst_badpw", "dst_down"} {
		run("SCHEMA_SYNC PRE src " + dst + " all_tables")
		run("VERIFY src " + dst + " all_tables")
		// Preflight refuses at once: an ErrorResponse, no task.
		if rows := run("RESHARD src " + dst + " all_tables"); len(rows) != 0 {
			t.Fatalf("RESHARD onto %s answered %v; want its preflight refusal", dst, rows)
		}
	}
	showAll()
	// A RESHARD that streams, then VERIFY.
	id := run("RESHARD src dst all_tables")[0][0]
	e.waitTask(t, ctx, run, id, "streaming")
	src.exec(t, `INSERT INTO customers (id, name) VALUES (900001, 'late')`)
	e.waitCaughtUp(t, 2*time.Minute)
	vid := run("VERIFY src dst all_tables")[0][0]
	e.waitTask(t, ctx, run, vid, "done")
	showAll()
	run("STOP_TASK " + id)
	e.waitTask(t, ctx, run, id, "stopped")

	admin.Close(ctx)
	shutdown() // its log lines are checked too
	captured := map[string]string{"logs": logs.String(), "admin output": out.String()}
	for _, method := range []string{catalog.AuthSCRAM, catalog.AuthMD5, catalog.AuthPlain} {
		if !strings.Contains(captured["logs"], "wrong user or password ("+method+")") {
			t.Fatalf("no refused %s login in the logs", method)
		}
	}
	if !strings.Contains(captured["logs"], "admin login refused") || !strings.Contains(captured["admin output"], "password authentication failed") ||
		!strings.Contains(captured["admin output"], "connection refused") ||
		!strings.Contains(captured["admin output"], "admin.password | ********") ||
		!strings.Contains(captured["admin output"], "reshard_copy_rows_total") {
		t.Fatalf("the failures did not happen as planned:\n%s", lastLines(captured["admin output"], 40))
	}
	for what, text := range captured {
		for _, pw := range []string{leakAdminPW, leakSrcPW, leakDstPW, leakWrongPW, leakNodePW, leakLoginPW} {
			for _, form := range []string{pw, url.QueryEscape(pw), url.PathEscape(pw), url.UserPassword("u", pw).String()[2:]} {
				if i := strings.Index(text, form); i >= 0 {
					t.Fatalf("%s shows password %q (as %q): …%s…", what, pw, form, text[max(0, i-200):min(len(text), i+len(form)+50)])
				}
			}
		}
	}
	t.Logf("checked %d bytes of logs and %d bytes of admin output", len(captured["logs"]), len(captured["admin output"]))
}

// waitTask polls SHOW TASKS (through run, so its output is captured) until
// task id reaches state.
func (e *copyEnv) waitTask(t *testing.T, ctx context.Context, run func(string) [][]string, id, state string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		for _, r := range run("SHOW TASKS") {
			if r[0] == id && r[5] == state {
				return
			}
			if r[0] == id && (r[5] == "failed" || r[5] == "stopped") && r[5] != state {
				t.Fatalf("task %s ended %s, want %s: %s", id, r[5], state, r[8])
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("task %s did not reach %s", id, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
