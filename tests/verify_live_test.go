package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

// forwardScript is the application's writes on source shard :shard of
// :nsrc while the shards are fed by the stream: updates, sharding-key
// moves of orders (default replica identity), deletes, inserts with ids of
// the shard's own (≡ shard mod nsrc), customer updates, partitioned-table
// inserts and, on source shard 0, omni-table updates. Customers above 1,800
// are never written (the tests delete them behind reshard's back).
const forwardScript = `
\set c random(1, 900) * :nsrc + :shard
\set o random(1, 6000)
UPDATE orders SET total = total + 1 WHERE id = :o;
UPDATE orders SET customer_id = :c WHERE id = :o;
BEGIN;
INSERT INTO orders (id, customer_id, total, note) VALUES ((nextval('orders_id_seq') + 10000000) * :nsrc + :shard, :c, 1, 'pgbench');
UPDATE customers SET region = 'p' || :client_id WHERE id = :c;
END;
DELETE FROM orders WHERE id = :o;
INSERT INTO events VALUES ((nextval('orders_id_seq') + 20000000) * :nsrc + :shard, :c, DATE '2026-03-01', NULL);
UPDATE notes SET customer_id = :c WHERE uid = md5(:o::text)::uuid;
\if :shard = 0
UPDATE countries SET name = 'pgbench ' || :client_id WHERE code = 'DE';
\endif
`

// reverseScript is the application's writes on a new shard after the
// cutover, each on rows that shard holds (the application's router sends
// them there): updates, moves of orders between the shard's customers,
// inserts with the shard's own ids, deletes, customer updates. Customers
// above 1,600 are never written.
const reverseScript = `
\set c random(1, 1500)
\set o random(1, 6000)
UPDATE orders SET total = total + 1 WHERE id = :o;
UPDATE orders SET customer_id = coalesce((SELECT id FROM customers WHERE id >= :c ORDER BY id LIMIT 1), customer_id) WHERE id = :o;
INSERT INTO orders (id, customer_id, total, note) SELECT nextval('orders_id_seq'), id, 1, 'on a shard' FROM customers WHERE id >= :c ORDER BY id LIMIT 1;
DELETE FROM orders WHERE id = :o;
UPDATE customers SET region = 'k' || :client_id WHERE id = :c;
`

// benchLoad is a pgbench write load that runs until stopped.
type benchLoad struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan error
}

// startBenchLoad runs script on n with 2 clients and the variables given,
// for an hour (until stop).
func startBenchLoad(t *testing.T, n node, script string, vars ...string) *benchLoad {
	t.Helper()
	path := filepath.Join(t.TempDir(), "load.sql")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-n", "-c", "2", "-T", "3600", "--max-tries", "20", "-f", path, "-h", n.inst.Host, "-p", fmt.Sprint(n.inst.Port), "-U", pgtest.User}
	for _, v := range vars {
		args = append(args, "-D", v)
	}
	cmd := exec.Command(filepath.Join(cluster.BinDir, "pgbench"), append(args, n.db)...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+pgtest.Password)
	l := &benchLoad{cmd: cmd, out: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = l.out, l.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { l.done <- cmd.Wait() }()
	t.Cleanup(func() { l.stop(t) })
	return l
}

// running fails the test if the load ended (it must never pause).
func (l *benchLoad) running(t *testing.T) {
	t.Helper()
	select {
	case err := <-l.done:
		l.done <- err
		t.Fatalf("the pgbench load ended: %v\n%s", err, l.out.String())
	default:
	}
}

func (l *benchLoad) stop(t *testing.T) {
	if l.cmd.ProcessState != nil {
		return
	}
	_ = l.cmd.Process.Signal(os.Interrupt)
	select {
	case <-l.done:
	case <-time.After(10 * time.Second):
		_ = l.cmd.Process.Kill()
		<-l.done
	}
}

// liveAdmin is the admin connection of a live VERIFY test.
type liveAdmin struct {
	t    *testing.T
	ctx  context.Context
	conn *pgx.Conn
}

func (a liveAdmin) start(sql string) string {
	a.t.Helper()
	var id string
	if err := a.conn.QueryRow(a.ctx, sql).Scan(&id); err != nil {
		a.t.Fatalf("%s: %v", sql, err)
	}
	return id
}

// task is a task's state and message in SHOW TASKS.
func (a liveAdmin) task(id string) (string, string) {
	a.t.Helper()
	rows, err := a.conn.Query(a.ctx, "SHOW TASKS")
	if err != nil {
		a.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			a.t.Fatal(err)
		}
		if vals[0] == id {
			return fmt.Sprint(vals[5]), fmt.Sprint(vals[8])
		}
	}
	a.t.Fatalf("task %s not in SHOW TASKS", id)
	return "", ""
}

