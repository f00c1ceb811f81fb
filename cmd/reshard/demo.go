package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/tests/pgtest"
)

// demoSchema is the sample shop: customers and their orders are sharded by
// customer, countries is an omni table copied to every shard.
const demoSchema = `
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE customers (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL,
  country text REFERENCES countries(code), created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers(id),
  total numeric(12,2) NOT NULL, status text NOT NULL DEFAULT 'new', created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX orders_customer_idx ON orders (customer_id);
INSERT INTO countries VALUES ('NL','Netherlands'),('DE','Germany'),('FR','France'),('US','United States'),('JP','Japan');
INSERT INTO customers (email, name, country)
  SELECT 'customer' || g || '@example.com', 'Customer ' || g, (ARRAY['NL','DE','FR','US','JP'])[1 + g % 5]
  FROM generate_series(1, 20000) g;
INSERT INTO orders (customer_id, total, status)
  SELECT 1 + (g::bigint * 7919) % 20000, round((random() * 500)::numeric, 2), (ARRAY['new','paid','shipped'])[1 + g % 3]
  FROM generate_series(1, 1000000) g;
CREATE PUBLICATION all_tables FOR ALL TABLES;
`

func demoCmd(fs *flag.FlagSet) func(ctx context.Context, e *env) error {
	exit := fs.Bool("exit", false, "stop after the demo instead of waiting for Ctrl-C")
	port := fs.Int("port", 6432, "admin server port (a free one is picked if it is taken)")
	return func(ctx context.Context, e *env) error {
		e.log.Info("starting throwaway PostgreSQL instances: a source and two shards")
		cl, err := pgtest.Start(ctx, 3, pgtest.Options{})
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer cl.Stop()
		src, s0, s1 := cl.Instances[0], cl.Instances[1], cl.Instances[2]
		for _, inst := range cl.Instances {
			if err := inst.CreateDatabase(ctx, "shop"); err != nil {
				return fmt.Errorf("demo: %w", err)
			}
		}
		if err := src.Exec(ctx, "shop", demoSchema); err != nil {
			return fmt.Errorf("demo: load sample data: %w", err)
		}
		e.log.Info("sample shop loaded on the source", "customers", 20000, "orders", 1000000)

		adminPort := *port
		if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort))); err != nil {
			l2, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			adminPort = l2.Addr().(*net.TCPAddr).Port
			l2.Close()
		} else {
			l.Close()
		}
		dir, err := os.MkdirTemp("", "reshard-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfgPath, usersPath := filepath.Join(dir, "pgdog.toml"), filepath.Join(dir, "users.toml")
		cfg := fmt.Sprintf(`[general]
host = "127.0.0.1"
port = %d

[admin]
password = "demo"

[[databases]]
name = "shop"
host = %q
port = %d

[[databases]]
name = "shop_sharded"
host = %q
port = %d
database_name = "shop"
shard = 0

[[databases]]
name = "shop_sharded"
host = %q
port = %d
database_name = "shop"
shard = 1

[[sharded_tables]]
database = "shop_sharded"
name = "customers"
column = "id"

[[sharded_tables]]
database = "shop_sharded"
column = "customer_id"
`, adminPort, src.Host, src.Port, s0.Host, s0.Port, s1.Host, s1.Port)
		users := fmt.Sprintf(`[[users]]
name = %q
database = "shop"
password = %q
schema_admin = true

[[users]]
name = %q
database = "shop_sharded"
password = %q
schema_admin = true
`, pgtest.User, pgtest.Password, pgtest.User, pgtest.Password)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(usersPath, []byte(users), 0o600); err != nil {
			return err
		}
		cat, err := catalog.Load(cfgPath, usersPath)
		if err != nil {
			return err
		}
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- serve(sctx, cat, e.log) }()

		dsn := fmt.Sprintf("postgres://admin:demo@127.0.0.1:%d/admin?sslmode=disable", adminPort)
		if err := demoCheck(ctx, e, dsn); err != nil {
			cancel()
			<-errc
			return err
		}
		if err := demoReshard(ctx, e, dsn, src, []*pgtest.Instance{s0, s1}); err != nil {
			cancel()
			<-errc
			return err
		}
		fmt.Fprintf(e.stdout, `
The admin server is up. Connect with:

  psql "postgres://admin:demo@127.0.0.1:%d/admin"

and try SHOW TASKS; SHOW TABLE_COPIES; SHOW REPLICATION_SLOTS; SHOW DATABASES;
(the stream keeps the shards in sync with the source until you stop)
Config files: %s, %s
Source: %s   shards: %s, %s (user %s, password %s)
`, adminPort, cfgPath, usersPath, src.DSN("shop"), s0.DSN("shop"), s1.DSN("shop"), pgtest.User, pgtest.Password)
		interactive := isTerminal(os.Stdin)
		if !*exit && interactive {
			fmt.Fprintln(e.stdout, "\nPress Ctrl-C to stop and remove everything.")
			select {
			case <-ctx.Done():
			case err := <-errc:
				return err
			}
		}
		cancel()
		return <-errc
	}
}

