// Package bench compares reshard's pipeline stages against the plain tools
// an operator would otherwise use, in one run on one machine, and reports
// ratios. Run with `make bench`; nothing here runs in `make test`.
package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/schema"
	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

// manyTables is a schema of n tables with 3 secondary indexes each.
func manyTables(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "CREATE TABLE t%04d (id serial PRIMARY KEY, user_id int NOT NULL, a text, b timestamptz, c numeric);\n", i)
		fmt.Fprintf(&b, "CREATE INDEX t%04d_user ON t%04d (user_id);\nCREATE INDEX t%04d_a ON t%04d (a);\nCREATE INDEX t%04d_bc ON t%04d (b, c);\n", i, i, i, i, i, i)
	}
	b.WriteString("CREATE PUBLICATION all_tables FOR ALL TABLES;\n")
	return b.String()
}

// checkCatalog fails the benchmark unless each node's public schema is the
// source "app" database's (testkit.Catalog: tables, columns with types,
// NOT NULL and defaults, indexes, constraints), which must have at least
// tables tables; expect, if not nil, maps each of the source's lines to
// what the nodes must have. BENCH_SCHEMA_BREAK=1 drops an index on the
// first node first (a test-only switch showing the check fails).
func checkCatalog(b *testing.B, ctx context.Context, src *pgtest.Instance, nodes []shardNode, tables int, expect func(string) string) {
	b.Helper()
	if os.Getenv("BENCH_SCHEMA_BREAK") != "" {
		fatalIf(b, nodes[0].inst.Exec(ctx, nodes[0].db, "DROP INDEX t0500_a"))
		fmt.Println("BENCH_SCHEMA_BREAK: index t0500_a dropped on the first shard on purpose")
	}
	catalogOf := func(inst *pgtest.Instance, db string) []string {
		c, err := inst.Connect(ctx, db)
		fatalIf(b, err)
		defer c.Close(ctx)
		lines, err := testkit.Catalog(ctx, c, "public")
		fatalIf(b, err)
		return lines
	}
	want := catalogOf(src, "app")
	if expect != nil {
		for i, l := range want {
			want[i] = expect(l)
		}
	}
	n := 0
	for _, l := range want {
		if strings.HasPrefix(l, "table ") && strings.HasSuffix(l, " r") {
			n++
		}
	}
	if n < tables {
		b.Fatalf("the source has %d tables, want %d", n, tables)
	}
	for _, d := range nodes {
		if diff := testkit.DiffLines(want, catalogOf(d.inst, d.db)); len(diff) > 0 {
			if len(diff) > 20 {
				diff = append(diff[:20], fmt.Sprintf("... %d more", len(diff)-20))
			}
			b.Fatalf("%s on port %d: the schema differs from the source's (- missing, + extra):\n%s", d.db, d.inst.Port, strings.Join(diff, "\n"))
		}
	}
	fmt.Printf("schema checked: %d catalog entries (%d tables) equal on the source and %d databases\n", len(want), n, len(nodes))
}

// serialID is manyTables' serial key column as testkit.Catalog lists it.
var serialID = regexp.MustCompile(`^column (t[0-9]{4})\.id integer `)

// widenSerialIDs is the source's catalog line as the shards must have it:
// the serial key widened to bigint.
func widenSerialIDs(line string) string {
	return serialID.ReplaceAllString(line, "column $1.id bigint ")
}

// BenchmarkSchemaSync1000Tables: PRE+POST of 1,000 tables and 3,000 indexes
// into 2 shards, against `pg_dump -s | psql` into 1 database, same run.
func BenchmarkSchemaSync1000Tables(b *testing.B) {
	ctx := context.Background()
	cl, err := pgtest.Start(ctx, 3, pgtest.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Stop()
	src, s0, s1 := cl.Instances[0], cl.Instances[1], cl.Instances[2]
	if err := src.CreateDatabase(ctx, "app"); err != nil {
		b.Fatal(err)
	}
	if err := src.Exec(ctx, "app", manyTables(1000)); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	cfgPath, usersPath := writeConfig(b, dir, freeBenchPort(b), src, "app", []shardNode{{s0, "dst"}, {s1, "dst"}}, "", "")
	cat, err := catalog.Load(cfgPath, usersPath)
	if err != nil {
		b.Fatal(err)
	}
	var baseline, ours time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for _, inst := range []*pgtest.Instance{s0, s1} {
			if err := inst.CreateDatabase(ctx, "dst"); err != nil {
				b.Fatal(err)
			}
		}
		if err := s0.CreateDatabase(ctx, "plain"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		// Baseline: pg_dump -s | psql into one database.
		start := time.Now()
		pipe := exec.Command("bash", "-o", "pipefail", "-c", fmt.Sprintf(
			"pg_dump -s -h 127.0.0.1 -p %d -U %s app | psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p %d -U %s plain",
			src.Port, pgtest.User, s0.Port, pgtest.User))
		pipe.Env = append(os.Environ(), "PGPASSWORD="+pgtest.Password)
		var stderr bytes.Buffer
		pipe.Stderr = &stderr
		if err := pipe.Run(); err != nil {
			b.Fatalf("pg_dump | psql: %v\n%s", err, stderr.String())
		}
		baseline += time.Since(start)

		// reshard: PRE then POST into both shards.
		start = time.Now()
		j, err := job.New(job.Spec{Catalog: cat, Source: "src", Destination: "dst", Publication: "all_tables",
			Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.LevelFromString(os.Getenv("BENCH_LOG")), Output: os.Stderr})})
		if err != nil {
			b.Fatal(err)
		}
		for _, phase := range []schema.Phase{schema.PhasePre, schema.PhasePost} {
			res, err := schema.Run(ctx, j, schema.Request{Phase: phase})
			if err != nil {
				b.Fatalf("%s: %v", phase, err)
			}
			for _, sh := range res.Shards {
				if sh.Failed > 0 {
					b.Fatalf("%s shard %d: %d failed", phase, sh.Shard, sh.Failed)
				}
			}
		}
		ours += time.Since(start)
		b.StopTimer()
		// What was timed made the source's schema on each shard (and the
		// baseline in its database): tables, columns, indexes, constraints.
		// reshard widens the generated integer keys (serial) to bigint on
		// the shards, as documented; pg_dump | psql changes nothing.
		checkCatalog(b, ctx, src, []shardNode{{s0, "dst"}, {s1, "dst"}}, 1000, widenSerialIDs)
		checkCatalog(b, ctx, src, []shardNode{{s0, "plain"}}, 1000, nil)
		b.StartTimer()
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(baseline.Seconds()/n, "s/pg_dump|psql-1db")
	b.ReportMetric(ours.Seconds()/n, "s/reshard-2shards")
	b.ReportMetric(ours.Seconds()/baseline.Seconds(), "ratio")
	fmt.Printf("schema sync, 1000 tables + 3000 indexes: pg_dump -s | psql into 1 db %.2fs; reshard PRE+POST into 2 shards %.2fs; ratio %.2fx\n",
		baseline.Seconds()/n, ours.Seconds()/n, ours.Seconds()/baseline.Seconds())
}
