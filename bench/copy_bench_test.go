package bench

import (
	"bytes"
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

	"github.com/reshard/reshard/tests/pgtest"
)

// copyTables is the data set: 3 tables of rowsPerTable rows, ~110 bytes a
// row, sharded by customer_id.
const copyTableDDL = `CREATE TABLE %s (id bigint PRIMARY KEY, customer_id bigint NOT NULL, a text, b timestamptz, c numeric(12,2))`

var copyTables = []string{"events_a", "events_b", "events_c"}

func run(b *testing.B, env []string, name string, args ...string) time.Duration {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return time.Since(start)
}

func sh(b *testing.B, script string) time.Duration {
	b.Helper()
	return run(b, []string{"PGPASSWORD=" + pgtest.Password}, "bash", "-o", "pipefail", "-c", script)
}

// copyDataSet starts 3 instances; the first holds database "app" with the
// copy tables of rows rows each, published as all_tables.
func copyDataSet(b *testing.B, ctx context.Context, rows int) *pgtest.Cluster {
	return copyDataSetOn(b, ctx, rows, 0)
}

// copyDataSetOn is copyDataSet on PostgreSQL major version (0: the default).
func copyDataSetOn(b *testing.B, ctx context.Context, rows, version int) *pgtest.Cluster {
	b.Helper()
	cl, err := pgtest.Start(ctx, 3, pgtest.Options{Version: version, Settings: map[string]string{"max_wal_size": "4GB", "checkpoint_timeout": "30min"}})
	if err != nil {
		b.Fatal(err)
	}
	src := cl.Instances[0]
	if err := src.CreateDatabase(ctx, "app"); err != nil {
		cl.Stop()
		b.Fatal(err)
	}
	sql := ""
	for _, t := range copyTables {
		sql += fmt.Sprintf(copyTableDDL, t) + ";" + fmt.Sprintf(
			`INSERT INTO %s SELECT g, g %% 100000, md5(g::text) || md5((g+1)::text), now() - (g || ' s')::interval, (g %% 100000) / 100.0 FROM generate_series(1, %d) g;`, t, rows)
	}
	for _, step := range []string{sql + "CREATE PUBLICATION all_tables FOR ALL TABLES", "VACUUM ANALYZE"} {
		if err := src.Exec(ctx, "app", step); err != nil {
			cl.Stop()
			b.Fatal(err)
		}
	}
	return cl
}

// checkCopied fails the benchmark unless the shards hold rows rows of each
// copy table between them.
func checkCopied(b *testing.B, ctx context.Context, shards []shardNode, rows int) {
	b.Helper()
	var total int64
	for _, d := range shards {
		c, err := d.inst.Connect(ctx, d.db)
		if err != nil {
			b.Fatal(err)
		}
		for _, t := range copyTables {
			var n int64
			if err := c.QueryRow(ctx, "SELECT count(*) FROM "+t).Scan(&n); err != nil {
				b.Fatal(err)
			}
			total += n
		}
		c.Close(ctx)
	}
	if total != int64(rows*len(copyTables)) {
		b.Fatalf("reshard copied %d rows, want %d", total, rows*len(copyTables))
	}
}