func (a liveAdmin) waitState(id, want string) {
	a.t.Helper()
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		state, msg := a.task(id)
		if state == want {
			return
		}
		if state == "failed" || state == "stopped" || state == "done" || time.Now().After(deadline) {
			a.t.Fatalf("task %s is %s (%s), want %s", id, state, msg, want)
		}
	}
}

// verifyRow is a table's SHOW VERIFY row: status, source_rows,
// destination_rows, missing, extra, different, misplaced, ..., shard_rows,
// consistent_lsn, hold_ms (vals[3:]).
type verifyRow []string

// verify runs VERIFY through the admin server and returns its task's end
// state and message and its SHOW VERIFY rows by table.
func (a liveAdmin) verify() (string, string, map[string]verifyRow) {
	a.t.Helper()
	id := a.start("VERIFY src dst all_tables")
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		state, msg := a.task(id)
		if state == "verifying" {
			if time.Now().After(deadline) {
				a.t.Fatalf("VERIFY %s still running", id)
			}
			continue
		}
		rows, err := a.conn.Query(a.ctx, "SHOW VERIFY")
		if err != nil {
			a.t.Fatal(err)
		}
		got := map[string]verifyRow{}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				a.t.Fatal(err)
			}
			if vals[0] != id {
				continue
			}
			var f verifyRow
			for _, v := range vals[3:] {
				f = append(f, fmt.Sprint(v))
			}
			got[vals[2].(string)] = f
		}
		rows.Close()
		return state, msg, got
	}
}

var liveTables = []string{"customers", "orders", "countries", "events_2025", "events_2026", "notes"}

// allMatch fails unless VERIFY ended done with every table a match (and
// rows compared); it returns the consistent_lsn and hold_ms
// reported.
func allMatch(t *testing.T, state, msg string, res map[string]verifyRow, points int) (string, string) {
	t.Helper()
	if state != "done" {
		t.Fatalf("VERIFY under the load ended %s: %s\n%v", state, msg, res)
	}
	for _, table := range liveTables {
		r, ok := res[table]
		if !ok || r[0] != "match" || r[1] == "0" {
			t.Fatalf("VERIFY %s under the load: %v", table, r)
		}
	}
	r := res["orders"]
	lsn, hold := r[12], r[13]
	if strings.Count(lsn, ",") != points-1 || lsn == "" {
		t.Fatalf("consistent_lsn %q: want one LSN per shard the streams read (%d)", lsn, points)
	}
	return lsn, hold
}

// lastPoint is the log's last line about a consistent point taken.
func lastPoint(logs *testkit.Buffer) string {
	lines := strings.Split(logs.String(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if j := strings.Index(lines[i], "consistent point taken"); j >= 0 {
			return lines[i][j:]
		}
	}
	return "(no consistent point in the log)"
}

// oneMissing fails unless VERIFY failed with table a mismatch of exactly
// one missing row whose key the log names, every other table matching.
func oneMissing(t *testing.T, state, msg string, res map[string]verifyRow, table, key string, logs *testkit.Buffer) {
	t.Helper()
	if state != "failed" || !strings.Contains(msg, "1 of") {
		t.Fatalf("VERIFY after a deletion ended %s: %s", state, msg)
	}
	for _, tb := range liveTables {
		r := res[tb]
		if tb == table {
			if r[0] != "mismatch" || r[3] != "1" || r[4] != "0" || r[5] != "0" || r[6] != "0" {
				t.Fatalf("VERIFY %s after deleting %s: %v (want mismatch, missing 1)", table, key, r)
			}
			continue
		}
		if r[0] != "match" {
			t.Fatalf("VERIFY %s (no row deleted there): %v", tb, r)
		}
	}
	want := fmt.Sprintf(`table=public.%s kind=missing count=1 keys=["%s"]`, table, key)
	if !strings.Contains(logs.String(), want) {
		t.Fatalf("the log does not name the missing row (%s):\n%s", want, lastLines(logs.String(), 30))
	}
}

// deleteBehind deletes a customer on n as a stray superuser script could:
// without triggers or foreign-key checks, also where the application may
// not write.
func deleteBehind(t *testing.T, n node, id int) {
	t.Helper()
	n.exec(t, fmt.Sprintf(`SET session_replication_role = replica; BEGIN READ WRITE; DELETE FROM customers WHERE id = %d; COMMIT`, id))
}

// TestVerifyUnderLoad is issue 15's acceptance through the admin server:
// RESHARD, then a pgbench write load that never pauses (updates, inserts,
// deletes, omni updates, sharding-key moves); VERIFY reports match for
// every table while the load runs (the streams held at its consistent
// point); a customer deleted behind reshard's back on one shard is that
// table's mismatch with missing = 1, its key in the log, while the load
// still runs and every other table matches. With one and two source
// shards; with one, also after CUTOVER on the reverse_streaming task,
// under a load on the new shards, with a customer deleted in the old
// database the reverse streams feed.
func TestVerifyUnderLoad(t *testing.T) {
	for _, nSrc := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d_source_shards", nSrc), func(t *testing.T) { testVerifyUnderLoad(t, nSrc) })
	}
}

