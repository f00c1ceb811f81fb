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

	"github.com/reshard/reshard/tests/pgtest"
)

// BenchmarkStream runs a pgbench write load on the source for
// BENCH_STREAM_SECONDS (default 60) while reshard streams it into 2 shards
// and native logical replication (CREATE SUBSCRIPTION) into 1 database, both
// from the same source at once. It prints each one's apply rate (changes/s,
// from load start until it holds every change) and the seconds it needed to
// catch up after the load stopped. Run with `make bench-stream`.
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
	must(src.Exec(ctx, "app", "CREATE PUBLICATION all_tables FOR ALL TABLES"))
	pgbenchInit(d0, "native", "dtp")
	pgbenchInit(d0, "shard0", "dtp")
	pgbenchInit(d1, "shard1", "dtp")

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
	cfgPath, usersPath := writeConfig(b, dir, 6997, src, "app", []shardNode{{d0, "shard0"}, {d1, "shard1"}}, "aid", "")
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
			must(c.QueryRow(ctx, "SELECT count(*) FROM pgbench_accounts").Scan(&k))
			c.Close(ctx)
			n += k
		}
		if n == 1_000_000 {
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
	time.Sleep(time.Second)
	out = run2(b, env, pgbench, "-n", "-c", "4", "-j", "2", "-T", fmt.Sprint(seconds), "-h", src.Host, "-p", fmt.Sprint(src.Port), "-U", pgtest.User, "app")
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
	_ = d1.Exec(ctx, "postgres", "SELECT 1")
	_ = d0.Exec(ctx, "native", `ALTER SUBSCRIPTION bench_sub DISABLE; ALTER SUBSCRIPTION bench_sub SET (slot_name = NONE); DROP SUBSCRIPTION bench_sub`)
}

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
