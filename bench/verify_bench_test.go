package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/sync/verify"
	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

// verifyJob is the job of a benchmark's route src -> dst.
func verifyJob(b *testing.B, cfgPath, usersPath string, reg *progress.Registry) *job.Job {
	b.Helper()
	cat, err := catalog.Load(cfgPath, usersPath)
	if err != nil {
		b.Fatal(err)
	}
	j, err := job.New(job.Spec{Catalog: cat, Source: "src", Destination: "dst", Publication: "all_tables", Task: "bench",
		Registry: reg, Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.LevelFromString(os.Getenv("BENCH_LOG_LEVEL")), Output: os.Stderr})})
	if err != nil {
		b.Fatal(err)
	}
	return j
}

// copyAndSettle copies the source into the shards with reshard's copier,
// drops the copy's slot and vacuums the shards (a VERIFY normally runs on
// data that has been read since it was written).
func copyAndSettle(b *testing.B, ctx context.Context, j *job.Job, src *pgtest.Instance, shards []shardNode) {
	b.Helper()
	if _, err := copier.Run(ctx, j, copier.Request{SyncOnly: true}); err != nil {
		b.Fatalf("copy: %v", err)
	}
	if err := src.Exec(ctx, "app", `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active`); err != nil {
		b.Fatal(err)
	}
	for _, s := range shards {
		if err := s.inst.Exec(ctx, s.db, "VACUUM ANALYZE"); err != nil {
			b.Fatal(err)
		}
	}
}

// runVerify runs VERIFY and fails the benchmark unless it compared the
// tables tables and every one matches.
func runVerify(b *testing.B, ctx context.Context, j *job.Job, tables int) (time.Duration, *verify.Result) {
	b.Helper()
	start := time.Now()
	res, err := verify.Run(ctx, j, verify.Request{})
	elapsed := time.Since(start)
	if err != nil {
		b.Fatalf("VERIFY: %v", err)
	}
	if res.Mismatched+res.Failed > 0 || res.Tables != tables {
		b.Fatalf("VERIFY: %s (want %d tables, all matching)", res, tables)
	}
	return elapsed, res
}