func testVerifyUnderLoad(t *testing.T, nSrc int) {
	e := newCopyEnv(t, fmt.Sprintf("vload%d", nSrc), nSrc, 2, "")
	e.logs = &testkit.Buffer{}
	e.load(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("reshard's log:\n%s", lastLines(e.logs.String(), 120))
		}
	})
	for i, s := range e.src {
		s.exec(t, copySchema)
		loadData(t, s, i, nSrc, 2000)
	}
	addr, _ := serveAdmin(t, e, hclog.NewNullLogger())
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	a := liveAdmin{t: t, ctx: ctx, conn: connect(t, ctx, fmt.Sprintf("postgres://admin:%s@%s/admin?sslmode=disable", adminPassword, addr))}

	id := a.start("RESHARD src dst all_tables")
	a.waitState(id, "streaming")
	var loads []*benchLoad
	for i, s := range e.src {
		loads = append(loads, startBenchLoad(t, s, forwardScript, fmt.Sprintf("shard=%d", i), fmt.Sprintf("nsrc=%d", nSrc)))
	}
	time.Sleep(2 * time.Second)
	progressOf := func() string {
		return e.src[0].one(t, `SELECT last_value FROM orders_id_seq`)
	}

	for round := 0; round < 2; round++ {
		before := progressOf()
		state, msg, res := a.verify()
		for _, l := range loads {
			l.running(t)
		}
		if after := progressOf(); after == before {
			t.Fatalf("the load wrote nothing during VERIFY (orders_id_seq %s)", after)
		}
		lsn, hold := allMatch(t, state, msg, res, nSrc)
		t.Logf("VERIFY %d under the load: every table matches at %s, streams held back changes for %s ms; %s", round, lsn, hold, lastPoint(e.logs))
	}

	// A customer the load never writes, deleted on its shard behind
	// reshard's back.
	victim := 2000
	d := e.shardOf(t, "customers", fmt.Sprintf("id = %d", victim))
	row := d.one(t, fmt.Sprintf(`SELECT format('(%%s, %%L, %%L)', id, name, region) FROM customers WHERE id = %d`, victim))
	deleteBehind(t, d, victim)
	state, msg, res := a.verify()
	for _, l := range loads {
		l.running(t)
	}
	oneMissing(t, state, msg, res, "customers", fmt.Sprint(victim), e.logs)
	t.Logf("after deleting customer %d on %s: %s", victim, d.db, msg)
	d.exec(t, `SET session_replication_role = replica; INSERT INTO customers (id, name, region) VALUES `+row)

	for _, l := range loads {
		l.running(t)
		l.stop(t)
	}
	e.waitCaughtUp(t, 2*time.Minute)
	e.waitEverySourceShard(t, 2*time.Minute)
	e.verifyCopy(t)
	if nSrc > 1 {
		if _, err := a.conn.Exec(ctx, "STOP_TASK "+id); err != nil {
			t.Fatal(err)
		}
		return
	}

	// After CUTOVER: the application writes on the new shards, the
	// reverse streams (one per new shard) feed the old database.
	var tid, slot string
	if err := a.conn.QueryRow(ctx, "CUTOVER "+id).Scan(&tid, &state, &slot); err != nil {
		t.Fatalf("CUTOVER: %v", err)
	}
	if state != "reverse_streaming" {
		t.Fatalf("CUTOVER answered %s", state)
	}
	loads = nil
	for _, d := range e.dst {
		loads = append(loads, startBenchLoad(t, d, reverseScript))
	}
	time.Sleep(2 * time.Second)
	shardProgress := func() string {
		return e.dst[0].one(t, `SELECT last_value FROM orders_id_seq`) + "/" + e.dst[1].one(t, `SELECT last_value FROM orders_id_seq`)
	}
	before := shardProgress()
	state, msg, res = a.verify()
	for _, l := range loads {
		l.running(t)
	}
	if after := shardProgress(); after == before {
		t.Fatalf("the load on the shards wrote nothing during VERIFY (%s)", after)
	}
	lsn, hold := allMatch(t, state, msg, res, len(e.dst))
	t.Logf("VERIFY on the reverse_streaming task under the load: every table matches at %s, streams held back changes for %s ms; %s", lsn, hold, lastPoint(e.logs))

	victim = 1999
	deleteBehind(t, e.src[0], victim)
	state, msg, res = a.verify()
	for _, l := range loads {
		l.running(t)
	}
	oneMissing(t, state, msg, res, "customers", fmt.Sprint(victim), e.logs)
	t.Logf("after deleting customer %d in the old database: %s", victim, msg)
	for _, l := range loads {
		l.stop(t)
	}
	if _, err := a.conn.Exec(ctx, "STOP_TASK "+id); err != nil {
		t.Fatal(err)
	}
}
