package bench

import (
	"bytes"
	"context"
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

	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

// BenchmarkStream runs a pgbench write load on the source for
// BENCH_STREAM_SECONDS (default 60) while reshard streams it into 2 shards
// and native logical replication (CREATE SUBSCRIPTION) into 1 database, both
// from the same source at once. It prints each one's apply rate (changes/s,
// from load start until it holds every change) and the seconds it needed to
// catch up after the load stopped; then the backlog of a second load
// drained by each alone; then the move cost: reshard draining a backlog of
// UPDATEs of a table placed by a column its replica identity does not
// carry, none of them moving their row, then 10% moving it to the other
// shard (the rates and their ratio; the shards compared with the source
// after each). Run with `make bench-stream`.
func BenchmarkStream(b *testing.B) {
	seconds, _ := strconv.Atoi(os.Getenv("BENCH_STREAM_SECONDS"))
	if seconds == 0 {
		seconds = 60
	}
	ctx := context.Background()
	cl, err := pgtest.Start(ctx, 3, pgtest.Options{Settings: map[string]string{"max_wal_size": "4GB"}})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Stop()
	src, d0, d1 := cl.Instances[0], cl.Instances[1], cl.Instances[2]
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	env := []string{"PGPASSWORD=" + pgtest.Password}
	pgbench := filepath.Join(cl.BinDir, "pgbench")
	pgbenchInit := func(inst *pgtest.Instance, db, steps string) {
		must(inst.CreateDatabase(ctx, db))
		run(b, env, pgbench, "-i", "-q", "-s", "10", "-I", steps, "-h", inst.Host, "-p", fmt.Sprint(inst.Port), "-U", pgtest.User, db)
	}
	pgbenchInit(src, "app", "dtgvp")
	must(src.Exec(ctx, "app", "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"))
	// The move-cost run's tables: orders keyed by id, placed by owner
	// (aid), under the default replica identity; owners pairs every owner
	// with one the 2 shards' hash partitioning places on the other shard.
	must(src.Exec(ctx, "app", moveSchema))
	must(src.Exec(ctx, "app", moveData))
	must(src.Exec(ctx, "app", "CREATE PUBLICATION all_tables FOR ALL TABLES"))
	pgbenchInit(d0, "native", "dtp")
	pgbenchInit(d0, "shard0", "dtp")
	pgbenchInit(d1, "shard1", "dtp")
	for _, d := range []shardNode{{d0, "native"}, {d0, "shard0"}, {d1, "shard1"}} {
		must(d.inst.Exec(ctx, d.db, moveSchema))
	}

	// Native: initial sync, then stream.
	must(d0.Exec(ctx, "native", fmt.Sprintf(`CREATE SUBSCRIPTION bench_sub CONNECTION '%s' PUBLICATION all_tables`,
		strings.Replace(src.DSN("app"), "?sslmode=disable", "", 1))))
	historyCount := func(inst *pgtest.Instance, db string) int64 {
		c, err := inst.Connect(ctx, db)
		must(err)
		defer c.Close(ctx)
		var n int64
		must(c.QueryRow(ctx, "SELECT count(*) FROM pgbench_history").Scan(&n))
		return n
	}
	nconn, err := d0.Connect(ctx, "native")
	must(err)
	waitSubscriptionSynced(b, nconn)
	nconn.Close(ctx)

	// reshard: copy, then stream, as a process.
	dir := b.TempDir()
	cfgPath, usersPath := writeConfig(b, dir, freeBenchPort(b), src, "app", []shardNode{{d0, "shard0"}, {d1, "shard1"}}, "aid", "")
	bin := filepath.Join(dir, "reshard")
	run(b, nil, "go", "build", "-o", bin, "github.com/reshard/reshard/cmd/reshard")
	rs := exec.Command(bin, "--config", cfgPath, "--users", usersPath, "--log-level", "warn",
		"data-sync", "--from-database", "src", "--to-database", "dst", "--publication", "all_tables", "--replication-slot", "bench_slot")
	if p := os.Getenv("BENCH_CPUPROFILE"); p != "" {
		rs.Env = append(os.Environ(), "RESHARD_CPUPROFILE="+p)
	}
	var rsOut bytes.Buffer
	rs.Stdout, rs.Stderr = &rsOut, &rsOut
	must(rs.Start())
	defer func() {
		_ = rs.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = rs.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = rs.Process.Kill()
		}
	}()
	// Wait for the copy: the shards hold every account.
	for {
		var n int64
		for _, d := range []struct {
			inst *pgtest.Instance
			db   string
		}{{d0, "shard0"}, {d1, "shard1"}} {
			c, err := d.inst.Connect(ctx, d.db)
			must(err)
			var k int64
			must(c.QueryRow(ctx, "SELECT (SELECT count(*) FROM pgbench_accounts) + (SELECT count(*) FROM orders)").Scan(&k))
			c.Close(ctx)
			n += k
		}
		if n == 1_000_000+moveOrders {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // streaming started

	// The load.
	loadStart := time.Now()
	out := run2(b, env, pgbench, "-n", "-c", "4", "-j", "2", "-T", fmt.Sprint(seconds), "-h", src.Host, "-p", fmt.Sprint(src.Port), "-U", pgtest.User, "app")
	loadEnd := time.Now()
	m := regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("pgbench output:\n%s", out)
	}
	txns, _ := strconv.ParseInt(m[1], 10, 64)
	want := historyCount(src, "app")
	var nativeDone, oursDone time.Time
	for nativeDone.IsZero() || oursDone.IsZero() {
		now := time.Now()
		if nativeDone.IsZero() && historyCount(d0, "native") == want {
			nativeDone = now
		}
		if oursDone.IsZero() && historyCount(d0, "shard0")+historyCount(d1, "shard1") == want {
			oursDone = now
		}
		if time.Since(loadEnd) > 10*time.Minute {
			b.Fatalf("not caught up after 10 minutes\n%s", rsOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	changes := float64(txns * 4) // tpcb-like: 3 updates and 1 insert per transaction
	nativeRate := changes / nativeDone.Sub(loadStart).Seconds()
	oursRate := changes / oursDone.Sub(loadStart).Seconds()
	fmt.Printf("load: %d s of pgbench (tpcb-like, 4 clients): %d transactions, %.0f changes (%.0f/s offered)\n", seconds, txns, changes, changes/loadEnd.Sub(loadStart).Seconds())
	fmt.Printf("native CREATE SUBSCRIPTION -> 1 db:  %8.0f changes/s, caught up %.2fs after the load stopped\n", nativeRate, nativeDone.Sub(loadEnd).Seconds())
	fmt.Printf("reshard -> 2 shards:                 %8.0f changes/s, caught up %.2fs after the load stopped\n", oursRate, oursDone.Sub(loadEnd).Seconds())
	fmt.Printf("live: reshard / native apply rate: %.2fx (both bounded by the offered load)\n", oursRate/nativeRate)
	b.ReportMetric(oursDone.Sub(loadEnd).Seconds(), "s-catchup")

	// Backlog: both consumers stopped while the load runs, then started
	// together: the time each needs to drain the same backlog is its
	// maximum apply rate.
	_ = rs.Process.Signal(os.Interrupt)
	_ = rs.Wait()
	must(d0.Exec(ctx, "native", `ALTER SUBSCRIPTION bench_sub DISABLE`))
	// The ceiling: a slot of its own, read by pg_recvlogical into
	// /dev/null once both have drained (what the source's walsender can
	// decode and send, with no consumer applying anything).
	must(src.Exec(ctx, "app", `SELECT pg_create_logical_replication_slot('bench_ceiling', 'pgoutput')`))
	time.Sleep(time.Second)
	out = run2(b, env, pgbench, "-n", "-c", "4", "-j", "2", "-T", fmt.Sprint(seconds), "-h", src.Host, "-p", fmt.Sprint(src.Port), "-U", pgtest.User, "app")
	var backlogEnd string
	{
		c, err := src.Connect(ctx, "app")
		must(err)
		must(c.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&backlogEnd))
		c.Close(ctx)
	}
	m = regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindStringSubmatch(out)
	txns, _ = strconv.ParseInt(m[1], 10, 64)
	want = historyCount(src, "app")
	rs = exec.Command(bin, "--config", cfgPath, "--users", usersPath, "--log-level", "warn",
		"data-sync", "--from-database", "src", "--to-database", "dst", "--publication", "all_tables", "--replication-slot", "bench_slot", "--replicate-only")
	if p := os.Getenv("BENCH_CPUPROFILE"); p != "" {
		rs.Env = append(os.Environ(), "RESHARD_CPUPROFILE="+p+".drain")
	}
	rs.Stdout, rs.Stderr = &rsOut, &rsOut
	// One after the other, so that each has the machine to itself.
	drainStart := time.Now()
	must(d0.Exec(ctx, "native", `ALTER SUBSCRIPTION bench_sub ENABLE`))
	for historyCount(d0, "native") != want {
		if time.Since(drainStart) > 10*time.Minute {
			b.Fatal("native backlog not drained after 10 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	nativeDone = time.Now()
	nativeTook := nativeDone.Sub(drainStart)
	drainStart = time.Now()
	must(rs.Start())
	for historyCount(d0, "shard0")+historyCount(d1, "shard1") != want {
		if time.Since(drainStart) > 10*time.Minute {
			b.Fatalf("backlog not drained after 10 minutes\n%s", rsOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	oursDone = time.Now()
	oursTook := oursDone.Sub(drainStart)
	changes = float64(txns * 4)
	nativeRate = changes / nativeTook.Seconds()
	oursRate = changes / oursTook.Seconds()
	fmt.Printf("backlog of %.0f changes, drained by native in %.2fs (%.0f changes/s), by reshard in %.2fs (%.0f changes/s)\n",
		changes, nativeTook.Seconds(), nativeRate, oursTook.Seconds(), oursRate)
	fmt.Printf("backlog: reshard / native apply rate: %.2fx\n", oursRate/nativeRate)
	b.ReportMetric(oursRate/nativeRate, "ratio")
	ceilStart := time.Now()
	run(b, env, filepath.Join(cl.BinDir, "pg_recvlogical"), "-h", src.Host, "-p", fmt.Sprint(src.Port), "-U", pgtest.User, "-d", "app",
		"-S", "bench_ceiling", "--start", "-E", backlogEnd, "-o", "proto_version=1", "-o", "publication_names=all_tables", "-f", "/dev/null")
	ceilRate := changes / time.Since(ceilStart).Seconds()
	must(src.Exec(ctx, "app", `SELECT pg_drop_replication_slot('bench_ceiling')`))
	fmt.Printf("ceiling: the source's walsender decoding the same backlog into pg_recvlogical (nothing applied): %.0f changes/s; reshard at %.2f of it, native at %.2f\n",
		ceilRate, oursRate/ceilRate, nativeRate/ceilRate)

	// Move cost: the same drain by reshard of a backlog of UPDATEs of
	// orders (whose replica identity, the primary key, does not carry the
	// sharding column: every UPDATE probes the other shard) with none of
	// them moving its row, then with 10% moving it to the other shard.
	must(d0.Exec(ctx, "native", `ALTER SUBSCRIPTION bench_sub DISABLE`))
	_ = rs.Process.Signal(os.Interrupt)
	_ = rs.Wait()
	srcConn, err := src.Connect(ctx, "app")
	must(err)
	defer srcConn.Close(ctx)
	s0, err := d0.Connect(ctx, "shard0")
	must(err)
	defer s0.Close(ctx)
	s1, err := d1.Connect(ctx, "shard1")
	must(err)
	defer s1.Close(ctx)
	tables := []testkit.Table{{Name: "pgbench_accounts", Key: "aid"}, {Name: "pgbench_history", Key: "aid"},
		{Name: "pgbench_branches"}, {Name: "pgbench_tellers"}, {Name: "orders", Key: "aid"}, {Name: "owners", Key: "aid"}}
	drainRate := func(movePercent int) float64 {
		script := filepath.Join(dir, fmt.Sprintf("moves%d.sql", movePercent))
		must(os.WriteFile(script, []byte(fmt.Sprintf(moveScript, moveOrders, movePercent)), 0o644))
		movesSince := func() int64 {
			var n int64
			must(srcConn.QueryRow(ctx, "SELECT count(*) FROM pgbench_history WHERE delta = 0").Scan(&n))
			return n
		}
		before := movesSince()
		out := run2(b, env, pgbench, "-n", "-f", script, "-c", "4", "-j", "2", "-T", fmt.Sprint(seconds), "-h", src.Host, "-p", fmt.Sprint(src.Port), "-U", pgtest.User, "app")
		m := regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindStringSubmatch(out)
		if m == nil {
			b.Fatalf("pgbench output:\n%s", out)
		}
		txns, _ := strconv.ParseInt(m[1], 10, 64)
		want := historyCount(src, "app")
		rs = exec.Command(bin, "--config", cfgPath, "--users", usersPath, "--log-level", "warn",
			"data-sync", "--from-database", "src", "--to-database", "dst", "--publication", "all_tables", "--replication-slot", "bench_slot", "--replicate-only")
		rs.Stdout, rs.Stderr = &rsOut, &rsOut
		start := time.Now()
		must(rs.Start())
		for historyCount(d0, "shard0")+historyCount(d1, "shard1") != want {
			if time.Since(start) > 10*time.Minute {
				b.Fatalf("backlog with %d%% moves not drained after 10 minutes\n%s", movePercent, rsOut.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		took := time.Since(start)
		_ = rs.Process.Signal(os.Interrupt)
		_ = rs.Wait()
		cmp, err := testkit.CompareShards(ctx, []*pgx.Conn{srcConn}, []*pgx.Conn{s0, s1}, tables)
		must(err)
		if !cmp.Equal() {
			b.Fatalf("after the backlog with %d%% moves the shards differ from the source:\n%s", movePercent, cmp)
		}
		moved := movesSince() - before
		if movePercent > 0 && moved == 0 || movePercent == 0 && moved != 0 {
			b.Fatalf("backlog with %d%% moves: %d of %d updates moved a row", movePercent, moved, txns)
		}
		changes := float64(txns * 2) // an UPDATE of orders and an INSERT into pgbench_history
		rate := changes / took.Seconds()
		fmt.Printf("backlog of %.0f changes, %d of %d updates (%.1f%%) moving a row to the other shard: drained by reshard in %.2fs (%.0f changes/s)\n",
			changes, moved, txns, 100*float64(moved)/float64(txns), took.Seconds(), rate)
		return rate
	}
	noMoves := drainRate(0)
	withMoves := drainRate(10)
	fmt.Printf("move cost: reshard drain rate with 10%% of the updates moving rows / none: %.2fx\n", withMoves/noMoves)
	b.ReportMetric(withMoves/noMoves, "move-ratio")
	_ = d1.Exec(ctx, "postgres", "SELECT 1")
	_ = d0.Exec(ctx, "native", `ALTER SUBSCRIPTION bench_sub DISABLE; ALTER SUBSCRIPTION bench_sub SET (slot_name = NONE); DROP SUBSCRIPTION bench_sub`)
}

// moveOrders is the number of orders the move-cost run updates.
const moveOrders = 100_000

// moveSchema is the move-cost run's tables: orders placed by owner (aid),
// keyed by id (the default replica identity does not carry aid), and
// owners, which pairs each owner with one on the other of 2 shards.
const moveSchema = `CREATE TABLE orders (id bigint PRIMARY KEY, aid bigint NOT NULL, total bigint NOT NULL, note text NOT NULL);
CREATE TABLE owners (aid bigint PRIMARY KEY, partner bigint NOT NULL)`

// moveData fills the source's orders and owners: owners 1..2000 placed on
// shard 0 or 1 by PostgreSQL's hash partitioning of bigint (which the
// shards use, as testkit.CompareShards checks), each paired with an owner
// of the other shard.
const moveData = `CREATE TEMP TABLE hp (k bigint) PARTITION BY HASH (k);
CREATE TEMP TABLE placed AS SELECT g AS aid, CASE WHEN satisfies_hash_partition('hp'::regclass, 2, 0, g) THEN 0 ELSE 1 END AS shard,
  row_number() OVER (PARTITION BY CASE WHEN satisfies_hash_partition('hp'::regclass, 2, 0, g) THEN 0 ELSE 1 END ORDER BY g) AS n FROM generate_series(1::bigint, 2000) g;
INSERT INTO owners SELECT a.aid, b.aid FROM placed a JOIN placed b ON b.shard <> a.shard
  AND b.n = 1 + (a.n - 1) % (SELECT count(*) FROM placed c WHERE c.shard = b.shard);
INSERT INTO orders SELECT g, 1 + g % 2000, 0, md5(g::text) FROM generate_series(1, 100000) g`

// moveScript is the move-cost run's pgbench script (orders, percent of
// the updates that move their row): an UPDATE of one order, which with
// the given probability also gives it to the paired owner on the other
// shard (a move, its history row's delta 0), then a row of history.
const moveScript = `\set id random(1, %d)
\set r random(1, 100)
\set delta random(1, 5000)
\if :r <= %d
UPDATE orders o SET aid = w.partner, total = total + 1 FROM owners w WHERE o.id = :id AND w.aid = o.aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :id, 0, CURRENT_TIMESTAMP);
\else
UPDATE orders SET total = total + :delta WHERE id = :id;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :id, :delta, CURRENT_TIMESTAMP);
\endif
`

// run2 is run returning the combined output.
func run2(b *testing.B, env []string, name string, args ...string) string {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("%s: %v\n%s", name, err, out)
	}
	return string(out)
}
