package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/sync/slotsnap"
	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

// slotSnapDB creates database db on inst with t(id, v): 3000
// rows, v = 0, vacuumed.
func slotSnapDB(t *testing.T, ctx context.Context, inst *pgtest.Instance, db string) {
	t.Helper()
	if err := inst.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)`,
		`INSERT INTO t SELECT g, 0 FROM generate_series(1, 3000) g`,
		`VACUUM t`,
	} {
		if err := inst.Exec(ctx, db, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func replConn(t *testing.T, ctx context.Context, inst *pgtest.Instance, db string) *pgconn.PgConn {
	t.Helper()
	rc, err := pgconn.Connect(ctx, inst.DSN(db)+"&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// snapshotRows imports the exported snapshot id and returns what it sees of
// t, read by a sequential scan (the heap, not the visibility map).
func snapshotRows(t *testing.T, ctx context.Context, inst *pgtest.Instance, db, id string) (rows, sum int64) {
	t.Helper()
	tx := importSnapshotTx(t, ctx, inst, db, id)
	if _, err := tx.Exec(ctx, "SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off; SET LOCAL enable_bitmapscan = off"); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, `SELECT count(*), coalesce(sum(v), 0) FROM t`).Scan(&rows, &sum); err != nil {
		t.Fatal(err)
	}
	return rows, sum
}

// importSnapshotTx opens a session on db in a transaction that imported the
// exported snapshot id; it ends with the test.
func importSnapshotTx(t *testing.T, ctx context.Context, inst *pgtest.Instance, db, id string) pgx.Tx {
	t.Helper()
	c, err := inst.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	tx, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+id+"'"); err != nil {
		t.Fatalf("import snapshot %s: %v", id, err)
	}
	return tx
}

// TestSlotSnapshotGuard: while the slot is being created, a session of ours
// holds an xmin no newer than the exported snapshot's, and it is gone once
// the slot exists. Slot creation is made to wait (a writing transaction is
// open) so the guard can be seen.
func TestSlotSnapshotGuard(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const db = "slotsnap_guard"
	inst := cluster.Instances[0]
	slotSnapDB(t, ctx, inst, db)
	writer, err := inst.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(ctx)
	if _, err := writer.Exec(ctx, "BEGIN; UPDATE t SET v = 1 WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	rc := replConn(t, ctx, inst, db)
	defer rc.Close(context.Background())
	type created struct {
		res pglogrepl.CreateReplicationSlotResult
		err error
	}
	done := make(chan created, 1)
	go func() {
		res, err := slotsnap.Create(ctx, rc, inst.DSN(db)+"&replication=database", "slotsnap_guard", true)
		done <- created{res, err}
	}()
	obs, err := inst.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close(ctx)
	var guardXmin int64 = -1
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && guardXmin < 0; time.Sleep(50 * time.Millisecond) {
		err := obs.QueryRow(ctx, `SELECT backend_xmin::text::bigint FROM pg_stat_activity
			WHERE application_name = $1 AND backend_xmin IS NOT NULL`, slotsnap.GuardApplicationName).Scan(&guardXmin)
		if err != nil && err != pgx.ErrNoRows {
			t.Fatal(err)
		}
		if err == pgx.ErrNoRows {
			guardXmin = -1
		}
	}
	if guardXmin < 0 {
		t.Fatalf("no session %q holding an xmin while the slot was created", slotsnap.GuardApplicationName)
	}
	select {
	case c := <-done:
		t.Fatalf("the slot was created while a writing transaction was open (err %v): the test did not hold slot creation", c.err)
	default:
	}
	if _, err := writer.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	c := <-done
	if c.err != nil {
		t.Fatal(c.err)
	}
	// The exported snapshot's xmin, from a session that imported it.
	tx := importSnapshotTx(t, ctx, inst, db, c.res.SnapshotName)
	var snapXmin int64
	if err := tx.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint % 4294967296`).Scan(&snapXmin); err != nil {
		t.Fatal(err)
	}
	if guardXmin > snapXmin {
		t.Fatalf("guard xmin %d is newer than the exported snapshot's xmin %d: it protects nothing", guardXmin, snapXmin)
	}
	var left int
	if err := obs.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, slotsnap.GuardApplicationName).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d guard sessions still open after the slot was created", left)
	}
	t.Logf("guard xmin %d, snapshot xmin %d", guardXmin, snapXmin)
}

