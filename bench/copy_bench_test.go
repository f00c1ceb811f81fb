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

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
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

// checkCopied fails the benchmark unless the shards together equal the
// source "app" database, table by table (testkit.CompareShards: count, sum
// of row hashes, every row on the shard its customer_id hashes to; a
// single database is one shard). what names the contender.
func checkCopied(b *testing.B, ctx context.Context, what string, src *pgtest.Instance, shards []shardNode) {
	b.Helper()
	sc, err := src.Connect(ctx, "app")
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Close(ctx)
	var conns []*pgx.Conn
	for _, d := range shards {
		c, err := d.inst.Connect(ctx, d.db)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close(ctx)
		conns = append(conns, c)
	}
	var tables []testkit.Table
	for _, t := range copyTables {
		tables = append(tables, testkit.Table{Name: t, Key: "customer_id"})
	}
	res, err := testkit.CompareShards(ctx, []*pgx.Conn{sc}, conns, tables)
	if err != nil {
		b.Fatalf("%s: comparing with the source: %v", what, err)
	}
	if !res.Equal() {
		b.Fatalf("%s: the copy differs from the source:\n%s", what, res)
	}
	fmt.Printf("%s: checked, %d rows equal to the source (count, row hashes, placement per table)\n", what, res.Rows)
}

// breakCopy damages a contender's result when BENCH_COPY_BREAK names it
// (a test-only switch showing that checkCopied catches a broken copy):
// "reshard" moves 100 rows of each table from shard 1 to shard 0 (counts
// and hash sums unchanged: only placement shows it); any other contender
// gets one changed value per table.
func breakCopy(b *testing.B, ctx context.Context, what string, shards []shardNode) {
	b.Helper()
	if os.Getenv("BENCH_COPY_BREAK") != what {
		return
	}
	for _, t := range copyTables {
		if len(shards) == 2 {
			fatalIf(b, moveRows(ctx, shards[1], shards[0], t, 100))
		} else {
			fatalIf(b, shards[0].inst.Exec(ctx, shards[0].db, fmt.Sprintf(`UPDATE %s SET a = a || '!' WHERE id = (SELECT min(id) FROM %s)`, t, t)))
		}
	}
	fmt.Printf("BENCH_COPY_BREAK=%s: %s's result damaged on purpose\n", what, what)
}

// moveRows moves n rows of table from one shard to another.
func moveRows(ctx context.Context, from, to shardNode, table string, n int) error {
	fc, err := from.inst.Connect(ctx, from.db)
	if err != nil {
		return err
	}
	defer fc.Close(ctx)
	tc, err := to.inst.Connect(ctx, to.db)
	if err != nil {
		return err
	}
	defer tc.Close(ctx)
	rows, err := fc.Query(ctx, fmt.Sprintf(`DELETE FROM %s WHERE id IN (SELECT id FROM %s ORDER BY id LIMIT %d) RETURNING *`, table, table, n))
	if err != nil {
		return err
	}
	moved, err := pgx.CollectRows(rows, pgx.RowToMap)
	if err != nil {
		return err
	}
	for _, r := range moved {
		if _, err := tc.Exec(ctx, fmt.Sprintf(`INSERT INTO %s VALUES ($1, $2, $3, $4, $5)`, table), r["id"], r["customer_id"], r["a"], r["b"], r["c"]); err != nil {
			return err
		}
	}
	return nil
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
	breakCopy(b, ctx, "pipe", []shardNode{{d0, "pipe"}})
	checkCopied(b, ctx, "(a) psql COPY pipe", src, []shardNode{{d0, "pipe"}})

	// (b) pgcopydb copy table-data, as many table jobs as reshard's workers.
	fresh(d0, "pgcopydb")
	dir := b.TempDir()
	// A contender that cannot run fails the benchmark: a ratio to the best
	// of fewer contenders would look better than it is.
	if _, err := exec.LookPath("pgcopydb"); err != nil {
		b.Fatalf("pgcopydb is not installed, so the comparison cannot be made (make bench-copy installs it: apt-get install pgcopydb): %v", err)
	}
	pgcopydb := run(b, []string{"PGPASSWORD=" + pgtest.Password}, "pgcopydb", "copy", "table-data",
		"--source", srcURI, "--target", d0.DSN("pgcopydb"), "--table-jobs", "4", "--dir", filepath.Join(dir, "pgcopydb"))
	breakCopy(b, ctx, "pgcopydb", []shardNode{{d0, "pgcopydb"}})
	checkCopied(b, ctx, "(b) pgcopydb", src, []shardNode{{d0, "pgcopydb"}})

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
	breakCopy(b, ctx, "native", []shardNode{{d0, "native"}})
	checkCopied(b, ctx, "(c) CREATE SUBSCRIPTION", src, []shardNode{{d0, "native"}})

	// (d) reshard into 2 shards, as a process (for its peak RSS).
	fresh(d0, "shard0")
	fresh(d1, "shard1")
	cfgPath, usersPath := writeConfig(b, dir, freeBenchPort(b), src, "app", []shardNode{{d0, "shard0"}, {d1, "shard1"}}, "customer_id", "resharding_parallel_copies = 4")
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

	// Check the shards equal the source.
	breakCopy(b, ctx, "reshard", []shardNode{{d0, "shard0"}, {d1, "shard1"}})
	checkCopied(b, ctx, "(d) reshard", src, []shardNode{{d0, "shard0"}, {d1, "shard1"}})

	best, bestName := pipe, "psql COPY pipe"
	if pgcopydb < best {
		best, bestName = pgcopydb, "pgcopydb"
	}
	if native < best {
		best, bestName = native, "CREATE SUBSCRIPTION"
	}
	mb := float64(size) / (1 << 20)
	fmt.Printf("(a) psql binary COPY pipe -> 1 db:   %6.2fs  %6.1f MB/s\n", pipe.Seconds(), mb/pipe.Seconds())
	fmt.Printf("(b) pgcopydb copy table-data -> 1 db: %6.2fs  %6.1f MB/s\n", pgcopydb.Seconds(), mb/pgcopydb.Seconds())
	fmt.Printf("(c) CREATE SUBSCRIPTION -> 1 db:     %6.2fs  %6.1f MB/s\n", native.Seconds(), mb/native.Seconds())
	fmt.Printf("(d) reshard -> 2 shards:             %6.2fs  %6.1f MB/s  peak RSS %.1f MB\n", ours.Seconds(), mb/ours.Seconds(), float64(rss)/1024)
	fmt.Printf("reshard / best (%s): %.2fx\n", bestName, ours.Seconds()/best.Seconds())
	b.ReportMetric(ours.Seconds()/best.Seconds(), "ratio")
	b.ReportMetric(float64(rss)/1024, "peak-RSS-MB")
}
