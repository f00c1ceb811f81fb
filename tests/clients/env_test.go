package clients

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

const (
	adminUser     = "admin"
	adminPassword = "matrix-admin-secret"
	publication   = "matrix_pub"
)

// env is a running admin server over a source and two shards on which a
// RESHARD is streaming and a VERIFY has finished.
type env struct {
	exec *commands.Executor
	// addr is the admin server (clients log in with SCRAM-SHA-256, TLS
	// optional); tlsAddr a second one on the same executor that refuses
	// clients without TLS (tls_client_required).
	addr, tlsAddr *net.TCPAddr
	// tls makes dsn and libpqEnv point at tlsAddr with sslmode=require.
	tls bool
	// reshardTask is the id of the streaming RESHARD task.
	reshardTask string
}

const sourceSchema = `
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers(id),
  total float8 NOT NULL, placed_at timestamptz NOT NULL DEFAULT now());
INSERT INTO customers SELECT i, 'customer ' || i FROM generate_series(1, 300) i;
INSERT INTO orders SELECT i, 1 + i % 300, i * 1.25, now() - i * interval '1 minute' FROM generate_series(1, 2000) i;
CREATE PUBLICATION ` + publication + ` FOR ALL TABLES;
`

// startEnv creates the databases, starts the admin server, runs RESHARD
// until it streams, VERIFY until it is done, and a SCHEMA_SYNC POST that
// waits on a lock, so that every view has rows.
func startEnv(t *testing.T, ctx context.Context) *env {
	t.Helper()
	src := cluster.Instances[0]
	dsts := cluster.Instances[1:3]
	// Databases 0-2: src and dst's two shards; 3 and 4: src2 and dst2, the
	// route of the SCHEMA_SYNC that holdSchemaSync keeps running.
	dbs := []*pgtest.Instance{src, dsts[0], dsts[1], src, dsts[0]}
	for i, inst := range dbs {
		if err := inst.CreateDatabase(ctx, dbName(i)); err != nil {
			t.Fatal(err)
		}
	}
	for db, schema := range map[int]string{0: sourceSchema, 3: gateSchema} {
		if err := src.Exec(ctx, dbName(db), schema); err != nil {
			t.Fatalf("load %s: %v", dbName(db), err)
		}
	}
	t.Cleanup(func() {
		// The slot holds WAL on the source: drop it once the server is gone.
		_ = src.Exec(context.Background(), dbName(0),
			`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database() AND NOT active`)
	})

	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testkit.WriteSelfSigned(t, certPath, keyPath)
	tlsSettings := fmt.Sprintf("tls_certificate = %q\ntls_private_key = %q\n", certPath, keyPath)
	// DDL replication on: SHOW DDL lists the statements run below.
	cfg := fmt.Sprintf("[general]\nhost = \"127.0.0.1\"\nport = %d\nresharding_ddl = \"replicate\"\n%s\n[admin]\nname = %q\nuser = %q\npassword = %q\n\n",
		freePort(t), tlsSettings, adminUser, adminUser, adminPassword)
	cfg += database("src", src, 0, 0)
	for i, d := range dsts {
		cfg += database("dst", d, i, i+1)
	}
	cfg += database("src2", src, 0, 3) + database("dst2", dsts[0], 0, 4)
	cfg += "[[sharded_tables]]\ndatabase = \"dst\"\nname = \"customers\"\ncolumn = \"id\"\n\n" +
		"[[sharded_tables]]\ndatabase = \"dst\"\ncolumn = \"customer_id\"\n"
	users := ""
	for _, db := range []string{"src", "dst", "src2", "dst2"} {
		users += fmt.Sprintf("[[users]]\nname = %q\ndatabase = %q\npassword = %q\nschema_admin = true\n\n", pgtest.User, db, pgtest.Password)
	}
	cfgPath, usersPath := filepath.Join(dir, "pgdog.toml"), filepath.Join(dir, "users.toml")
	// The TLS-only server's configuration: the same with its own port and
	// tls_client_required.
	tlsCfg := regexp.MustCompile(`(?m)^port = \d+$`).ReplaceAllString(cfg, fmt.Sprintf("port = %d", freePort(t)))
	tlsCfg = strings.Replace(tlsCfg, tlsSettings, tlsSettings+"tls_client_required = true\n", 1)
	tlsCfgPath := filepath.Join(dir, "pgdog-tls.toml")
	for path, body := range map[string]string{cfgPath: cfg, usersPath: users, tlsCfgPath: tlsCfg} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cat, err := catalog.Load(cfgPath, usersPath)
	if err != nil {
		t.Fatal(err)
	}
	tlsCat, err := catalog.Load(tlsCfgPath, usersPath)
	if err != nil {
		t.Fatal(err)
	}
	if cat.Config.General.AuthType != catalog.AuthSCRAM || tlsCat.Config.General.AuthType != catalog.AuthSCRAM {
		t.Fatalf("auth_type %q: the matrix checks SCRAM-SHA-256 logins, the default", cat.Config.General.AuthType)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "matrix", Level: hclog.Warn, Output: os.Stderr})
	e := &env{exec: commands.NewExecutor(cat, log)}
	e.addr, _ = testkit.ServeAdmin(t, cat, e.exec, log)
	e.tlsAddr, _ = testkit.ServeAdmin(t, tlsCat, e.exec, log)

	conn, err := pgx.Connect(ctx, e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	route := "src dst " + publication
	e.reshardTask = startTask(t, ctx, conn, "RESHARD "+route)
	t.Cleanup(func() {
		// Stop the stream before the server and PostgreSQL go.
		conn, err := pgx.Connect(context.Background(), e.dsn())
		if err != nil {
			t.Errorf("stop RESHARD: %v", err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "STOP_TASK "+e.reshardTask); err != nil {
			t.Errorf("STOP_TASK %s: %v", e.reshardTask, err)
		}
	})
	waitTask(t, ctx, conn, e.reshardTask, "streaming")
	// The application's DDL while streaming: SHOW DDL has its rows.
	if err := src.Exec(ctx, dbName(0), `CREATE INDEX orders_placed_at_idx ON orders (placed_at); COMMENT ON TABLE customers IS 'matrix'`); err != nil {
		t.Fatal(err)
	}
	waitDDL(t, ctx, conn, 2)
	verifyTask := startTask(t, ctx, conn, "VERIFY "+route)
	waitTask(t, ctx, conn, verifyTask, "done")
	e.holdSchemaSync(t, ctx, conn, "src2 dst2 "+publication)
	return e
}

// gateSchema is src2's: one table that gets an index after SCHEMA_SYNC PRE.
const gateSchema = `
CREATE TABLE gate (id bigint PRIMARY KEY, v bigint NOT NULL);
INSERT INTO gate SELECT i, i FROM generate_series(1, 100) i;
CREATE PUBLICATION ` + publication + ` FOR ALL TABLES;
`

// holdSchemaSync runs SCHEMA_SYNC PRE on route (src2 to dst2), then a
// SCHEMA_SYNC POST whose new index waits on a lock on dst2 until the test
// ends, so that SHOW SCHEMA_SYNC has rows (it lists unfinished statements
// only) while the clients' SCHEMA_SYNC on src to dst runs freely. It
// returns once those rows stop changing.
func (e *env) holdSchemaSync(t *testing.T, ctx context.Context, conn *pgx.Conn, route string) {
	t.Helper()
	if _, err := conn.Exec(ctx, "SCHEMA_SYNC PRE "+route); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Instances[0].Exec(ctx, dbName(3), `CREATE INDEX gate_v_idx ON gate (v)`); err != nil {
		t.Fatal(err)
	}
	locker, err := cluster.Instances[1].Connect(ctx, dbName(4))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// CREATE INDEX needs SHARE, which ROW EXCLUSIVE (what INSERT takes) blocks.
	if _, err := tx.Exec(ctx, `LOCK TABLE gate IN ROW EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := admin.Exec(context.Background(), "SCHEMA_SYNC POST "+route)
		done <- err
	}()
	t.Cleanup(func() {
		_ = tx.Rollback(context.Background())
		locker.Close(context.Background())
		if err := <-done; err != nil {
			t.Errorf("SCHEMA_SYNC POST after the lock went: %v", err)
		}
		admin.Close(context.Background())
	})
	var last string
	for {
		rows, err := conn.Query(ctx, "SHOW SCHEMA_SYNC")
		if err != nil {
			t.Fatal(err)
		}
		var now []string
		running := false
		for rows.Next() {
			v, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			running = running || (v[4] == "running" && strings.Contains(v[10].(string), "gate_v_idx"))
			now = append(now, fmt.Sprint(v[2], v[4], v[5], v[10]))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		cur := strings.Join(now, "\n")
		if running && cur == last {
			return
		}
		last = cur
		select {
		case <-ctx.Done():
			t.Fatalf("SCHEMA_SYNC POST never settled waiting on the lock: %s", cur)
		case err := <-done:
			t.Fatalf("SCHEMA_SYNC POST ended despite the lock: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
	}
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

func dbName(i int) string { return fmt.Sprintf("matrix_%d", i) }

func database(name string, inst *pgtest.Instance, shard, db int) string {
	return fmt.Sprintf("[[databases]]\nname = %q\nhost = %q\nport = %d\ndatabase_name = %q\nshard = %d\n\n",
		name, inst.Host, inst.Port, dbName(db), shard)
}

// overTLS is e pointing at the server that requires TLS.
func (e *env) overTLS() *env {
	c := *e
	c.tls = true
	return &c
}

// target is the admin server clients connect to and their sslmode.
func (e *env) target() (*net.TCPAddr, string) {
	if e.tls {
		return e.tlsAddr, "require"
	}
	return e.addr, "disable"
}

// dsn is a pgx connection string for the admin database.
func (e *env) dsn() string {
	addr, sslmode := e.target()
	return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=%s", adminUser, adminPassword, addr, adminUser, sslmode)
}

func startTask(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string) string {
	t.Helper()
	var id string
	if err := conn.QueryRow(ctx, sql).Scan(&id); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return id
}

// waitTask polls SHOW TASKS until task id reaches state; a task that ends
// in another state fails the test.
func waitTask(t *testing.T, ctx context.Context, conn *pgx.Conn, id, state string) {
	t.Helper()
	for {
		var got, msg string
		found := false
		rows, err := conn.Query(ctx, "SHOW TASKS")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			v, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			if v[0] == id {
				got, msg, found = v[5].(string), v[8].(string), true
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		switch {
		case !found:
			t.Fatalf("task %s is not in SHOW TASKS", id)
		case got == state:
			return
		case got == "failed" || got == "stopped" || got == "done":
			t.Fatalf("task %s ended %s, want %s: %s", id, got, state, msg)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("task %s still %s, want %s: %v", id, got, state, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitDDL waits until SHOW DDL lists n applied statements.
func waitDDL(t *testing.T, ctx context.Context, conn *pgx.Conn, n int) {
	t.Helper()
	for {
		rows, err := conn.Query(ctx, "SHOW DDL")
		if err != nil {
			t.Fatal(err)
		}
		applied := 0
		for rows.Next() {
			v, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			if v[7] == "applied" {
				applied++
			}
		}
		rows.Close()
		if applied >= n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("SHOW DDL lists fewer than %d applied statements", n)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
