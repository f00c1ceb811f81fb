package fault

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

var buildOnce sync.Once

// binary returns the reshard binary, built once for the suite.
func binary(t *testing.T) string {
	buildOnce.Do(func() { reshardBin = testkit.BuildReshard(&onceTB{t}) })
	if reshardBin == "" {
		t.Fatal("reshard binary not built")
	}
	return reshardBin
}

// onceTB keeps the binary past the first test's TempDir cleanup.
type onceTB struct{ *testing.T }

func (o *onceTB) TempDir() string {
	d, err := os.MkdirTemp("", "reshard-fault-bin-")
	if err != nil {
		o.Fatal(err)
	}
	return d
}

// db is one database on a harness instance.
type db struct {
	inst *pgtest.Instance
	name string
}

func (d db) conn(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := d.inst.Connect(ctx, d.name)
	if err != nil {
		t.Fatalf("connect to %s: %v", d.name, err)
	}
	return c
}

func (d db) exec(t *testing.T, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := d.inst.Exec(ctx, d.name, sql); err != nil {
		t.Fatalf("%s on %s: %v", abbrev(sql), d.name, err)
	}
}

// one runs a query answering one value.
func (d db) one(t *testing.T, sql string, args ...any) string {
	t.Helper()
	c := d.conn(t)
	defer c.Close(context.Background())
	var s *string
	if err := c.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s on %s: %v", abbrev(sql), d.name, err)
	}
	if s == nil {
		return ""
	}
	return *s
}

func abbrev(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}

// sourceSchema is every scenario's source: two tables sharded by customer,
// one omni table, and secondary indexes for POST to build (two of them
// on costly expressions, so that POST takes long enough to be interrupted).
const sourceSchema = `
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, region text);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, total numeric(12,2), note text);
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE events (id bigint PRIMARY KEY, customer_id bigint NOT NULL, kind text, payload text);
ALTER TABLE events ALTER payload SET STORAGE EXTERNAL;
CREATE PUBLICATION pub FOR ALL TABLES;
`

// toastPayload is an SQL expression of an 8 kB value, stored out of line
// (events.payload has STORAGE EXTERNAL), unique per seed expression: an
// UPDATE that leaves it alone sends it as "unchanged TOAST" in the stream.
func toastPayload(seed string) string {
	return fmt.Sprintf(`(SELECT string_agg(md5(%s::text || i::text), '') FROM generate_series(1, 256) i)`, seed)
}

// sourceIndexes are created after the rows are loaded (faster).
const sourceIndexes = `
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE INDEX orders_total_idx ON orders (total, id);
CREATE INDEX orders_note_idx ON orders (note);
CREATE INDEX orders_cust_total_idx ON orders (customer_id, total);
CREATE INDEX customers_name_idx ON customers (name);
CREATE INDEX orders_digest_idx ON orders (md5(repeat(note, 40)));
CREATE INDEX orders_digest2_idx ON orders (md5(repeat(note || customer_id::text, 40)));
`

// postIndexes are the indexes POST builds on the destination.
var postIndexes = []string{"orders_customer_idx", "orders_total_idx", "orders_note_idx", "orders_cust_total_idx", "customers_name_idx", "orders_digest_idx", "orders_digest2_idx"}

// tables are compared after every scenario: name, sharding column ("" for omni).
var tables = []struct{ name, key string }{{"customers", "id"}, {"orders", "customer_id"}, {"countries", ""}, {"events", "customer_id"}}

