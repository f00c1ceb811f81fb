package pgtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestVersions starts one instance of every version and checks that the
// server really is that version, configured as the harness promises.
func TestVersions(t *testing.T) {
	for _, v := range Versions {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			c, err := Start(ctx, 1, Options{Version: v})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Stop()
			inst := c.Instances[0]
			if c.Version != v || inst.Version != v {
				t.Fatalf("cluster version %d, instance version %d, want %d", c.Version, inst.Version, v)
			}
			conn, err := inst.Connect(ctx, "postgres")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var num int
			var wal string
			if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, current_setting('wal_level')`).Scan(&num, &wal); err != nil {
				t.Fatal(err)
			}
			if num/10000 != v || wal != "logical" {
				t.Fatalf("server_version_num %d, wal_level %s; want %d, logical", num, wal, v)
			}
			// pgoutput is there: a logical slot can be created and dropped.
			if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot('pgtest_probe', 'pgoutput')`); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot('pgtest_probe')`); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestUnknownVersion(t *testing.T) {
	_, err := Start(context.Background(), 1, Options{Version: 14})
	if err == nil || !strings.Contains(err.Error(), "PostgreSQL 14 is not one of the versions") {
		t.Fatalf("Start of version 14: %v", err)
	}
}

// TestStandby makes a hot standby of a running primary on 15 and 17 while
// the primary takes writes, and checks that it replays them, is read-only,
// reports recovery, and (17) can hold a logical slot with an exported
// snapshot that sees exactly the primary's rows at its LSN.
func TestStandby(t *testing.T) {
	for _, v := range []int{15, 17} {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			c, err := Start(ctx, 1, Options{Version: v})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Stop()
			primary := c.Instances[0]
			if err := primary.CreateDatabase(ctx, "app"); err != nil {
				t.Fatal(err)
			}
			if err := primary.Exec(ctx, "app", `CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000)`); err != nil {
				t.Fatal(err)
			}
			// Writes go on while the base backup is taken.
			stop := make(chan struct{})
			writer := make(chan error, 1)
			go func() {
				conn, err := primary.Connect(ctx, "app")
				if err != nil {
					writer <- err
					return
				}
				defer conn.Close(context.Background())
				for i := 1001; ; i++ {
					select {
					case <-stop:
						writer <- nil
						return
					default:
					}
					if _, err := conn.Exec(ctx, `INSERT INTO t VALUES ($1)`, i); err != nil {
						writer <- err
						return
					}
				}
			}()
			standby, err := c.AddStandby(ctx, primary, StandbyOptions{})
			close(stop)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-writer; err != nil {
				t.Fatal(err)
			}
			if len(c.Instances) != 2 || c.Instances[1] != standby || standby.Port == primary.Port || standby.Version != v {
				t.Fatalf("standby not registered: %d instances, port %d (primary %d), version %d", len(c.Instances), standby.Port, primary.Port, standby.Version)
			}
			if r, err := standby.InRecovery(ctx); err != nil || !r {
				t.Fatalf("standby in recovery: %v %v", r, err)
			}
			if r, err := primary.InRecovery(ctx); err != nil || r {
				t.Fatalf("primary in recovery: %v %v", r, err)
			}
			if err := primary.Exec(ctx, "app", `INSERT INTO t VALUES (-1)`); err != nil {
				t.Fatal(err)
			}
			if err := standby.WaitReplay(ctx, primary); err != nil {
				t.Fatal(err)
			}
			count := func(inst *Instance) string {
				conn, err := inst.Connect(ctx, "app")
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close(ctx)
				var n, sum int64
				if err := conn.QueryRow(ctx, `SELECT count(*), sum(id) FROM t`).Scan(&n, &sum); err != nil {
					t.Fatal(err)
				}
				return fmt.Sprintf("%d/%d", n, sum)
			}
			if p, s := count(primary), count(standby); p != s {
				t.Fatalf("primary has %s rows/sum, standby %s", p, s)
			}
			if err := standby.Exec(ctx, "app", `INSERT INTO t VALUES (-2)`); err == nil || !strings.Contains(err.Error(), "read-only") {
				t.Fatalf("write on the standby: %v", err)
			}
			var feedback string
			sc, err := standby.Connect(ctx, "app")
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close(ctx)
			if err := sc.QueryRow(ctx, `SELECT current_setting('hot_standby_feedback')`).Scan(&feedback); err != nil || feedback != "on" {
				t.Fatalf("hot_standby_feedback %q %v", feedback, err)
			}
			if v < 16 {
				return
			}
			// A logical slot on the standby (16+): its exported snapshot
			// holds every row committed on the primary before its LSN.
			if err := primary.Exec(ctx, "app", `INSERT INTO t VALUES (-3)`); err != nil {
				t.Fatal(err)
			}
			repl, err := pgconn.Connect(ctx, strings.Replace(standby.DSN("app"), "sslmode=disable", "sslmode=disable&replication=database", 1))
			if err != nil {
				t.Fatal(err)
			}
			defer repl.Close(context.Background())
			// Slot creation on a standby waits for a running-xacts record
			// from the primary; ask for one instead of waiting for the
			// background writer's.
			done := make(chan struct{})
			go func() {
				for {
					select {
					case <-done:
						return
					case <-time.After(200 * time.Millisecond):
						_ = primary.Exec(context.Background(), "postgres", `SELECT pg_log_standby_snapshot()`)
					}
				}
			}()
			res, err := pglogrepl.CreateReplicationSlot(ctx, repl, "pgtest_standby_slot", "pgoutput",
				pglogrepl.CreateReplicationSlotOptions{Temporary: true, SnapshotAction: "EXPORT_SNAPSHOT"})
			close(done)
			if err != nil {
				t.Fatalf("logical slot on a %d standby: %v", v, err)
			}
			if _, err := sc.Exec(ctx, `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`); err != nil {
				t.Fatal(err)
			}
			if _, err := sc.Exec(ctx, fmt.Sprintf(`SET TRANSACTION SNAPSHOT '%s'`, res.SnapshotName)); err != nil {
				t.Fatal(err)
			}
			var has bool
			if err := sc.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM t WHERE id = -3)`).Scan(&has); err != nil || !has {
				t.Fatalf("the standby slot's snapshot lacks a row committed before it: %v %v", has, err)
			}
			_, _ = sc.Exec(ctx, `COMMIT`)
		})
	}
}