// BenchmarkVerify compares, in one run, VERIFY of the copy bench's 3M-row
// data set on 2 shards against scanning the source alone with
// SELECT count(*), sum(hashtext(t::text)) over each table, and prints the
// ratio (goal: at most 1.5). Each side runs twice after a warm-up scan;
// the best of each counts. Run with `make bench-verify`.
func BenchmarkVerify(b *testing.B) {
	rows, _ := strconv.Atoi(os.Getenv("BENCH_VERIFY_ROWS"))
	if rows == 0 {
		rows = 1_000_000 // per table: 3M rows in all
	}
	ctx := context.Background()
	cl := copyDataSet(b, ctx, rows)
	defer cl.Stop()
	src, d0, d1 := cl.Instances[0], cl.Instances[1], cl.Instances[2]
	shards := []shardNode{{d0, "shard0"}, {d1, "shard1"}}
	for _, s := range shards {
		if err := s.inst.CreateDatabase(ctx, s.db); err != nil {
			b.Fatal(err)
		}
		for _, t := range copyTables {
			if err := s.inst.Exec(ctx, s.db, fmt.Sprintf(copyTableDDL, t)); err != nil {
				b.Fatal(err)
			}
		}
	}
	dir := b.TempDir()
	cfgPath, usersPath := writeConfig(b, dir, freeBenchPort(b), src, "app", shards, "customer_id", "")
	j := verifyJob(b, cfgPath, usersPath, nil)
	copyAndSettle(b, ctx, j, src, shards)

	conn, err := src.Connect(ctx, "app")
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	scan := func() time.Duration {
		start := time.Now()
		for _, t := range copyTables {
			var n, sum int64
			if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), sum(hashtext(t::text)) FROM %s t`, t)).Scan(&n, &sum); err != nil {
				b.Fatal(err)
			}
			if n != int64(rows) {
				b.Fatalf("%s: %d rows", t, n)
			}
		}
		return time.Since(start)
	}
	scan() // warm-up: every page in the cache
	best := func(a, c time.Duration) time.Duration { return min(a, c) }
	var baseline, ours time.Duration
	var res *verify.Result
	for round := 0; round < 2; round++ {
		s := scan()
		v, r := runVerify(b, ctx, j, len(copyTables))
		if round == 0 {
			baseline, ours, res = s, v, r
			continue
		}
		baseline, ours = best(baseline, s), best(ours, v)
	}
	fmt.Printf("data set: %d rows in %d tables\n", rows*len(copyTables), len(copyTables))
	fmt.Printf("source scan, count(*) + sum(hashtext(t::text)) per table: %6.2fs\n", baseline.Seconds())
	fmt.Printf("reshard VERIFY, 2 shards (consistent point %s):   %6.2fs\n", res.ConsistentLSN, ours.Seconds())
	fmt.Printf("VERIFY / source scan: %.2fx (goal <= 1.5x)\n", ours.Seconds()/baseline.Seconds())
	b.ReportMetric(ours.Seconds()/baseline.Seconds(), "ratio")
}

// BenchmarkVerifyManyTables: VERIFY of 1,300 tables of a few rows each on
// 2 shards (goal: at most 3 s), and how much of it is listing the tables.
func BenchmarkVerifyManyTables(b *testing.B) {
	n, _ := strconv.Atoi(os.Getenv("BENCH_VERIFY_TABLES"))
	if n == 0 {
		n = 1300
	}
	ctx := context.Background()
	cl, err := pgtest.Start(ctx, 3, pgtest.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Stop()
	src := cl.Instances[0]
	shards := []shardNode{{cl.Instances[1], "shard0"}, {cl.Instances[2], "shard1"}}
	var ddl, data strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&ddl, "CREATE TABLE t%04d (id bigint PRIMARY KEY, customer_id bigint NOT NULL, a text, b timestamptz);\n", i)
		fmt.Fprintf(&data, "INSERT INTO t%04d SELECT g, g * 7, 'row ' || g, now() FROM generate_series(1, 5) g;\n", i)
	}
	if err := src.CreateDatabase(ctx, "app"); err != nil {
		b.Fatal(err)
	}
	if err := src.Exec(ctx, "app", ddl.String()+data.String()+"CREATE PUBLICATION all_tables FOR ALL TABLES; ANALYZE;"); err != nil {
		b.Fatal(err)
	}
	for _, s := range shards {
		if err := s.inst.CreateDatabase(ctx, s.db); err != nil {
			b.Fatal(err)
		}
		if err := s.inst.Exec(ctx, s.db, ddl.String()); err != nil {
			b.Fatal(err)
		}
	}
	dir := b.TempDir()
	cfgPath, usersPath := writeConfig(b, dir, freeBenchPort(b), src, "app", shards, "customer_id", "")
	j := verifyJob(b, cfgPath, usersPath, nil)
	copyAndSettle(b, ctx, j, src, shards)

	conn, err := src.Connect(ctx, "app")
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	tables, err := copier.Tables(ctx, conn, "all_tables", j.Destination)
	listing := time.Since(start)
	conn.Close(ctx)
	if err != nil || len(tables) != n {
		b.Fatalf("%d tables: %v", len(tables), err)
	}
	var ours time.Duration
	var res *verify.Result
	for round := 0; round < 2; round++ {
		v, r := runVerify(b, ctx, j, n)
		if round == 0 || v < ours {
			ours, res = v, r
		}
	}
	fmt.Printf("reshard VERIFY of %d tables of 5 rows, 2 shards: %.2fs (goal <= 3s); listing the tables (copier.Tables) %.2fs of it\n",
		res.Tables, ours.Seconds(), listing.Seconds())
	b.ReportMetric(ours.Seconds(), "s")
}

// BenchmarkVerifyHold: VERIFY of a streaming COPY_DATA task (pgbench
// tables at scale BENCH_VERIFY_SCALE, default 5, on 2 shards) while a
// pgbench load (4 clients) writes on the source, through the executor as
// the admin server runs it: the streams are held at each VERIFY's
// consistent point. Every VERIFY must match; it prints how long the
// streams sat idle holding back changes (hold_ms), and the points' parts.
func BenchmarkVerifyHold(b *testing.B) {
	scale := envInt("BENCH_VERIFY_SCALE", 5)
	rounds := envInt("BENCH_VERIFY_ROUNDS", 8)
	ctx := context.Background()
	cl, err := pgtest.Start(ctx, 3, pgtest.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Stop()
	src := cl.Instances[0]
	shards := []shardNode{{cl.Instances[1], "shard0"}, {cl.Instances[2], "shard1"}}
	env := []string{"PGPASSWORD=" + pgtest.Password}
	pgbench := filepath.Join(cl.BinDir, "pgbench")
	fatalIf(b, src.CreateDatabase(ctx, "app"))
	run(b, env, pgbench, "-i", "-q", "-s", fmt.Sprint(scale), "-I", "dtgvp", "-h", src.Host, "-p", fmt.Sprint(src.Port), "-U", pgtest.User, "app")
	fatalIf(b, src.Exec(ctx, "app", "ALTER TABLE pgbench_history REPLICA IDENTITY FULL; CREATE PUBLICATION all_tables FOR ALL TABLES"))
	for _, s := range shards {
		fatalIf(b, s.inst.CreateDatabase(ctx, s.db))
		run(b, env, pgbench, "-i", "-q", "-s", "1", "-I", "dtp", "-h", s.inst.Host, "-p", fmt.Sprint(s.inst.Port), "-U", pgtest.User, s.db)
	}
	cfgPath, usersPath := writeConfig(b, b.TempDir(), freeBenchPort(b), src, "app", shards, "aid", "")
	cat, err := catalog.Load(cfgPath, usersPath)
	fatalIf(b, err)
	var logs testkit.Buffer
	ex := commands.NewExecutor(cat, hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: &logs}))
	route := commands.Route{Source: "src", Destination: "dst", Publication: "all_tables"}
	res, err := ex.Execute(ctx, commands.CopyData{Route: route, Slot: "hold_bench"})
	fatalIf(b, err)
	id := res.Rows[0][0].(string)
	defer func() { _, _ = ex.Execute(ctx, commands.AbortTask{Task: id}) }()
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		row, ok := ex.Tasks.Get(id)
		if !ok {
			b.Fatalf("task %s gone", id)
		}
		if st := row.Row().State; st == "streaming" {
			break
		} else if st != "copying" || time.Now().After(deadline) {
			b.Fatalf("task %s: %s %s", id, st, row.Row().Error)
		}
	}

	load := exec.Command(pgbench, "-n", "-c", "4", "-j", "2", "-T", "3600", "-h", src.Host, "-p", fmt.Sprint(src.Port), "-U", pgtest.User, "app")
	load.Env = append(os.Environ(), env...)
	var loadOut bytes.Buffer
	load.Stdout, load.Stderr = &loadOut, &loadOut
	fatalIf(b, load.Start())
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Wait() }()
	defer func() {
		_ = load.Process.Signal(os.Interrupt)
		<-loadDone
	}()
	time.Sleep(3 * time.Second)

	var holds, totals []time.Duration
	for round := 0; round < rounds; round++ {
		start := time.Now()
		_, err := ex.Execute(ctx, commands.Verify{Route: route, Foreground: true})
		total := time.Since(start)
		if err != nil {
			b.Fatalf("VERIFY %d under the load: %v\n%s", round, err, lastLogLines(logs.String(), 20))
		}
		select {
		case err := <-loadDone:
			b.Fatalf("the pgbench load ended: %v\n%s", err, loadOut.String())
		default:
		}
		if n := strings.Count(logs.String(), "consistent point taken: streams held"); n != round+1 {
			b.Fatalf("VERIFY %d: %d consistent points with the streams held, want %d (the stream was not held)", round, n, round+1)
		}
		rows := ex.Registry.Verify()
		if len(rows) != 4 {
			b.Fatalf("VERIFY compared %d tables, want the 4 pgbench tables", len(rows))
		}
		for _, r := range rows {
			if r.Status != verify.StatusMatch || r.SourceRows == 0 && r.Table != "pgbench_history" {
				b.Fatalf("VERIFY %d: %s is %s (%d source rows)", round, r.Table, r.Status, r.SourceRows)
			}
		}
		holds, totals = append(holds, rows[0].Hold), append(totals, total)
	}
	sort.Slice(holds, func(i, j int) bool { return holds[i] < holds[j] })
	sort.Slice(totals, func(i, j int) bool { return totals[i] < totals[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	fmt.Printf("VERIFY under a pgbench load (scale %d, 4 clients), %d runs, every table matching:\n", scale, rounds)
	fmt.Printf("  hold (streams idle holding back changes): median %.1f ms, max %.1f ms\n", ms(holds[len(holds)/2]), ms(holds[len(holds)-1]))
	fmt.Printf("  whole VERIFY: median %.2f s\n", totals[len(totals)/2].Seconds())
	for _, l := range strings.Split(logs.String(), "\n") {
		if i := strings.Index(l, "consistent point taken"); i >= 0 {
			fmt.Printf("  %s\n", l[i:])
		}
	}
	b.ReportMetric(ms(holds[len(holds)/2]), "hold_ms")
}

// lastLogLines is the last n lines of a log.
func lastLogLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
