package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

// pgbenchEnv: the pgbench schema on the source, accounts and history
// sharded by aid, tellers and branches omni.
func pgbenchEnv(t *testing.T, name string) *copyEnv {
	t.Helper()
	e := newCopyEnv(t, name, 1, 2, "")
	// Shard the pgbench tables by aid instead of the generic rules.
	cfg, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(cfg), "[[sharded_tables]]\ndatabase = \"dst\"\nname = \"customers\"\ncolumn = \"id\"\n",
		"[[sharded_tables]]\ndatabase = \"dst\"\ncolumn = \"aid\"\n", 1)
	if err := os.WriteFile(e.cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	src := e.src[0]
	pgbench := filepath.Join(cluster.BinDir, "pgbench")
	cmd := exec.Command(pgbench, "-i", "-s", "2", "-q", "-h", src.inst.Host, "-p", fmt.Sprint(src.inst.Port), "-U", pgtest.User, src.db)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+pgtest.Password)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	src.exec(t, `ALTER TABLE pgbench_history REPLICA IDENTITY FULL; CREATE PUBLICATION all_tables FOR ALL TABLES`)
	if _, err := e.exec.Execute(context.Background(), schemaPre(e)); err != nil {
		t.Fatal(err)
	}
	return e
}

func pgbenchLoad(t *testing.T, n node, seconds int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(filepath.Join(cluster.BinDir, "pgbench"), "-n", "-c", "4", "-T", fmt.Sprint(seconds), "-h", n.inst.Host, "-p", fmt.Sprint(n.inst.Port), "-U", pgtest.User, n.db)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+pgtest.Password)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// verifyPgbench: sharded tables' union equals the source, omni tables equal
// on every shard, rows on the right shard.
func verifyPgbench(t *testing.T, e *copyEnv) {
	t.Helper()
	for _, table := range []string{"pgbench_accounts", "pgbench_history", "pgbench_tellers", "pgbench_branches"} {
		src := query(t, e.src[0].inst, e.src[0].db, "SELECT x::text FROM "+table+" x")
		var union []string
		for k, d := range e.dst {
			rows := query(t, d.inst, d.db, "SELECT x::text FROM "+table+" x")
			if table == "pgbench_tellers" || table == "pgbench_branches" {
				if strings.Join(rows, "\n") != strings.Join(src, "\n") {
					t.Fatalf("omni %s on shard %d differs from the source:\n%s", table, k, firstLines(diff(src, rows), 10))
				}
				continue
			}
			d.exec(t, `CREATE SCHEMA IF NOT EXISTS chk; CREATE TABLE IF NOT EXISTS chk.hp_int8 (k bigint) PARTITION BY HASH (k)`)
			if bad := d.one(t, fmt.Sprintf(`SELECT count(*) FROM %s WHERE NOT satisfies_hash_partition('chk.hp_int8'::regclass, %d, %d, aid::bigint)`, table, len(e.dst), k)); bad != "0" {
				t.Fatalf("%s: %s rows on the wrong shard %d", table, bad, k)
			}
			union = append(union, rows...)
		}
		if table == "pgbench_tellers" || table == "pgbench_branches" {
			continue
		}
		sortStrings(union)
		if strings.Join(union, "\n") != strings.Join(src, "\n") {
			t.Fatalf("%s: shards (%d rows) differ from the source (%d rows):\n%s", table, len(union), len(src), firstLines(diff(src, union), 10))
		}
	}
}