// TestCanTraverse: a directory under a parent only root can search is not
// reachable by another user; under /tmp it is.
func TestCanTraverse(t *testing.T) {
	base, err := os.MkdirTemp("", "pgtest-traverse-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	closed := filepath.Join(base, "closed")
	open := filepath.Join(base, "open")
	for _, d := range []string{filepath.Join(closed, "bin"), filepath.Join(open, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	other := os.Getuid() + 12345
	if canTraverse(filepath.Join(closed, "bin"), other, other) {
		t.Fatal("a directory under a 0700 parent of another user is reported reachable")
	}
	if !canTraverse(filepath.Join(open, "bin"), other, other) {
		t.Fatal("a directory under 0755 parents is reported unreachable")
	}
	if !canTraverse(filepath.Join(closed, "bin"), os.Getuid(), os.Getgid()) {
		t.Fatal("the owner cannot reach its own directory")
	}
}

// TestReachable: binaries under a directory the postgres user cannot search
// are copied where it can (when the tests run as root), and the copy is
// reused; without root they are used in place.
func TestReachable(t *testing.T) {
	base, err := os.MkdirTemp("", "pgtest-reach-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	bin := filepath.Join(base, "native", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "postgres"), []byte("#!/bin/sh\necho 'postgres (PostgreSQL) 99.1'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o700); err != nil {
		t.Fatal(err)
	}
	got, err := reachable(bin, 99)
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		if got != bin {
			t.Fatalf("not root: %s moved to %s", bin, got)
		}
		return
	}
	defer os.RemoveAll(filepath.Dir(got))
	if got == bin || !strings.HasPrefix(got, os.TempDir()) {
		t.Fatalf("root, closed directory: binaries left at %s (got %s)", bin, got)
	}
	u, gid := postgresIDs(t)
	if !canTraverse(got, u, gid) {
		t.Fatalf("the copy %s is not reachable by the postgres user", got)
	}
	if v, err := ServerVersion(got); err != nil || v != 99 {
		t.Fatalf("copied postgres: %d %v", v, err)
	}
	again, err := reachable(bin, 99)
	if err != nil || again != got {
		t.Fatalf("second call: %s %v, want the same copy %s", again, err, got)
	}
}

func postgresIDs(t *testing.T) (int, int) {
	cred, err := runAs()
	if err != nil || cred == nil {
		t.Fatalf("postgres user: %v", err)
	}
	return int(cred.Uid), int(cred.Gid)
}
