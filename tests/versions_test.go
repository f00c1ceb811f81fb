package tests

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

// startVersion starts n instances of PostgreSQL major version v for one
// test; they are stopped when it ends.
func startVersion(t *testing.T, v, n int, settings map[string]string) *pgtest.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgtest.Start(ctx, n, pgtest.Options{Version: v, Settings: settings})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// shardSchema is copySchema as SCHEMA_SYNC PRE leaves it on a shard
// (generated integer keys and the columns referencing them widened to
// bigint), for the servers pg_dump 15 cannot dump: on 16 and later the
// tests create the shards' schema with SQL.
var shardSchema = strings.NewReplacer(
	"CREATE TABLE customers (id serial PRIMARY KEY", "CREATE TABLE customers (id bigserial PRIMARY KEY",
	"CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES", "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES",
).Replace(copySchema)

// setupSQL creates the copy schema on every source and destination
// database with SQL and loads rows into the sources.
func (e *copyEnv) setupSQL(t *testing.T, rows int) {
	t.Helper()
	for i, s := range e.src {
		s.exec(t, copySchema)
		loadData(t, s, i, len(e.src), rows)
	}
	if v := e.src[0].inst.Version; v > 15 {
		// SCHEMA_SYNC needs a pg_dump as new as the source: 15's refuses,
		// and says so before anything is changed.
		_, err := e.exec.Execute(context.Background(), commands.SchemaSync{Phase: commands.PhasePre, Route: e.route()})
		want := fmt.Sprintf("pg_dump 15 is older than the source server (PostgreSQL %d): install pg_dump %d or newer and set [replication] pg_dump_path", v, v)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("SCHEMA_SYNC PRE against PostgreSQL %d with pg_dump 15: %v, want an error saying %q", v, err, want)
		}
		for _, d := range e.dst {
			if n := d.one(t, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`); n != "0" {
				t.Fatalf("a refused SCHEMA_SYNC left %s tables on %s", n, d.db)
			}
		}
	}
	for _, d := range e.dst {
		d.exec(t, shardSchema)
	}
}

// TestVersionMatrix runs a migration on PostgreSQL 16, 17 and 18, each on
// its own servers (a source and two shards), in parallel: copy under
// writes that move rows between shards, stream (a TRUNCATE, transactions
// streamed while in progress, moves, deletes, NULL keys), compare with SQL
// and with VERIFY, CUTOVER, a write on a shard reaching the source,
// rollback, and a source write reaching the shards. 17 runs it on more
// rows and larger transactions; 16 and 18 on fewer.
func TestVersionMatrix(t *testing.T) {
	for _, v := range []int{16, 17, 18} {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			t.Parallel()
			c := startVersion(t, v, 3, nil)
			e := newCopyEnvOn(t, fmt.Sprintf("vm%d", v), c.Instances[0], c.Instances[1:], 1, 2, "")
			scale := 1
			if v == 17 {
				scale = 4
			}
			migrationScenario(t, e, scale)
		})
	}
}

// migrationScenario is the matrix's migration on e (one source, schema
// created with SQL): rows scale × 1,500 customers.
func migrationScenario(t *testing.T, e *copyEnv, scale int) {
	e.setupSQL(t, 1500*scale)
	src := e.src[0]
	// orders keeps the default replica identity (its primary key), which
	// does not hold the sharding column: moves are found by key.
	src.exec(t, fmt.Sprintf(`ALTER DATABASE %s SET logical_decoding_work_mem = '64kB'`, src.db))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go writer(t, src, stop, &wg)
	res, err := e.exec.Execute(ctx, commands.CopyData{Route: e.route(), Slot: "matrix_slot"})
	if err != nil {
		close(stop)
		wg.Wait()
		t.Fatal(err)
	}
	id := res.Rows[0][0].(string)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		state, msg := e.taskState(t)
		if state == "streaming" {
			break
		}
		if state != "copying" || time.Now().After(deadline) {
			close(stop)
			wg.Wait()
			t.Fatalf("COPY_DATA: %s %s", state, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	src.exec(t, `
		UPDATE orders SET customer_id = customer_id + 1 WHERE id BETWEEN 100 AND 160 AND customer_id IS NOT NULL;
		DELETE FROM orders WHERE id BETWEEN 200 AND 260;
		UPDATE countries SET name = upper(name);
		TRUNCATE notes;
		INSERT INTO notes SELECT md5((g * 3)::text)::uuid, g % 300, 'after truncate' FROM generate_series(1, 400) g;
		INSERT INTO orders (id, customer_id, total) VALUES (900001, NULL, 1);`)
	// Transactions larger than logical_decoding_work_mem, streamed while in
	// progress: one committed that moves rows between shards and rolls
	// back a subtransaction, one rolled back.
	src.exec(t, fmt.Sprintf(`BEGIN;
		INSERT INTO customers (id, name) SELECT 5000000 + g, 'big' FROM generate_series(1, %[1]d) g;
		UPDATE orders SET customer_id = 5000001 + id %% %[1]d WHERE id BETWEEN 1000 AND 1400;
		SAVEPOINT a;
		INSERT INTO customers (id, name) SELECT 5100000 + g, 'rolled back' FROM generate_series(1, %[1]d) g;
		ROLLBACK TO a;
		INSERT INTO events SELECT 1000000 + g, g %% 500, DATE '2026-02-01' + (g %% 100), jsonb_build_object('big', g) FROM generate_series(1, %[1]d) g;
		COMMIT`, 5000*scale))
	src.exec(t, `BEGIN; INSERT INTO events SELECT 2000000 + g, g % 500, DATE '2026-03-01', NULL FROM generate_series(1, 20000) g; ROLLBACK`)
	e.waitCaughtUp(t, 2*time.Minute)
	if state, msg := e.taskState(t); state != "streaming" {
		t.Fatalf("after catching up: %s %s", state, msg)
	}
	e.verifyCopy(t)
	// The large transactions really were streamed while in progress.
	waitFor(t, 10*time.Second, "pg_stat_replication_slots counts streamed transactions", func() bool {
		return src.one(t, `SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name = 'matrix_slot'`) != "0"
	})
	if slots := e.exec.Registry.Slots(); len(slots) != 1 || slots[0].Name != "matrix_slot" {
		t.Fatalf("slots streaming: %+v", slots)
	}
	verifyMatches(t, ctx, e, 6)

	cutoverRoundTrip(t, ctx, e, id)
	e.verifyCopy(t)
	if _, err := e.exec.Execute(ctx, commands.StopTask{Task: id}); err != nil {
		t.Fatal(err)
	}
}

// cutoverRoundTrip runs CUTOVER on streaming task id: a shard's writes
// reach the source; then rolls back: a source write reaches the shards
// and the stream catches up.
func cutoverRoundTrip(t *testing.T, ctx context.Context, e *copyEnv, id string) {
	t.Helper()
	src := e.src[0]
	// CUTOVER: the shards take the writes and the source follows them.
	cut, err := e.exec.Execute(ctx, commands.Cutover{Task: id})
	if err != nil {
		t.Fatalf("CUTOVER: %v", err)
	}
	if cut.Rows[0][1] != "reverse_streaming" {
		t.Fatalf("CUTOVER answered %v", cut.Rows)
	}
	// Omni rows are written on every shard (each shard's copy is its own).
	e.dst[1].exec(t, `INSERT INTO countries VALUES ('S0', 'written on shard 0')`)
	// A customer whose id belongs on shard 0 (ids a shard's own sequence
	// hands out are the cutover's matter, issue 16).
	e.dst[0].exec(t, `INSERT INTO countries VALUES ('S0', 'written on shard 0');
		INSERT INTO customers (id, name, region) SELECT g, 'on shard 0', 'eu' FROM generate_series(7000000, 7000100) g
		WHERE satisfies_hash_partition('chk.hp_bigint'::regclass, 2, 0, g::bigint) LIMIT 1`)
	waitFor(t, time.Minute, "a shard's writes reach the source", func() bool {
		return src.one(t, `SELECT count(*) FROM countries WHERE code = 'S0'`) == "1" &&
			src.one(t, `SELECT count(*) FROM customers WHERE name = 'on shard 0'`) == "1"
	})
	// Rollback: the source takes the writes again, the shards follow it.
	back, err := e.exec.Execute(ctx, commands.Cutover{Task: id})
	if err != nil {
		t.Fatalf("rollback CUTOVER: %v", err)
	}
	if back.Rows[0][1] != "streaming" {
		t.Fatalf("rollback answered %v", back.Rows)
	}
	src.exec(t, `INSERT INTO customers (id, name) VALUES (6000001, 'after rollback'); UPDATE orders SET customer_id = 2 WHERE id = 1001`)
	e.waitCaughtUp(t, time.Minute)
}

// verifyMatches runs VERIFY in the foreground and wants every table to
// match with rows on both sides, and at least tables of them checked.
func verifyMatches(t *testing.T, ctx context.Context, e *copyEnv, tables int) {
	t.Helper()
	res, err := e.exec.Execute(ctx, commands.Verify{Route: e.route(), Foreground: true})
	if err != nil {
		t.Fatalf("VERIFY: %v", err)
	}
	seen := 0
	for _, r := range res.Rows {
		if r[3] != "match" || !verifyRowsAgree(r) {
			t.Fatalf("VERIFY %s.%s: %v", r[1], r[2], r)
		}
		seen++
	}
	if seen < tables {
		t.Fatalf("VERIFY checked %d tables: %v", seen, res.Rows)
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSource15ToShards17 reshards a PostgreSQL 15 source onto PostgreSQL
// 17 shards (upgrading while resharding): RESHARD's schema sync (pg_dump
// 15 dumps the 15 source), the copy under writes that move rows, the
// stream, VERIFY, CUTOVER and rollback, exact; the copy chose text, since
// binary COPY is only compatible within one major version, and SHOW
// TABLE_COPIES and the log say so.
func TestSource15ToShards17(t *testing.T) {
	t.Parallel()
	c := startVersion(t, 17, 2, nil)
	e := newCopyEnvOn(t, "x1517", cluster.Instances[0], c.Instances, 1, 2, "")
	e.logs = &testkit.Buffer{}
	e.load(t)
	src := e.src[0]
	src.exec(t, copySchema)
	loadData(t, src, 0, 1, 3000)
	src.exec(t, `ALTER TABLE orders REPLICA IDENTITY FULL`)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: commands.PhasePre, Route: e.route()}); err != nil {
		t.Fatalf("SCHEMA_SYNC PRE from 15 onto 17: %v", err)
	}
	id := copyUnderWrites(t, e, "x1517_slot", func() {})
	_, formats := copyNodes(t, e, "orders")
	if len(formats) != 1 || formats["text"] == 0 {
		t.Fatalf("SHOW TABLE_COPIES formats %v, want text only", formats)
	}
	logs := e.logs.String()
	for _, w := range []string{"copy format: format=text", "PostgreSQL 15 on source shard 0", "PostgreSQL 17 on destination shard 0", "destination shard 1"} {
		if !strings.Contains(logs, w) {
			t.Fatalf("the log lacks %q:\n%s", w, firstLines(logs, 20))
		}
	}
	verifyMatches(t, ctx, e, 6)
	cutoverRoundTrip(t, ctx, e, id)
	e.verifyCopy(t)
	if _, err := e.exec.Execute(ctx, commands.StopTask{Task: id}); err != nil {
		t.Fatal(err)
	}
}
