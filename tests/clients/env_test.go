package clients

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/wire"
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
	addr *net.TCPAddr
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
// until it streams and VERIFY until it is done, so that every view but
// SCHEMA_SYNC (which lists unfinished statements only) has rows.
func startEnv(t *testing.T, ctx context.Context) *env {
	t.Helper()
	src := cluster.Instances[0]
	dsts := cluster.Instances[1:3]
	for i, inst := range cluster.Instances {
		if err := inst.CreateDatabase(ctx, dbName(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Exec(ctx, dbName(0), sourceSchema); err != nil {
		t.Fatalf("load source: %v", err)
	}
	t.Cleanup(func() {
		// The slot holds WAL on the source: drop it once the server is gone.
		_ = src.Exec(context.Background(), dbName(0),
			`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database() AND NOT active`)
	})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := fmt.Sprintf("[general]\nhost = \"127.0.0.1\"\nport = %d\n\n[admin]\nname = %q\nuser = %q\npassword = %q\n\n",
		port, adminUser, adminUser, adminPassword)
	cfg += database("src", src, 0, 0)
	for i, d := range dsts {
		cfg += database("dst", d, i, i+1)
	}
	cfg += "[[sharded_tables]]\ndatabase = \"dst\"\nname = \"customers\"\ncolumn = \"id\"\n\n" +
		"[[sharded_tables]]\ndatabase = \"dst\"\ncolumn = \"customer_id\"\n"
	users := ""
	for _, db := range []string{"src", "dst"} {
		users += fmt.Sprintf("[[users]]\nname = %q\ndatabase = %q\npassword = %q\nschema_admin = true\n\n", pgtest.User, db, pgtest.Password)
	}
	dir := t.TempDir()
	cfgPath, usersPath := filepath.Join(dir, "pgdog.toml"), filepath.Join(dir, "users.toml")
	for path, body := range map[string]string{cfgPath: cfg, usersPath: users} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cat, err := catalog.Load(cfgPath, usersPath)
	if err != nil {
		t.Fatal(err)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "matrix", Level: hclog.Warn, Output: os.Stderr})
	e := &env{exec: commands.NewExecutor(cat, log)}
	srv, err := wire.New(cat, e.exec, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	e.addr = srv.Addr().(*net.TCPAddr)
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("admin server: %v", err)
		}
	})

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
	verifyTask := startTask(t, ctx, conn, "VERIFY "+route)
	waitTask(t, ctx, conn, verifyTask, "done")
	return e
}

func dbName(i int) string { return fmt.Sprintf("matrix_%d", i) }

func database(name string, inst *pgtest.Instance, shard, db int) string {
	return fmt.Sprintf("[[databases]]\nname = %q\nhost = %q\nport = %d\ndatabase_name = %q\nshard = %d\n\n",
		name, inst.Host, inst.Port, dbName(db), shard)
}

// dsn is a pgx connection string for the admin database.
func (e *env) dsn() string {
	return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", adminUser, adminPassword, e.addr, adminUser)
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
