package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// adminViews are what the readers of BenchmarkAdminLoad ask for, in turn.
var adminViews = []string{"SHOW TABLE_COPIES", "SHOW TASKS", "SHOW REPLICATION_SLOTS", "SHOW SCHEMA_SYNC",
	"SHOW VERIFY", "SHOW DATABASES", "SHOW CONFIG", "SHOW VERSION"}

// BenchmarkAdminLoad measures what 50 admin clients reading the SHOW views
// in a loop cost a copy: the same COPY_DATA (a reshard serve process, 3
// tables of BENCH_ADMIN_ROWS rows each, default 300,000, into 2 shards) runs
// without readers, with BENCH_ADMIN_READERS readers (default 50) each
// reading one view every BENCH_ADMIN_INTERVAL (default 100ms, a dashboard's
// refresh), and with the readers in a tight loop (no pause: a stress figure,
// the readers then compete with the copy and PostgreSQL for the CPU), in
// turn, BENCH_ADMIN_ROUNDS times each (default 2), in one run. It prints
// each copy's time, the mean slowdowns (target: under 10% for the paced
// readers), the readers' query counts and their errors (must be 0). Run
// with `make bench-admin`.
func BenchmarkAdminLoad(b *testing.B) {
	rows := envInt("BENCH_ADMIN_ROWS", 300_000)
	readers := envInt("BENCH_ADMIN_READERS", 50)
	rounds := envInt("BENCH_ADMIN_ROUNDS", 2)
	interval := 100 * time.Millisecond
	if v, err := time.ParseDuration(os.Getenv("BENCH_ADMIN_INTERVAL")); err == nil {
		interval = v
	}
	ctx := context.Background()
	cl := copyDataSet(b, ctx, rows)
	defer cl.Stop()
	src, d0, d1 := cl.Instances[0], cl.Instances[1], cl.Instances[2]
	dir := b.TempDir()
	bin := filepath.Join(dir, "reshard")
	run(b, nil, "go", "build", "-o", bin, "github.com/reshard/reshard/cmd/reshard")
	fmt.Printf("data set: %d rows in %d tables; %d readers over %d views\n", rows*len(copyTables), len(copyTables), readers, len(adminViews))

	modes := []struct {
		name  string
		pause time.Duration
	}{{"no readers", -1}, {fmt.Sprintf("%d readers every %s", readers, interval), interval}, {fmt.Sprintf("%d readers, tight loop", readers), 0}}
	took := make([][]time.Duration, len(modes))
	var queries, failures int64
	for r := 0; r < len(modes)*rounds; r++ {
		mode := r % len(modes)
		withReaders := modes[mode].pause >= 0
		shards := []shardNode{{d0, fmt.Sprintf("r%d_s0", r)}, {d1, fmt.Sprintf("r%d_s1", r)}}
		for _, s := range shards {
			fatalIf(b, s.inst.CreateDatabase(ctx, s.db))
			for _, t := range copyTables {
				fatalIf(b, s.inst.Exec(ctx, s.db, fmt.Sprintf(copyTableDDL, t)))
			}
		}
		port := freeBenchPort(b)
		cfgPath, usersPath := writeConfig(b, filepath.Join(dir), port, src, "app", shards, "customer_id", "resharding_parallel_copies = 4")
		srv := exec.Command(bin, "--config", cfgPath, "--users", usersPath, "--log-level", "warn", "serve")
		srv.Stdout, srv.Stderr = os.Stderr, os.Stderr
		if p := os.Getenv("BENCH_CPUPROFILE"); p != "" && withReaders {
			srv.Env = append(os.Environ(), "RESHARD_CPUPROFILE="+p)
		}
		fatalIf(b, srv.Start())
		dsn := fmt.Sprintf("postgres://admin:x@127.0.0.1:%d/admin?sslmode=disable", port)
		admin := waitAdmin(b, ctx, dsn)

		stop := make(chan struct{})
		var wg sync.WaitGroup
		var n, errs atomic.Int64
		if withReaders {
			ready := make(chan struct{}, readers)
			for i := 0; i < readers; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					conn, err := pgx.Connect(ctx, dsn)
					ready <- struct{}{}
					if err != nil {
						fmt.Printf("reader %d: %v\n", i, err)
						errs.Add(1)
						return
					}
					defer conn.Close(ctx)
					pause := time.NewTicker(max(modes[mode].pause, time.Microsecond))
					defer pause.Stop()
					for k := i; ; k++ {
						select {
						case <-stop:
							return
						default:
						}
						if modes[mode].pause > 0 {
							select {
							case <-stop:
								return
							case <-pause.C:
							}
						}
						rows, err := conn.Query(ctx, adminViews[k%len(adminViews)], pgx.QueryExecModeSimpleProtocol)
						if err == nil {
							for rows.Next() {
							}
							rows.Close()
							err = rows.Err()
						}
						n.Add(1)
						if err != nil {
							if errs.Add(1) <= 5 {
								fmt.Printf("reader %d: %s: %v\n", i, adminViews[k%len(adminViews)], err)
							}
						}
					}
				}(i)
			}
			for i := 0; i < readers; i++ {
				<-ready
			}
		}

		start := time.Now()
		var id string
		fatalIf(b, admin.QueryRow(ctx, fmt.Sprintf("COPY_DATA src dst all_tables bench_slot_%d", r)).Scan(&id))
		state, msg := taskState(b, ctx, admin, id)
		for state == "copying" {
			time.Sleep(20 * time.Millisecond)
			state, msg = taskState(b, ctx, admin, id)
		}
		elapsed := time.Since(start)
		close(stop)
		wg.Wait()
		if state != "streaming" {
			b.Fatalf("COPY_DATA ended %s: %s", state, msg)
		}
		if _, err := admin.Exec(ctx, "STOP_TASK "+id); err != nil {
			b.Fatal(err)
		}
		admin.Close(ctx)
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
		_ = src.Exec(ctx, "app", `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active`)
		checkCopied(b, ctx, fmt.Sprintf("round %d (%s)", r, modes[mode].name), src, shards)
		queries += n.Load()
		failures += errs.Load()
		took[mode] = append(took[mode], elapsed)
		fmt.Printf("round %d: copy, %-28s %6.2fs  (%d SHOW queries, %.0f/s, %d errors)\n", r, modes[mode].name+":", elapsed.Seconds(), n.Load(), float64(n.Load())/elapsed.Seconds(), errs.Load())
	}
	base := mean(took[0])
	for i, m := range modes {
		slowdown := (mean(took[i]).Seconds()/base.Seconds() - 1) * 100
		fmt.Printf("mean copy, %-28s %6.2fs  %+6.1f%%\n", m.name+":", mean(took[i]).Seconds(), slowdown)
		if i == 1 {
			b.ReportMetric(slowdown, "paced-slowdown-%")
		}
		if i == 2 {
			b.ReportMetric(slowdown, "tight-slowdown-%")
		}
	}
	fmt.Printf("target: paced readers slow the copy by < 10%%\nreaders: %d SHOW queries, %d errors (must be 0)\n", queries, failures)
	b.ReportMetric(float64(failures), "errors")
	if failures > 0 {
		b.Errorf("%d admin queries failed under load", failures)
	}
}

func mean(ds []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func freeBenchPort(b *testing.B) int {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitAdmin connects to a starting admin server, retrying for a while.
func waitAdmin(b *testing.B, ctx context.Context, dsn string) *pgx.Conn {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			return conn
		}
		if time.Now().After(deadline) {
			b.Fatalf("admin server did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// taskState reads a task's state and message from SHOW TASKS.
func taskState(b *testing.B, ctx context.Context, admin *pgx.Conn, id string) (string, string) {
	b.Helper()
	rows, err := admin.Query(ctx, "SHOW TASKS", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			b.Fatal(err)
		}
		if vals[0] == id {
			return vals[5].(string), vals[8].(string)
		}
	}
	b.Fatalf("task %s not in SHOW TASKS", id)
	return "", ""
}

// fatalIf ends the benchmark on an error.
func fatalIf(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}