// TestSlotSnapshotWindow holds the walsender inside PostgreSQL's window
// (ReplicationSlotRelease: the slot's data xmin cleared, the walsender still
// flagged as decoding) with gdb, updates half the rows and lets an ordinary
// reader scan the table, then imports the exported snapshot. Unguarded (a
// plain CREATE_REPLICATION_SLOT) the snapshot loses the updated rows: their
// old versions were pruned, their new ones are after it. Through
// slotsnap.Create it sees every row as of the snapshot. On PostgreSQL 15
// (the shared instances) and 18 (one of its own).
//
// It needs gdb and the right to ptrace the server's processes; without
// them it is skipped (make test installs gdb).
func TestSlotSnapshotWindow(t *testing.T) {
	gdb, err := exec.LookPath("gdb")
	if err != nil {
		t.Skip("gdb is not installed: PostgreSQL's window cannot be held open")
	}
	for _, v := range []int{15, 18} {
		t.Run(fmt.Sprintf("pg%d", v), func(t *testing.T) {
			inst := cluster.Instances[0]
			if v != pgtest.DefaultVersion {
				inst = startVersion(t, v, 1, nil).Instances[0]
			}
			for _, guarded := range []bool{false, true} {
				slotSnapshotWindow(t, gdb, inst, guarded)
			}
		})
	}
}

// slotSnapshotWindow is one run of TestSlotSnapshotWindow on inst.
func slotSnapshotWindow(t *testing.T, gdb string, inst *pgtest.Instance, guarded bool) {
	name := map[bool]string{false: "unguarded", true: "guarded"}[guarded]
	t.Run(name, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		db := "slotsnap_window_" + name
		slotSnapDB(t, ctx, inst, db)
		rc := replConn(t, ctx, inst, db)
		defer rc.Close(context.Background())
		res, err := rc.Exec(ctx, "SELECT pg_backend_pid()").ReadAll()
		if err != nil || len(res) != 1 || len(res[0].Rows) != 1 {
			t.Fatalf("walsender pid: %v", err)
		}
		pid := string(res[0].Rows[0][0])

		dir := t.TempDir()
		attached, inWindow, release := filepath.Join(dir, "attached"), filepath.Join(dir, "in-window"), filepath.Join(dir, "release")
		script := strings.Join([]string{
			"set pagination off",
			// Release's call passes already_locked = false; the call
			// while the slot is being set up passes true.
			"break ReplicationSlotsComputeRequiredXmin if ($rdi & 0xff) == 0",
			"shell touch " + attached,
			"continue",
			"finish",
			"shell touch " + inWindow,
			"shell while [ ! -e " + release + " ]; do sleep 0.05; done",
			"detach",
			"quit",
		}, "\n")
		scriptPath := filepath.Join(dir, "gdb.cmds")
		if err := os.WriteFile(scriptPath, []byte(script), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, gdb, "-q", "-batch", "-p", pid, "-x", scriptPath)
		// Read while gdb writes it: testkit.Buffer locks.
		var out testkit.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		gdbDone := make(chan error, 1)
		go func() { gdbDone <- cmd.Wait() }()
		defer func() {
			os.WriteFile(release, nil, 0o600)
			select {
			case <-gdbDone:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-gdbDone
			}
		}()
		waitFile := func(path string) bool {
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if _, err := os.Stat(path); err == nil {
					return true
				}
				select {
				case <-gdbDone:
					gdbDone <- nil
					return false
				default:
				}
			}
			return false
		}
		if !waitFile(attached) || strings.Contains(out.String(), "ptrace:") {
			t.Skipf("gdb could not attach to the walsender (no ptrace right here): %s", out.String())
		}

		type created struct {
			res pglogrepl.CreateReplicationSlotResult
			err error
		}
		done := make(chan created, 1)
		go func() {
			var c created
			if guarded {
				c.res, c.err = slotsnap.Create(ctx, rc, inst.DSN(db)+"&replication=database", "slotsnap_window", true)
			} else {
				c.res, c.err = pglogrepl.CreateReplicationSlot(ctx, rc, "slotsnap_window", "pgoutput",
					pglogrepl.CreateReplicationSlotOptions{Temporary: true, SnapshotAction: "EXPORT_SNAPSHOT"})
			}
			done <- c
		}()
		if !waitFile(inWindow) {
			t.Fatalf("the walsender never reached ReplicationSlotRelease's window: %s", out.String())
		}
		// Inside the window: an update committed after the snapshot,
		// then an ordinary reader (its scan prunes full pages).
		if err := inst.Exec(ctx, db, `UPDATE t SET v = 1 WHERE id <= 1500`); err != nil {
			t.Fatal(err)
		}
		if err := inst.Exec(ctx, db, `SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off; SELECT count(*) FROM t`); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(release, nil, 0o600)
		c := <-done
		if c.err != nil {
			t.Fatal(c.err)
		}
		rows, sum := snapshotRows(t, ctx, inst, db, c.res.SnapshotName)
		t.Logf("%s: the exported snapshot sees %d rows, sum(v) = %d", name, rows, sum)
		if guarded {
			if rows != 3000 || sum != 0 {
				t.Fatalf("guarded slot's snapshot sees %d rows with sum(v) %d, want 3000 rows as of the snapshot (sum 0)", rows, sum)
			}
		} else if rows == 3000 {
			t.Fatalf("the unguarded snapshot lost nothing: the scenario no longer opens PostgreSQL's window, so it cannot show that the guard closes it")
		}
	})
}
