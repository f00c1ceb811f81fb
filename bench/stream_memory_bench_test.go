package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sync/ddl"
	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

// BenchmarkStreamMemory measures the peak RSS of a reshard process that
// streams large source transactions into 2 shards: (a) one transaction of
// 3M inserted rows, streamed by the source while in progress, (b) one
// transaction carrying a single 200 MB value, (c) the 3M rows again, sent
// whole at their commit (the source's logical_decoding_work_mem raised
// above them), with BENCH_STREAM_MEMORY_9M=1 (d) one of 9M rows, and (e)
// the 3M rows sent whole at their commit again with [general]
// resharding_ddl = "replicate", after a column added in the same
// transaction (a captured statement: the DDL stage applies it among the
// rows read back from the spool). Each case runs in its own reshard
// process (the first copies the empty tables, the others stream from the
// same slot with --replicate-only), started before the
// transaction and stopped once the shards equal the source
// (testkit.CompareShards); its peak RSS is the kernel's (getrusage
// ru_maxrss after it ended, the same as /proc/PID/status VmHWM). It prints
// each peak against the goal resharding_stream_memory + 64 MB and, for the
// value, against the value's size, as ratios; the figures are not asserted
// (shared machines). BENCH_STREAM_MEMORY sets resharding_stream_memory in
// bytes (default 64 MiB); BENCH_STREAM_MEMORY_ROWS the rows of (a)
// (default 3,000,000); BENCH_STREAM_MEMORY_VALUE_MB the value of (b)
// (default 200). Run with `make bench-stream-memory`.
func BenchmarkStreamMemory(b *testing.B) {
	limit := envInt64("BENCH_STREAM_MEMORY", 64<<20)
	rows := envInt64("BENCH_STREAM_MEMORY_ROWS", 3_000_000)
	valueMB := envInt64("BENCH_STREAM_MEMORY_VALUE_MB", 200)
	ctx := context.Background()
	cl, err := pgtest.Start(ctx, 3, pgtest.Options{Settings: map[string]string{"max_wal_size": "8GB"}})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Stop()
	src, d0, d1 := cl.Instances[0], cl.Instances[1], cl.Instances[2]
	must := func(err error) {
		b.Helper()
		if err != nil {
			b.Fatal(err)
		}
	}
	const schema = `CREATE TABLE wide_rows (id bigint PRIMARY KEY, owner bigint NOT NULL, pad text NOT NULL);
		CREATE TABLE big_values (id bigint PRIMARY KEY, v text NOT NULL)`
	must(src.CreateDatabase(ctx, "app"))
	must(src.Exec(ctx, "app", schema))
	must(src.Exec(ctx, "app", "CREATE PUBLICATION all_tables FOR ALL TABLES"))
	must(d0.CreateDatabase(ctx, "shard0"))
	must(d0.Exec(ctx, "shard0", schema))
	must(d1.CreateDatabase(ctx, "shard1"))
	must(d1.Exec(ctx, "shard1", schema))
	connect := func(inst *pgtest.Instance, db string) *pgx.Conn {
		c, err := inst.Connect(ctx, db)
		must(err)
		return c
	}
	srcConn, s0, s1 := connect(src, "app"), connect(d0, "shard0"), connect(d1, "shard1")
	defer srcConn.Close(ctx)
	defer s0.Close(ctx)
	defer s1.Close(ctx)
	tables := []testkit.Table{{Name: "wide_rows", Key: "id"}, {Name: "big_values", Key: "id"}}

	dir := b.TempDir()
	cfgPath, usersPath := writeConfig(b, dir, freeBenchPort(b), src, "app", []shardNode{{d0, "shard0"}, {d1, "shard1"}}, "id",
		fmt.Sprintf("resharding_stream_memory = %d", limit))
	// (e)'s configuration: the same, replicating DDL.
	ddlDir := filepath.Join(dir, "ddl")
	must(os.MkdirAll(ddlDir, 0o755))
	ddlCfgPath, ddlUsersPath := writeConfig(b, ddlDir, freeBenchPort(b), src, "app", []shardNode{{d0, "shard0"}, {d1, "shard1"}}, "id",
		fmt.Sprintf("resharding_stream_memory = %d\nresharding_ddl = \"replicate\"", limit))
	bin := filepath.Join(dir, "reshard")
	run(b, nil, "go", "build", "-o", bin, "github.com/reshard/reshard/cmd/reshard")

	goal := float64(limit) + 64<<20
	fmt.Printf("resharding_stream_memory = %.0f MB; goal: peak RSS <= %.0f MB (the setting + 64 MB)\n", mb(float64(limit)), mb(goal))
	type result struct {
		name        string
		peak, idle  float64
		took        time.Duration
		largestByte float64
	}
	var results []result
	// streamedTxns is what the source's slot streamed while in progress.
	streamedTxns := func() int64 {
		var n int64
		must(srcConn.QueryRow(ctx, `SELECT COALESCE(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name LIKE 'bench_mem_slot%'`).Scan(&n))
		return n
	}
	first := true
	config, users := cfgPath, usersPath
	// logged, when set, must be in reshard's log once the shards hold the
	// transaction.
	logged := ""
	stream := func(name, sql string, table string, want int64, largest float64) {
		spills := largest == 0 // a transaction of many rows outgrows logical_decoding_work_mem
		args := []string{"--config", config, "--users", users, "--log-level", "info",
			"data-sync", "--from-database", "src", "--to-database", "dst", "--publication", "all_tables", "--replication-slot", "bench_mem_slot"}
		if !first {
			args = append(args, "--replicate-only")
		}
		first = false
		cmd := exec.Command(bin, args...)
		cmd.Env = os.Environ()
		tag := strings.Trim(strings.Fields(name)[0], "()")
		if p := os.Getenv("BENCH_CPUPROFILE"); p != "" {
			cmd.Env = append(cmd.Env, "RESHARD_CPUPROFILE="+p+"."+tag)
		}
		if p := os.Getenv("BENCH_HEAPPROFILE"); p != "" {
			cmd.Env = append(cmd.Env, "RESHARD_HEAPPROFILE="+p+"."+tag)
		}
		var out testkit.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		must(cmd.Start())
		done := make(chan struct{})
		var waitErr error
		go func() { waitErr = cmd.Wait(); close(done) }()
		stopped := false
		stop := func() {
			if stopped {
				return
			}
			stopped = true
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		}
		defer stop()
		if !out.WaitFor(5*time.Minute, done, func(s string) bool { return strings.Contains(s, "stream: streaming:") }) {
			b.Fatalf("%s: reshard did not start streaming:\n%s", name, out.String())
		}
		streamedBefore := streamedTxns()
		idle := vmRSS(cmd.Process.Pid)
		start := time.Now()
		must(src.Exec(ctx, "app", sql))
		for {
			var n0, n1 int64
			must(s0.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n0))
			must(s1.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n1))
			if n0+n1 == want {
				break
			}
			select {
			case <-done:
				b.Fatalf("%s: reshard ended before the shards held the transaction (%v):\n%s", name, waitErr, out.String())
			default:
			}
			if time.Since(start) > 20*time.Minute {
				b.Fatalf("%s: shards hold %d of %d rows after 20 minutes:\n%s", name, n0+n1, want, out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		took := time.Since(start)
		cmp, err := testkit.CompareShards(ctx, []*pgx.Conn{srcConn}, []*pgx.Conn{s0, s1}, tables)
		must(err)
		if !cmp.Equal() {
			b.Fatalf("%s: shards differ from the source:\n%s", name, cmp)
		}
		stop()
		if spills && !strings.Contains(out.String(), "spilled to disk") {
			b.Fatalf("%s: the transaction was not streamed while in progress and spilled (no spill logged):\n%s", name, out.String())
		}
		if logged != "" && !strings.Contains(out.String(), logged) {
			b.Fatalf("%s: reshard did not log %q:\n%s", name, logged, out.String())
		}
		peak := float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) * 1024
		fmt.Printf("%s: the source streamed %d transactions while in progress (pg_stat_replication_slots)\n", name, streamedTxns()-streamedBefore)
		results = append(results, result{name: name, peak: peak, idle: idle, took: took, largestByte: largest})
		fmt.Printf("%s: peak RSS %.0f MB\n", name, mb(peak))
	}
	stream(fmt.Sprintf("(a) %d rows in one transaction", rows),
		fmt.Sprintf(`INSERT INTO wide_rows SELECT g, g %% 1000, repeat(md5(g::text), 2) FROM generate_series(1, %d) g`, rows),
		"wide_rows", rows, 0)
	must(src.Exec(ctx, "app", "TRUNCATE wide_rows"))
	value := float64(valueMB << 20)
	// md5 text repeated: PostgreSQL compresses it in TOAST, but the stream
	// carries it whole.
	stream(fmt.Sprintf("(b) one %d MB value", valueMB),
		fmt.Sprintf(`INSERT INTO big_values SELECT 1, repeat(md5('x'), %d)`, valueMB<<20/32),
		"big_values", 1, value)
	// (c): the same rows sent whole at their commit, not streamed while in
	// progress (the source's logical_decoding_work_mem above the
	// transaction: read when the next case's walsender starts).
	must(src.Exec(ctx, "app", "TRUNCATE wide_rows"))
	must(src.Exec(ctx, "postgres", "ALTER SYSTEM SET logical_decoding_work_mem = '4GB'"))
	must(src.Exec(ctx, "postgres", "SELECT pg_reload_conf()"))
	stream(fmt.Sprintf("(c) %d rows sent whole at commit", rows),
		fmt.Sprintf(`INSERT INTO wide_rows SELECT g, g %% 1000, repeat(md5(g::text), 2) FROM generate_series(1, %d) g`, rows),
		"wide_rows", rows, 0)
	must(src.Exec(ctx, "postgres", "ALTER SYSTEM RESET logical_decoding_work_mem"))
	must(src.Exec(ctx, "postgres", "SELECT pg_reload_conf()"))
	if os.Getenv("BENCH_STREAM_MEMORY_9M") == "1" {
		must(src.Exec(ctx, "app", "TRUNCATE wide_rows"))
		stream("(d) 9000000 rows in one transaction",
			`INSERT INTO wide_rows SELECT g, g % 1000, repeat(md5(g::text), 2) FROM generate_series(1, 9000000) g`,
			"wide_rows", 9_000_000, 0)
	}
	// (e): DDL capture on the source (as COPY_DATA installs it with
	// resharding_ddl = "replicate"), the rows sent whole at commit again,
	// after a column added in their transaction.
	must(src.Exec(ctx, "app", "TRUNCATE wide_rows"))
	must(ddl.Install(ctx, srcConn, "all_tables"))
	must(src.Exec(ctx, "postgres", "ALTER SYSTEM SET logical_decoding_work_mem = '4GB'"))
	must(src.Exec(ctx, "postgres", "SELECT pg_reload_conf()"))
	config, users, logged = ddlCfgPath, ddlUsersPath, "captured DDL statement applied"
	stream(fmt.Sprintf("(e) %d rows whole at commit + DDL", rows),
		fmt.Sprintf(`BEGIN; ALTER TABLE wide_rows ADD COLUMN note text;
			INSERT INTO wide_rows SELECT g, g %% 1000, repeat(md5(g::text), 2), 'e' FROM generate_series(1, %d) g; COMMIT`, rows),
		"wide_rows", rows, 0)
	must(src.Exec(ctx, "postgres", "ALTER SYSTEM RESET logical_decoding_work_mem"))
	must(src.Exec(ctx, "postgres", "SELECT pg_reload_conf()"))
	for _, r := range results {
		line := fmt.Sprintf("%-38s streamed in %6.1fs  idle RSS %5.0f MB  peak RSS %6.0f MB  peak / goal %.2fx",
			r.name, r.took.Seconds(), mb(r.idle), mb(r.peak), r.peak/goal)
		if r.largestByte > 0 {
			line += fmt.Sprintf("  peak / value %.2fx", r.peak/r.largestByte)
		}
		fmt.Println(line)
		b.ReportMetric(mb(r.peak), "peak-RSS-MB-"+strings.Trim(strings.Fields(r.name)[0], "()"))
	}
}

func mb(bytes float64) float64 { return bytes / (1 << 20) }

// envInt64 is the integer in the environment variable name, or def.
func envInt64(name string, def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv(name), 10, 64); err == nil && v > 0 {
		return v
	}
	return def
}

// vmRSS is the resident set of process pid in bytes (0 if unreadable).
func vmRSS(pid int) float64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	return 0
}
