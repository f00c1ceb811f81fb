package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/reshard/reshard/tests/pgtest"
)

// BenchmarkCopyReplicas compares, in one run on the same data (PostgreSQL
// 17), the copy read (a) from the source primary, (b) from one
// resharding_only standby and (c) from two, each into 2 fresh shards, as
// `reshard data-sync --sync-only`. Tables are split into ranges
// (resharding_split_threshold = 32 MB) so two standbys share the units;
// every node runs resharding_parallel_copies = 4 workers. It prints each
// time and its ratio to (a), and how many rows each server read
// (pg_stat_user_tables). All servers share this machine's CPUs: the
// figures show what reading from standbys costs or saves here, not the
// spread over separate hosts. Run with `make bench-replicas`
// (BENCH_REPLICA_ROWS rows per table, default 1M: 3M rows).
func BenchmarkCopyReplicas(b *testing.B) {
	rows, _ := strconv.Atoi(os.Getenv("BENCH_REPLICA_ROWS"))
	if rows == 0 {
		rows = 1_000_000
	}
	ctx := context.Background()
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	cl := copyDataSetOn(b, ctx, rows, 17)
	defer cl.Stop()
	src, d0, d1 := cl.Instances[0], cl.Instances[1], cl.Instances[2]
	var err error
	standbys := make([]*pgtest.Instance, 2)
	for i := range standbys {
		standbys[i], err = cl.AddStandby(ctx, src, pgtest.StandbyOptions{})
		must(err)
		must(standbys[i].WaitReplay(ctx, src))
	}
	var size int64
	conn, err := src.Connect(ctx, "app")
	must(err)
	must(conn.QueryRow(ctx, `SELECT sum(pg_table_size(c.oid)) FROM pg_class c WHERE relname LIKE 'events_%' AND relkind = 'r'`).Scan(&size))
	conn.Close(ctx)
	fmt.Printf("data set: %d rows in %d tables, %.0f MB on disk; PostgreSQL 17, 2 shards\n", rows*len(copyTables), len(copyTables), float64(size)/(1<<20))

	dir := b.TempDir()
	bin := filepath.Join(dir, "reshard")
	run(b, nil, "go", "build", "-o", bin, "github.com/reshard/reshard/cmd/reshard")
	servers := append([]*pgtest.Instance{src}, standbys...)
	readRows := func() []int64 {
		out := make([]int64, len(servers))
		for i, s := range servers {
			c, err := s.Connect(ctx, "app")
			must(err)
			must(c.QueryRow(ctx, `SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0) FROM pg_stat_user_tables WHERE relname LIKE 'events_%'`).Scan(&out[i]))
			c.Close(ctx)
		}
		return out
	}
	copyFrom := func(name string, replicas []*pgtest.Instance) (time.Duration, []int64) {
		shards := []shardNode{{d0, name + "_0"}, {d1, name + "_1"}}
		for _, s := range shards {
			must(s.inst.CreateDatabase(ctx, s.db))
			for _, t := range copyTables {
				must(s.inst.Exec(ctx, s.db, fmt.Sprintf(copyTableDDL, t)))
			}
		}
		general := "resharding_parallel_copies = 4\nresharding_split_threshold = 33554432"
		cfgPath, usersPath := writeConfig(b, b.TempDir(), freeBenchPort(b), src, "app", shards, "customer_id", general)
		f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
		must(err)
		for _, r := range replicas {
			fmt.Fprintf(f, "[[databases]]\nname = \"src\"\nhost = \"127.0.0.1\"\nport = %d\ndatabase_name = \"app\"\nrole = \"replica\"\nresharding_only = true\n", r.Port)
		}
		f.Close()
		// Statistics reach the views when sessions end: wait a moment.
		time.Sleep(1500 * time.Millisecond)
		before := readRows()
		cmd := exec.Command(bin, "--config", cfgPath, "--users", usersPath, "--log-level", "warn",
			"data-sync", "--from-database", "src", "--to-database", "dst", "--publication", "all_tables", "--sync-only")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("reshard (%s): %v\n%s", name, err, out.String())
		}
		took := time.Since(start)
		// The rows each server read, before the check below reads the
		// source itself.
		time.Sleep(1500 * time.Millisecond)
		after := readRows()
		for i := range after {
			after[i] -= before[i]
		}
		checkCopied(b, ctx, "reshard ("+name+")", src, shards)
		must(src.Exec(ctx, "app", `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_type = 'logical' AND NOT active`))
		return took, after
	}
	primary, pr := copyFrom("primary", nil)
	one, or := copyFrom("one", standbys[:1])
	two, tr := copyFrom("two", standbys)
	// Each run read from where it was told to: a figure for "one standby"
	// that the primary served would compare nothing.
	all := int64(rows * len(copyTables))
	switch {
	case pr[0] < all || pr[1] != 0 || pr[2] != 0:
		b.Fatalf("(a) rows read: primary %d, standbys %d and %d; want the primary to read all %d", pr[0], pr[1], pr[2], all)
	case or[0] > all/100 || or[1] < all || or[2] != 0:
		b.Fatalf("(b) rows read: primary %d, standby 1 %d, standby 2 %d; want standby 1 to read all %d", or[0], or[1], or[2], all)
	case tr[0] > all/100 || tr[1] == 0 || tr[2] == 0 || tr[1]+tr[2] < all:
		b.Fatalf("(c) rows read: primary %d, standby 1 %d, standby 2 %d; want both standbys to share all %d", tr[0], tr[1], tr[2], all)
	}
	mb := float64(size) / (1 << 20)
	line := func(what string, d time.Duration, r []int64) {
		fmt.Printf("%-32s %6.2fs  %6.1f MB/s  %.2fx  rows read: primary %d, standby 1 %d, standby 2 %d\n",
			what, d.Seconds(), mb/d.Seconds(), d.Seconds()/primary.Seconds(), r[0], r[1], r[2])
	}
	line("(a) from the primary:", primary, pr)
	line("(b) from one standby:", one, or)
	line("(c) from two standbys:", two, tr)
	b.ReportMetric(one.Seconds()/primary.Seconds(), "one/primary")
	b.ReportMetric(two.Seconds()/primary.Seconds(), "two/primary")
}