// BenchmarkCopy compares, in one run on one machine, copying the same data
// set with (a) psql's binary COPY pipe into 1 database, (b) pgcopydb copy
// table-data into 1 database, (c) native logical replication's initial sync
// (CREATE SUBSCRIPTION) into 1 database, and (d) reshard into 2 shards. It
// prints each time, reshard's ratio to the best of (a)-(c), and reshard's
// peak RSS. Run with `make bench-copy`.
func BenchmarkCopy(b *testing.B) {
	rows, _ := strconv.Atoi(os.Getenv("BENCH_COPY_ROWS"))
	if rows == 0 {
		rows = 1_000_000 // per table: 3M rows in all
	}
	ctx := context.Background()
	cl := copyDataSet(b, ctx, rows)
	defer cl.Stop()
	src, d0, d1 := cl.Instances[0], cl.Instances[1], cl.Instances[2]
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	var size int64
	conn, err := src.Connect(ctx, "app")
	must(err)
	must(conn.QueryRow(ctx, `SELECT sum(pg_table_size(c.oid)) FROM pg_class c WHERE relname LIKE 'events_%' AND relkind = 'r'`).Scan(&size))
	conn.Close(ctx)
	fmt.Printf("data set: %d rows in %d tables, %.0f MB on disk\n", rows*len(copyTables), len(copyTables), float64(size)/(1<<20))

	fresh := func(inst *pgtest.Instance, db string) {
		must(inst.CreateDatabase(ctx, db))
		for _, t := range copyTables {
			must(inst.Exec(ctx, db, fmt.Sprintf(copyTableDDL, t)))
		}
	}
	srcURI := src.DSN("app")

	// (a) psql binary COPY pipe, the tables one after another.
	fresh(d0, "pipe")
	var script strings.Builder
	for _, t := range copyTables {
		fmt.Fprintf(&script, "psql -X -q %q -c 'COPY %s TO STDOUT (FORMAT binary)' | psql -X -q %q -c 'COPY %s FROM STDIN (FORMAT binary)'\n", srcURI, t, d0.DSN("pipe"), t)
	}
	pipe := sh(b, "set -e\n"+script.String())

	// (b) pgcopydb copy table-data, as many table jobs as reshard's workers.
	fresh(d0, "pgcopydb")
	dir := b.TempDir()
	pgcopydb := time.Duration(0)
	if _, err := exec.LookPath("pgcopydb"); err == nil {
		pgcopydb = run(b, []string{"PGPASSWORD=" + pgtest.Password}, "pgcopydb", "copy", "table-data",
			"--source", srcURI, "--target", d0.DSN("pgcopydb"), "--table-jobs", "4", "--dir", filepath.Join(dir, "pgcopydb"))
	} else {
		fmt.Println("pgcopydb not installed: skipped (apt-get install pgcopydb)")
	}

	// (c) native logical replication: CREATE SUBSCRIPTION, until every
	// table is synchronized.
	fresh(d0, "native")
	start := time.Now()
	must(d0.Exec(ctx, "native", fmt.Sprintf(`CREATE SUBSCRIPTION bench_sub CONNECTION '%s' PUBLICATION all_tables WITH (binary = true)`,
		strings.Replace(srcURI, "?sslmode=disable", "", 1))))
	nconn, err := d0.Connect(ctx, "native")
	must(err)
	waitSubscriptionSynced(b, nconn)
	native := time.Since(start)
	_, _ = nconn.Exec(ctx, `ALTER SUBSCRIPTION bench_sub DISABLE; ALTER SUBSCRIPTION bench_sub SET (slot_name = NONE); DROP SUBSCRIPTION bench_sub`)
	nconn.Close(ctx)
	_ = src.Exec(ctx, "app", `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active`)

	// (d) reshard into 2 shards, as a process (for its peak RSS).
	fresh(d0, "shard0")
	fresh(d1, "shard1")
	cfgPath, usersPath := writeConfig(b, dir, 6998, src, "app", []shardNode{{d0, "shard0"}, {d1, "shard1"}}, "customer_id", "resharding_parallel_copies = 4")
	bin := filepath.Join(dir, "reshard")
	run(b, nil, "go", "build", "-o", bin, "github.com/reshard/reshard/cmd/reshard")
	cmd := exec.Command(bin, "--config", cfgPath, "--users", usersPath, "--log-level", "warn",
		"data-sync", "--from-database", "src", "--to-database", "dst", "--publication", "all_tables", "--sync-only")
	if p := os.Getenv("BENCH_CPUPROFILE"); p != "" {
		cmd.Env = append(os.Environ(), "RESHARD_CPUPROFILE="+p)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start = time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("reshard: %v\n%s", err, out.String())
	}
	ours := time.Since(start)
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss // KiB on Linux

	// Check the shards hold every row.
	checkCopied(b, ctx, []shardNode{{d0, "shard0"}, {d1, "shard1"}}, rows)

	best, bestName := pipe, "psql COPY pipe"
	if pgcopydb > 0 && pgcopydb < best {
		best, bestName = pgcopydb, "pgcopydb"
	}
	if native < best {
		best, bestName = native, "CREATE SUBSCRIPTION"
	}
	mb := float64(size) / (1 << 20)
	fmt.Printf("(a) psql binary COPY pipe -> 1 db:   %6.2fs  %6.1f MB/s\n", pipe.Seconds(), mb/pipe.Seconds())
	if pgcopydb > 0 {
		fmt.Printf("(b) pgcopydb copy table-data -> 1 db: %6.2fs  %6.1f MB/s\n", pgcopydb.Seconds(), mb/pgcopydb.Seconds())
	}
	fmt.Printf("(c) CREATE SUBSCRIPTION -> 1 db:     %6.2fs  %6.1f MB/s\n", native.Seconds(), mb/native.Seconds())
	fmt.Printf("(d) reshard -> 2 shards:             %6.2fs  %6.1f MB/s  peak RSS %.1f MB\n", ours.Seconds(), mb/ours.Seconds(), float64(rss)/1024)
	fmt.Printf("reshard / best (%s): %.2fx\n", bestName, ours.Seconds()/best.Seconds())
	b.ReportMetric(ours.Seconds()/best.Seconds(), "ratio")
	b.ReportMetric(float64(rss)/1024, "peak-RSS-MB")
}