// waitLagZero waits until the shards hold every source transaction: the
// source's history row count and balances match.
func waitSame(t *testing.T, e *copyEnv, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	want := e.src[0].one(t, `SELECT count(*) || ' ' || coalesce(sum(delta), 0) FROM pgbench_history`)
	for {
		var n, sum int64
		for _, d := range e.dst {
			var c, s int64
			fmt.Sscan(strings.Replace(d.one(t, `SELECT count(*) || ' ' || coalesce(sum(delta), 0) FROM pgbench_history`), " ", "\n", 1), &c, &s)
			n, sum = n+c, sum+s
		}
		if fmt.Sprintf("%d %d", n, sum) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("shards did not catch up: %d %d vs source %s", n, sum, want)
			verifyPgbench(t, e)
			t.FailNow()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStreamSurvivesKillAndShardCrash: reshard streams under a pgbench write
// load; it is killed with SIGKILL and started again with the same slot; a
// destination shard crashes and recovers mid-stream. Afterwards the shards
// equal the source exactly: nothing lost, nothing applied twice (a
// duplicate would fail on the primary key or double the history sums).
func TestStreamSurvivesKillAndShardCrash(t *testing.T) {
	bin := buildReshard(t)
	e := pgbenchEnv(t, "stcrash")
	load := pgbenchLoad(t, e.src[0], 14)
	r := killAndCrash(t, bin, e, "stcrash_slot", load)
	waitSame(t, e, 90*time.Second)
	r.stillRunning(t)
	verifyPgbench(t, e)
	// The slot never got ahead of what the shards hold: confirmed_flush_lsn
	// is at most every origin's flushed position... checked above by the
	// exact equality after a shard crash with synchronous_commit = off.
	if !strings.Contains(r.logs.String(), "reconnecting") {
		t.Logf("note: the stream did not need to reconnect after the shard crash")
	}
}

// crashRun is reshard streaming after killAndCrash.
type crashRun struct {
	logs *testkit.Buffer // written by the reshard processes, read by the test
	done chan error      // the second reshard's exit
}

// stillRunning fails the test if the second reshard stopped.
func (r crashRun) stillRunning(t *testing.T) {
	t.Helper()
	select {
	case err := <-r.done:
		t.Fatalf("reshard stopped: %v\n%s", err, lastLines(r.logs.String(), 40))
	default:
	}
}

// killAndCrash runs reshard data-sync (copy, then stream) while load
// writes on the source; once it streams it is killed with SIGKILL and
// started again with --replicate-only; then destination shard 1 crashes
// (SIGKILL of its postmaster) and recovers. It returns once load has
// ended; the second reshard is stopped when the test ends.
func killAndCrash(t *testing.T, bin string, e *copyEnv, slot string, load *exec.Cmd) crashRun {
	t.Helper()
	args := func(extra ...string) []string {
		return append([]string{"--config", e.cfgPath, "--users", e.usersPath, "--log-level", "info", "data-sync",
			"--from-database", "src", "--to-database", "dst", "--publication", "all_tables", "--replication-slot", slot}, extra...)
	}
	r := crashRun{logs: &testkit.Buffer{}}
	start := func(extra ...string) (*exec.Cmd, chan error) {
		cmd := exec.Command(bin, args(extra...)...)
		cmd.Stdout, cmd.Stderr = r.logs, r.logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		return cmd, done
	}
	first, firstDone := start()
	// Kill it once it streams (the copy done), a moment into the stream.
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(r.logs.String(), "copy done, streaming changes") {
		select {
		case err := <-firstDone:
			t.Fatalf("reshard exited early: %v\n%s", err, r.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the copy did not finish within 2 minutes:\n%s", r.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A moment into the stream: the shards confirmed changes past the
	// copy's end on the slot.
	copied := slotConfirmed(t, e, slot)
	waitSlotPast(t, e, slot, copied, firstDone, r.logs)
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-firstDone
	t.Log("reshard killed with SIGKILL while streaming")
	second, secondDone := start("--replicate-only")
	r.done = secondDone
	t.Cleanup(func() {
		second.Process.Signal(syscall.SIGTERM)
		select {
		case <-secondDone:
		case <-time.After(10 * time.Second):
			second.Process.Kill()
		}
		if t.Failed() {
			t.Logf("reshard log:\n%s", lastLines(r.logs.String(), 40))
		}
	})
	// The second reshard streams (it confirmed changes past what the first
	// had) before the shard crashes under it.
	waitSlotPast(t, e, slot, slotConfirmed(t, e, slot), secondDone, r.logs)
	if e.src[0].one(t, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'`) == "0" {
		t.Logf("note: the write load had ended before the shard crash")
	}
	if err := cluster.Instances[2].Crash(context.Background(), cluster.BinDir); err != nil {
		t.Fatal(err)
	}
	t.Log("destination shard 1 crashed and recovered")
	if err := load.Wait(); err != nil {
		t.Fatalf("the write load: %v", err)
	}
	return r
}

// slotConfirmed is the source slot's confirmed_flush_lsn.
func slotConfirmed(t *testing.T, e *copyEnv, slot string) string {
	t.Helper()
	return e.src[0].one(t, fmt.Sprintf(`SELECT coalesce(max(confirmed_flush_lsn), '0/0')::text FROM pg_replication_slots WHERE slot_name = '%s'`, slot))
}

// waitSlotPast waits until the source slot is read and its
// confirmed_flush_lsn is past lsn: the stream applied changes on the shards
// and confirmed them. It fails the test if reshard exits (done) or after 2
// minutes.
func waitSlotPast(t *testing.T, e *copyEnv, slot, lsn string, done chan error, logs *testkit.Buffer) {
	t.Helper()
	q := fmt.Sprintf(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' AND active AND confirmed_flush_lsn > '%s'::pg_lsn`, slot, lsn)
	for deadline := time.Now().Add(2 * time.Minute); e.src[0].one(t, q) != "1"; {
		select {
		case err := <-done:
			t.Fatalf("reshard exited: %v\n%s", err, lastLines(logs.String(), 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %s confirmed nothing past %s in 2 minutes:\n%s", slot, lsn, lastLines(logs.String(), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func schemaPre(e *copyEnv) commands.SchemaSync {
	return commands.SchemaSync{Phase: commands.PhasePre, Route: e.route()}
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// movesLoad is a pgbench script whose every transaction moves an order to
// another customer (a sharding-key change under the default replica
// identity), updates another order and records the move.
const movesLoad = `\set id random(1, 3000)
\set c random(1, 100)
\set other random(1, 3000)
BEGIN;
UPDATE orders SET customer_id = :c, total = total + 1 WHERE id = :id;
UPDATE orders SET total = total + 1 WHERE id = :other;
INSERT INTO moves (order_id, customer_id) VALUES (:id, :c);
END;
`

// TestStreamMovesSurviveKillAndShardCrash: reshard streams a pgbench load
// that moves rows between shards (orders keyed by id, placed by
// customer_id, default replica identity); it is killed with SIGKILL and
// started again; a destination shard crashes and recovers mid-stream.
// Afterwards every row is on its shard exactly once and equal to the
// source's: nothing lost, nothing doubled.
func TestStreamMovesSurviveKillAndShardCrash(t *testing.T) {
	bin := buildReshard(t)
	e := newCopyEnv(t, "stmovecrash", 1, 2, "")
	src := e.src[0]
	src.exec(t, movesSchema+`
		CREATE TABLE moves (id bigserial PRIMARY KEY, order_id bigint NOT NULL, customer_id bigint NOT NULL);
		CREATE PUBLICATION all_tables FOR ALL TABLES;`)
	src.exec(t, movesData)
	if _, err := e.exec.Execute(context.Background(), schemaPre(e)); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "moves.sql")
	if err := os.WriteFile(script, []byte(movesLoad), 0o644); err != nil {
		t.Fatal(err)
	}
	load := exec.Command(filepath.Join(cluster.BinDir, "pgbench"), "-n", "-c", "4", "-T", "14", "-f", script,
		"-h", src.inst.Host, "-p", fmt.Sprint(src.inst.Port), "-U", pgtest.User, src.db)
	load.Env = append(os.Environ(), "PGPASSWORD="+pgtest.Password)
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	r := killAndCrash(t, bin, e, "stmovecrash_slot", load)
	want := src.one(t, `SELECT (SELECT count(*) FROM moves) || ' ' || (SELECT sum(total) FROM orders)`)
	deadline := time.Now().Add(90 * time.Second)
	for {
		var n, total int64
		for _, d := range e.dst {
			var c, s int64
			fmt.Sscan(d.one(t, `SELECT (SELECT count(*) FROM moves) || ' ' || coalesce((SELECT sum(total) FROM orders), 0)`), &c, &s)
			n, total = n+c, total+s
		}
		if fmt.Sprintf("%d %d", n, total) == want {
			break
		}
		r.stillRunning(t)
		if time.Now().After(deadline) {
			t.Fatalf("shards did not catch up: %d %d vs source %s", n, total, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	verifyPlaced(t, e, "orders", "moves", "events")
	t.Logf("%s moves streamed and applied exactly once", strings.Fields(want)[0])
}