// demoCheck connects to the admin server as a client would and prints the
// catalog it serves.
func demoCheck(ctx context.Context, e *env, dsn string) error {
	var conn *pgx.Conn
	var err error
	for i := 0; i < 50; i++ {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err = pgx.Connect(cctx, dsn)
		cancel()
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("demo: connect to the admin server: %w", err)
	}
	defer conn.Close(ctx)
	var version string
	if err := conn.QueryRow(ctx, "SHOW VERSION").Scan(&version); err != nil {
		return fmt.Errorf("demo: SHOW VERSION: %w", err)
	}
	fmt.Fprintf(e.stdout, "%s\n\nSHOW DATABASES:\n", version)
	rows, err := conn.Query(ctx, "SHOW DATABASES", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name, host, dbname, role string
		var port, shard int64
		var ro bool
		if err := rows.Scan(&name, &host, &port, &dbname, &role, &shard, &ro); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "  %-14s shard %d  %s  %s:%d/%s\n", name, shard, role, host, port, dbname)
	}
	return rows.Err()
}

// demoReshard drives a resharding through the admin server, as an operator
// would from psql, while an application keeps writing to the source.
func demoReshard(ctx context.Context, e *env, dsn string, src *pgtest.Instance, shards []*pgtest.Instance) error {
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	say := func(format string, args ...any) { fmt.Fprintf(e.stdout, format+"\n", args...) }
	exec := func(sql string) error {
		say("admin=> %s;", sql)
		_, err := admin.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			return fmt.Errorf("demo: %s: %w", sql, err)
		}
		return nil
	}
	// The application: new orders keep arriving on the source.
	appCtx, stopApp := context.WithCancel(ctx)
	appDone := make(chan int)
	go func() {
		n := 0
		conn, err := src.Connect(appCtx, "shop")
		if err == nil {
			defer conn.Close(context.Background())
			for appCtx.Err() == nil {
				if _, err := conn.Exec(appCtx, `INSERT INTO orders (customer_id, total) VALUES (1 + (random() * 19999)::int, 9.99)`); err == nil {
					n++
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
		appDone <- n
	}()
	say("\nResharding shop onto shop_sharded (2 shards) while orders keep arriving:\n")
	began := time.Now()
	if err := exec("RESHARD shop shop_sharded all_tables"); err != nil {
		stopApp()
		<-appDone
		return err
	}
	last := ""
	for {
		state, msg, err := demoTaskState(ctx, admin)
		if err != nil {
			stopApp()
			<-appDone
			return err
		}
		if state != last {
			say("   task state: %s (%s)", state, time.Since(began).Round(time.Millisecond))
			last = state
		}
		if state == "copying" {
			if line, err := demoCopyProgress(ctx, admin); err == nil && line != "" {
				say("     %s", line)
			}
			time.Sleep(300 * time.Millisecond)
		}
		if state == "streaming" {
			break
		}
		if state == "failed" || state == "stopped" || state == "done" {
			stopApp()
			<-appDone
			return fmt.Errorf("demo: RESHARD ended %s: %s", state, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
	say("   schema copied, rows copied, indexes built: the task now streams changes")
	time.Sleep(time.Second)
	stopApp()
	written := <-appDone
	say("   %d orders were written to the source meanwhile", written)
	// Wait until the shards hold every order, then compare.
	count := func(inst *pgtest.Instance, table string) (int64, error) {
		c, err := inst.Connect(ctx, "shop")
		if err != nil {
			return 0, err
		}
		defer c.Close(ctx)
		var n int64
		err = c.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n)
		return n, err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		want, err := count(src, "orders")
		if err != nil {
			return err
		}
		var got int64
		for _, s := range shards {
			n, err := count(s, "orders")
			if err != nil {
				return err
			}
			got += n
		}
		if got == want {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: the shards hold %d orders, the source %d", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	say("\n%-10s %10s %10s %10s", "table", "source", "shard 0", "shard 1")
	for _, table := range []string{"customers", "orders", "countries"} {
		row := []int64{}
		for _, inst := range append([]*pgtest.Instance{src}, shards...) {
			n, err := count(inst, table)
			if err != nil {
				return err
			}
			row = append(row, n)
		}
		say("%-10s %10d %10d %10d", table, row[0], row[1], row[2])
	}
	say("(customers and orders are split by customer; countries is copied to every shard)")
	say("")
	if err := exec("VERIFY shop shop_sharded all_tables"); err != nil {
		return err
	}
	for {
		var state string
		rows, err := admin.Query(ctx, "SHOW TASKS", pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			return err
		}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				rows.Close()
				return err
			}
			if vals[1] == "verify" {
				state = vals[5].(string)
			}
		}
		rows.Close()
		if state != "verifying" && state != "" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		rows, err := admin.Query(ctx, "SHOW VERIFY", pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			return err
		}
		type vr struct {
			table, status string
			src, dst      int64
		}
		var results []vr
		running := false
		for rows.Next() {
			var task, schema, table, status string
			var src, dst, missing, extra, different, misplaced int64
			if err := rows.Scan(&task, &schema, &table, &status, &src, &dst, &missing, &extra, &different, &misplaced); err != nil {
				rows.Close()
				return err
			}
			if status == "running" {
				running = true
			}
			results = append(results, vr{table, status, src, dst})
		}
		rows.Close()
		if running {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		ok := true
		for _, r := range results {
			say("   %-10s %-8s source %d rows, shards %d rows", r.table, r.status, r.src, r.dst)
			if r.status != "match" {
				ok = false
			}
		}
		if !ok {
			return fmt.Errorf("demo: VERIFY found differences")
		}
		say("   every table matches: counts, checksums of every row, and placement")
		say("")
		var taskID string
		if err := admin.QueryRow(ctx, "SHOW TASKS", pgx.QueryExecModeSimpleProtocol).Scan(&taskID, new(string), new(string), new(string), new(string), new(string), new(time.Time), new(string), new(string)); err != nil {
			return err
		}
		say("admin=> CUTOVER %s;", taskID)
		var state, reverse string
		if err := admin.QueryRow(ctx, "CUTOVER "+taskID, pgx.QueryExecModeSimpleProtocol).Scan(new(string), &state, &reverse); err != nil {
			return fmt.Errorf("demo: CUTOVER: %w", err)
		}
		say("   %s: the shards take the writes now; the old database is read-only and follows them (slot %s)", state, reverse)
		// A write on a shard reaches the old database.
		if err := shards[0].Exec(ctx, "shop", `UPDATE countries SET name = 'Nederland' WHERE code = 'NL'`); err != nil {
			return err
		}
		for deadline := time.Now().Add(30 * time.Second); ; {
			c, err := src.Connect(ctx, "shop")
			if err != nil {
				return err
			}
			var name string
			err = c.QueryRow(ctx, `SELECT name FROM countries WHERE code = 'NL'`).Scan(&name)
			c.Close(ctx)
			if err != nil {
				return err
			}
			if name == "Nederland" {
				say("   a write on shard 0 reached the old database: rollback stays possible")
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("demo: reverse replication did not carry a shard write back")
			}
			time.Sleep(50 * time.Millisecond)
		}
		say("   resharding took %s end to end", time.Since(began).Round(time.Millisecond))
		return nil
	}
}

func demoTaskState(ctx context.Context, admin *pgx.Conn) (string, string, error) {
	var state, msg string
	err := admin.QueryRow(ctx, "SHOW TASKS", pgx.QueryExecModeSimpleProtocol).Scan(new(string), new(string), new(string), new(string), new(string), &state, new(time.Time), new(string), &msg)
	return state, msg, err
}

// demoCopyProgress sums SHOW TABLE_COPIES into one line.
func demoCopyProgress(ctx context.Context, admin *pgx.Conn) (string, error) {
	rows, err := admin.Query(ctx, "SHOW TABLE_COPIES", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var copied, est, done, total int64
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return "", err
		}
		total++
		if vals[2] == "done" {
			done++
		}
		copied += vals[3].(int64)
		est += vals[12].(int64)
	}
	if total == 0 {
		return "", rows.Err()
	}
	return fmt.Sprintf("copy: %d of %d units done, %d rows so far", done, total, copied), rows.Err()
}
