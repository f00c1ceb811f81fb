package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/sync/verify"
	"github.com/reshard/reshard/tests/pgtest"
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

// runVerify runs VERIFY and fails the benchmark unless every table matches.
func runVerify(b *testing.B, ctx context.Context, j *job.Job) (time.Duration, *verify.Result) {
	b.Helper()
	start := time.Now()
	res, err := verify.Run(ctx, j, verify.Request{})
	elapsed := time.Since(start)
	if err != nil {
		b.Fatalf("VERIFY: %v", err)
	}
	if res.Mismatched+res.Failed > 0 {
		b.Fatalf("VERIFY: %s", res)
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
	cfgPath, usersPath := writeConfig(b, dir, 6997, src, "app", shards, "customer_id", "")
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
		v, r := runVerify(b, ctx, j)
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
	cfgPath, usersPath := writeConfig(b, dir, 6996, src, "app", shards, "customer_id", "")
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
		v, r := runVerify(b, ctx, j)
		if round == 0 || v < ours {
			ours, res = v, r
		}
	}
	fmt.Printf("reshard VERIFY of %d tables of 5 rows, 2 shards: %.2fs (goal <= 3s); listing the tables (copier.Tables) %.2fs of it\n",
		res.Tables, ours.Seconds(), listing.Seconds())
	b.ReportMetric(ours.Seconds(), "s")
}