// newSource creates a source database with customers/10 customers and
// `orders` orders.
func newSource(t *testing.T, name string, orders int) db {
	t.Helper()
	src := db{cluster.Instances[0], name}
	if err := src.inst.CreateDatabase(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	src.exec(t, sourceSchema)
	src.exec(t, fmt.Sprintf(`
INSERT INTO customers SELECT g, 'customer ' || g, (ARRAY['eu','us',NULL])[1 + g %% 3] FROM generate_series(1, %[1]d) g;
INSERT INTO orders SELECT g, 1 + (g * 7) %% %[1]d, (g %% 10000) / 7.0, md5(g::text) || E' tab\there ''q'' ' || g FROM generate_series(1, %[2]d) g;
INSERT INTO countries VALUES ('NL','Netherlands'),('DE','Germany'),('JP','Japan');
INSERT INTO events SELECT g, 1 + (g * 13) %% %[1]d, 'seed', %[3]s FROM generate_series(1, 200) g;`, orders/10+1, orders, toastPayload("g")))
	src.exec(t, sourceIndexes+"ANALYZE;")
	return src
}

// dropSlots removes the inactive slots of a source database: they hold WAL
// on the shared instance.
func dropSlots(src db) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = src.inst.Exec(ctx, src.name, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database() AND NOT active`)
}

// env is one migration: a source, two destination shards reached through
// the proxies, and the configuration files that say so.
type env struct {
	name      string
	src       db
	dst       []db
	cfgPath   string
	usersPath string
	slot      string
	// adminPort is the admin server's port (reshard serve).
	adminPort int
}

// newEnv creates empty destination databases for src and writes the
// configuration. general is added to [general].
func newEnv(t *testing.T, name string, src db, general string) *env {
	t.Helper()
	return newEnvVia(t, name, src, general, false)
}

// newEnvVia is newEnv; with viaProxy, reshard reaches the source through
// srcProxy (so that a scenario can cut that network too).
func newEnvVia(t *testing.T, name string, src db, general string, viaProxy bool) *env {
	t.Helper()
	e := &env{name: name, src: src, slot: name + "_slot"}
	srcPort := src.inst.Port
	if viaProxy {
		srcPort = srcProxy.Port()
	}
	t.Cleanup(func() { dropSlots(src) })
	var b strings.Builder
	e.adminPort = freePort(t)
	fmt.Fprintf(&b, "[general]\nhost = \"127.0.0.1\"\nport = %d\nresharding_parallel_copies = 2\nresharding_split_threshold = 4194304\n%s\n\n[admin]\npassword = \"fault-admin\"\n\n", e.adminPort, general)
	fmt.Fprintf(&b, "[[databases]]\nname = \"src\"\nhost = \"127.0.0.1\"\nport = %d\ndatabase_name = %q\nshard = 0\n\n", srcPort, src.name)
	for k := 0; k < 2; k++ {
		d := db{cluster.Instances[1+k], fmt.Sprintf("%s_d%d", name, k)}
		if err := d.inst.CreateDatabase(context.Background(), d.name); err != nil {
			t.Fatal(err)
		}
		e.dst = append(e.dst, d)
		fmt.Fprintf(&b, "[[databases]]\nname = \"dst\"\nhost = \"127.0.0.1\"\nport = %d\ndatabase_name = %q\nshard = %d\n\n", proxies[k].Port(), d.name, k)
	}
	b.WriteString("[[sharded_tables]]\ndatabase = \"dst\"\nname = \"customers\"\ncolumn = \"id\"\n\n[[sharded_tables]]\ndatabase = \"dst\"\ncolumn = \"customer_id\"\n")
	e.cfgPath, e.usersPath = testkit.WriteConfig(t, t.TempDir(), b.String())
	return e
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := testkit.NewProxy("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	port := p.Port()
	p.Close()
	return port
}

// args is a reshard command line with this environment's configuration.
func (e *env) args(cmd string, extra ...string) []string {
	return append([]string{"--config", e.cfgPath, "--users", e.usersPath, "--log-level", "info", cmd,
		"--from-database", "src", "--to-database", "dst", "--publication", "pub"}, extra...)
}

// dataSync is the copy (and stream, unless syncOnly) command line.
func (e *env) dataSync(syncOnly bool) []string {
	extra := []string{"--replication-slot", e.slot}
	if syncOnly {
		extra = append(extra, "--sync-only")
	}
	return e.args("data-sync", extra...)
}

// run runs a reshard command to its end and fails the test if it fails.
func (e *env) run(t *testing.T, args []string) string {
	t.Helper()
	p := testkit.Start(t, binary(t), args...)
	err, ok := p.Wait(5 * time.Minute)
	if !ok {
		p.Kill()
		t.Fatalf("reshard %s did not finish within 5 minutes:\n%s", strings.Join(args, " "), lastLines(p.Output(), 40))
	}
	noRace(t, p.Output())
	if err != nil {
		t.Fatalf("reshard %s: %v\n%s", strings.Join(args, " "), err, lastLines(p.Output(), 40))
	}
	return p.Output()
}

// schemaPre runs SCHEMA_SYNC PRE through the CLI.
func (e *env) schemaPre(t *testing.T) {
	t.Helper()
	e.run(t, e.args("schema-sync"))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// start runs a reshard command in the background; it is killed when the
// test ends if still running.
func (e *env) start(t *testing.T, args []string) *testkit.Process {
	t.Helper()
	p := testkit.Start(t, binary(t), args...)
	t.Cleanup(func() {
		if done, _ := p.Exited(); !done {
			_ = p.Stop(15 * time.Second)
		}
		noRace(t, p.Output())
		if t.Failed() {
			t.Logf("reshard %s output:\n%s", args[6], lastLines(p.Output(), 60))
		}
	})
	return p
}

// waitFor polls cond every 25ms until it holds, failing after timeout
// (with why's account of the last look, if given).
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool, why ...func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			for _, w := range why {
				what += ": " + w()
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// copiedRows is how many orders rows the destination shards hold
// (committed) plus how many an in-progress COPY into them has written.
func (e *env) copiedRows(t *testing.T) int64 {
	t.Helper()
	var n int64
	for _, d := range e.dst {
		var v int64
		fmt.Sscan(d.one(t, `SELECT ((SELECT count(*) FROM orders) + coalesce((SELECT sum(tuples_processed) FROM pg_stat_progress_copy WHERE datname = current_database()), 0))::text`), &v)
		n += v
	}
	return n
}

// sourceRows is the source's orders row count.
func (e *env) sourceRows(t *testing.T) int64 {
	var n int64
	fmt.Sscan(e.src.one(t, `SELECT count(*)::text FROM orders`), &n)
	return n
}

// tableSum is a table's row count and an order-independent checksum.
type tableSum struct {
	rows int64
	sum  string
}

func sumOf(t *testing.T, d db, table string) tableSum {
	t.Helper()
	// Two independent per-row hashes (32 and 60 bits), summed: equal
	// sums with equal counts mean equal multisets of rows, barring a
	// collision of both.
	row := d.one(t, fmt.Sprintf(`SELECT count(*) || ' ' || coalesce(sum(hashtext(x::text)::numeric), 0) || '/' ||
		coalesce(sum(('x' || substr(md5(x::text), 1, 15))::bit(60)::bigint::numeric), 0) FROM %s x`, table))
	var s tableSum
	f := strings.SplitN(row, " ", 2)
	fmt.Sscan(f[0], &s.rows)
	s.sum = f[1]
	return s
}

// same tells whether the shards hold exactly the source's rows (count and
// checksum of every table; omni tables whole on each shard).
func (e *env) same(t *testing.T) (bool, string) {
	t.Helper()
	for _, tb := range tables {
		want := sumOf(t, e.src, tb.name)
		if tb.key == "" {
			for k, d := range e.dst {
				if got := sumOf(t, d, tb.name); got != want {
					return false, fmt.Sprintf("omni table %s on shard %d: %d rows (checksum %s), source %d (%s)", tb.name, k, got.rows, got.sum, want.rows, want.sum)
				}
			}
			continue
		}
		var rows int64
		var h1, h2 []string
		for _, d := range e.dst {
			s := sumOf(t, d, tb.name)
			rows += s.rows
			f := strings.SplitN(s.sum, "/", 2)
			h1, h2 = append(h1, f[0]), append(h2, f[1])
		}
		// numeric: the sums of the shards' sums overflow bigint.
		total := e.src.one(t, fmt.Sprintf(`SELECT (%s::numeric)::text || '/' || (%s::numeric)::text`, strings.Join(h1, "::numeric + "), strings.Join(h2, "::numeric + ")))
		if rows != want.rows || total != want.sum {
			return false, fmt.Sprintf("%s: shards hold %d rows (checksum %s), source %d (%s)", tb.name, rows, total, want.rows, want.sum)
		}
	}
	return true, ""
}

// verify requires the shards to equal the source exactly: counts and
// checksums, every row on the shard its key hashes to, and the rows
// themselves (through two independent row hashes).
func (e *env) verify(t *testing.T) {
	t.Helper()
	if ok, why := e.same(t); !ok {
		t.Fatalf("shards differ from the source: %s", why)
	}
	for _, tb := range tables {
		n := sumOf(t, e.src, tb.name).rows
		if tb.key == "" {
			rowsCompared.Add(n * int64(len(e.dst)))
			continue
		}
		rowsCompared.Add(n)
		for k, d := range e.dst {
			hashCheck(t, d)
			if bad := d.one(t, fmt.Sprintf(`SELECT count(*)::text FROM %s WHERE NOT satisfies_hash_partition('chk.hp_int8'::regclass, %d, %d, %s)`, tb.name, len(e.dst), k, tb.key)); bad != "0" {
				t.Fatalf("%s: %s rows on shard %d belong to another shard", tb.name, bad, k)
			}
		}
	}
	t.Logf("exact: %d customers, %d orders, %d events (TOASTed), %d countries on each shard", sumOf(t, e.src, "customers").rows, sumOf(t, e.src, "orders").rows,
		sumOf(t, e.src, "events").rows, sumOf(t, e.src, "countries").rows)
}

// hashCheck creates chk.hp_int8 on d, the partitioned table whose
// satisfies_hash_partition tells a row's shard (also on a shard closed to
// the application).
func hashCheck(t *testing.T, d db) {
	t.Helper()
	d.exec(t, `BEGIN READ WRITE; CREATE SCHEMA IF NOT EXISTS chk; CREATE TABLE IF NOT EXISTS chk.hp_int8 (k bigint) PARTITION BY HASH (k); COMMIT`)
}

// waitSame waits until the shards have caught up with the source (after
// the writers stopped), then verifies them.
func (e *env) waitSame(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := e.same(t)
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shards did not catch up within %s: %s", timeout, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.verify(t)
}

// writer runs a write load on the source until stopped: inserts, updates
// and deletes of both sharded tables and the omni table, some in
// multi-statement transactions; sharding-key changes (orders and events
// rows moving to another customer, so between shards, the events'
// TOASTed payload left unchanged), and now and then a TRUNCATE of events
// (refilled by the inserts that follow). It reconnects when the source goes
// away (a restart), so it survives source faults. Its counters are atomic:
// a scenario reads them while it runs.
type writer struct {
	stop chan struct{}
	done chan struct{}
	// writes counts the statements (or transactions) that succeeded;
	// moves the rows whose sharding key changed, deletes the rows
	// deleted, truncates the TRUNCATEs done.
	writes, moves, deletes, truncates atomic.Int64
}

// writerLockTimeout bounds how long a write waits for a lock (a TRUNCATE
// behind a copy, any write behind a cutover's locks): it fails and the
// writer goes on.
const writerLockTimeout = "500ms"

func startWriter(t *testing.T, src db, seed int64) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(src, seed)
	t.Cleanup(func() { w.halt(t) })
	return w
}

// counts is a snapshot of the writer's counters.
type counts struct{ writes, moves, deletes, truncates int64 }

func (w *writer) counts() counts {
	return counts{w.writes.Load(), w.moves.Load(), w.deletes.Load(), w.truncates.Load()}
}

func (c counts) minus(o counts) counts {
	return counts{c.writes - o.writes, c.moves - o.moves, c.deletes - o.deletes, c.truncates - o.truncates}
}

func (c counts) String() string {
	return fmt.Sprintf("%d writes (%d rows moved between customers, %d deleted, %d truncates)", c.writes, c.moves, c.deletes, c.truncates)
}

func (w *writer) run(src db, seed int64) {
	defer close(w.done)
	ctx := context.Background()
	// The address, once: a restart of the source rewrites its Instance
	// while this goroutine runs (the port stays).
	dsn := src.inst.DSN(src.name)
	r := rand.New(rand.NewSource(seed))
	next := 10_000_000 + seed*1_000_000
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(ctx)
		}
	}()
	var maxCustomer int64
	// events ids live in [eventLow, next]: a move or delete picks one of
	// the latest.
	eventLow := next
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		if conn == nil {
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				select {
				case <-w.stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			conn = c
			if _, err := conn.Exec(ctx, "SET lock_timeout = '"+writerLockTimeout+"'"); err != nil {
				conn.Close(ctx)
				conn = nil
				continue
			}
			if err := conn.QueryRow(ctx, `SELECT max(id) FROM customers`).Scan(&maxCustomer); err != nil {
				conn.Close(ctx)
				conn = nil
				continue
			}
		}
		next++
		customer := 1 + r.Int63n(maxCustomer)
		recent := eventLow + r.Int63n(max(next-eventLow, 1))
		var sql string
		var counter *atomic.Int64
		switch i % 13 {
		case 0:
			sql = fmt.Sprintf(`INSERT INTO customers VALUES (%d, 'w%d', 'eu')`, next, next)
		case 1, 2:
			sql = fmt.Sprintf(`INSERT INTO orders VALUES (%d, %d, %d, 'live %d')`, next, customer, r.Intn(100000), i)
		case 3:
			sql = fmt.Sprintf(`UPDATE orders SET total = total + 1, note = note || '+' WHERE id = %d`, 1+r.Intn(20000))
		case 4:
			sql, counter = fmt.Sprintf(`DELETE FROM orders WHERE id = %d`, 1+r.Intn(20000)), &w.deletes
		case 5:
			sql = fmt.Sprintf(`UPDATE customers SET region = 'r%d' WHERE id = %d`, i, customer)
		case 6:
			sql = fmt.Sprintf(`BEGIN; INSERT INTO orders VALUES (%d, %d, 1, 'tx'); UPDATE orders SET total = 0 WHERE id = %d; DELETE FROM orders WHERE id = %d; COMMIT`,
				next, customer, 1+r.Intn(20000), 1+r.Intn(20000))
		case 7:
			sql = fmt.Sprintf(`UPDATE countries SET name = 'n%d' WHERE code = 'NL'`, i)
		case 8, 9:
			sql = fmt.Sprintf(`INSERT INTO events VALUES (%d, %d, 'new', %s)`, next, customer, toastPayload(fmt.Sprint(next)))
		case 10:
			// A move: the sharding key changes, the TOASTed payload not.
			sql, counter = fmt.Sprintf(`UPDATE events SET customer_id = %d, kind = 'moved' WHERE id = %d`, customer, recent), &w.moves
		case 11:
			if i%5 == 0 {
				sql, counter = fmt.Sprintf(`UPDATE orders SET customer_id = %d WHERE id = %d`, customer, 1+r.Intn(20000)), &w.moves
			} else {
				sql, counter = fmt.Sprintf(`DELETE FROM events WHERE id = %d`, recent), &w.deletes
			}
		case 12:
			if i%(13*25) == 12 {
				sql, counter = `TRUNCATE events`, &w.truncates
				eventLow = next
			} else {
				// A move and a change of the moved row in one transaction
				// (two statements of one simple query: one implicit
				// transaction, whose tag is the second UPDATE's, so a
				// row that is not there is not counted).
				sql, counter = fmt.Sprintf(`UPDATE events SET customer_id = %d WHERE id = %d; UPDATE events SET kind = kind || '+' WHERE id = %d`, customer, recent, recent), &w.moves
			}
		}
		tag, err := conn.Exec(ctx, sql)
		if err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "55P03" {
				continue // lock_timeout: the session is fine
			}
			// The source restarted or the connection broke: reconnect.
			conn.Close(ctx)
			conn = nil
			continue
		}
		w.writes.Add(1)
		if counter != nil {
			switch {
			case sql == `TRUNCATE events`:
				counter.Add(1)
			case strings.HasPrefix(sql, "BEGIN"):
				counter.Add(1) // a transaction's tag is its COMMIT's
			default:
				counter.Add(tag.RowsAffected())
			}
		}
		if i%4 == 0 {
			time.Sleep(time.Millisecond) // pacing the load, not synchronisation
		}
	}
}

// halt stops the writer and waits for it.
func (w *writer) halt(t *testing.T) {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// waitWrites waits until the writer has done n more writes than at from,
// every kind included (a move, a delete), failing after timeout.
func (w *writer) waitWrites(t *testing.T, from counts, n int64, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%d source writes with moves and deletes", n), func() bool {
		d := w.counts().minus(from)
		return d.writes >= n && d.moves > 0 && d.deletes > 0
	})
}

// checkWrites fails unless the writer wrote during a scenario, every kind
// included, and logs what it did.
func checkWrites(t *testing.T, what string, c counts) {
	t.Helper()
	if c.writes == 0 || c.moves == 0 || c.deletes == 0 || c.truncates == 0 {
		t.Fatalf("the write load did not run %s: %s", what, c)
	}
	t.Logf("%s: %s", what, c)
}

// waitStreaming waits until a data-sync process has finished its copy and
// streams (it logs so; watched as it writes, not polled).
func waitStreaming(t *testing.T, p *testkit.Process, timeout time.Duration) {
	t.Helper()
	ok := p.WaitOutput(timeout, func(out string) bool {
		return strings.Contains(out, logStreaming)
	})
	if done, err := p.Exited(); done {
		t.Fatalf("reshard exited (%v) before streaming:\n%s", err, lastLines(p.Output(), 40))
	}
	if !ok {
		t.Fatalf("reshard did not stream within %s:\n%s", timeout, lastLines(p.Output(), 40))
	}
}
