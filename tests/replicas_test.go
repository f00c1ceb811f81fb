package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

// addReplica lists inst as a replica of source shard 0 in the env's
// config (database src's database name) and reloads the catalog.
func (e *copyEnv) addReplica(t *testing.T, inst *pgtest.Instance, reshardingOnly bool) {
	t.Helper()
	e.addReplicaAt(t, inst.Port, reshardingOnly)
}

func (e *copyEnv) addReplicaAt(t *testing.T, port int, reshardingOnly bool) {
	t.Helper()
	f, err := os.OpenFile(e.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[[databases]]\nname = \"src\"\nhost = \"127.0.0.1\"\nport = %d\ndatabase_name = %q\nrole = \"replica\"\nresharding_only = %v\nshard = 0\n",
		port, e.src[0].db, reshardingOnly)
	f.Close()
	e.load(t)
}

// tableReads are a table's pg_stat_user_tables read counters on a server:
// rows read by sequential scans, and rows fetched through indexes (a copy
// of a primary-key range reads by index or bitmap scan).
type tableReads struct{ seq, idx int64 }

func reads(t *testing.T, inst *pgtest.Instance, db, table string) tableReads {
	t.Helper()
	var r tableReads
	fmt.Sscan(node{inst, db}.one(t, fmt.Sprintf(`SELECT coalesce(seq_tup_read, 0) || ' ' || coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables WHERE relname = '%s'`, table)), &r.seq, &r.idx)
	return r
}

func (r tableReads) minus(o tableReads) tableReads { return tableReads{r.seq - o.seq, r.idx - o.idx} }

// copyNodes returns SHOW TABLE_COPIES' source_node of every unit of a
// table, counted, and the format of every unit.
func copyNodes(t *testing.T, e *copyEnv, table string) (map[string]int, map[string]int) {
	t.Helper()
	res, err := e.exec.Execute(context.Background(), commands.Show{Name: "table_copies"})
	if err != nil {
		t.Fatal(err)
	}
	nodes, formats := map[string]int{}, map[string]int{}
	for _, r := range res.Rows {
		if r[1] == table {
			nodes[r[15].(string)]++
		}
		formats[r[16].(string)]++
	}
	return nodes, formats
}

// copyUnderWrites runs COPY_DATA while writer() changes the source (row
// moves included), waits until it streams, stops the writes, waits for the
// stream to catch up and compares both sides with SQL. copied runs once
// the copy is over, before anything else reads the source. It returns the
// task.
func copyUnderWrites(t *testing.T, e *copyEnv, slot string, copied func()) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	// New rows take ids just above the source's, as an application's
	// sequence would; every statement of the writer is one transaction,
	// about 300 a second.
	var firstID int
	fmt.Sscan(e.src[0].one(t, `SELECT greatest((SELECT max(id) FROM customers), (SELECT max(id) FROM orders))`), &firstID)
	go writerFrom(t, e.src[0], firstID, 3*time.Millisecond, stop, &wg)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	res, err := e.exec.Execute(ctx, commands.CopyData{Route: e.route(), Slot: slot})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Rows[0][0].(string)
	waitFor(t, 4*time.Minute, "COPY_DATA streaming", func() bool {
		state, msg := e.taskState(t)
		if state != "copying" && state != "streaming" {
			t.Fatalf("COPY_DATA: %s %s", state, msg)
		}
		return state == "streaming"
	})
	t.Logf("%s: copied, streaming", time.Now().Format("15:04:05.000"))
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	// The copy's sessions have ended (their statistics are flushed).
	copied()
	e.waitCaughtUp(t, 2*time.Minute)
	t.Logf("%s: caught up", time.Now().Format("15:04:05.000"))
	e.verifyCopy(t)
	t.Logf("%s: compared", time.Now().Format("15:04:05.000"))
	return id
}

// TestCopyFromReplicas (PostgreSQL 17): a source primary with 600k orders
// and resharding_only standbys. With one standby, data-sync under writes
// (sharding-key moves included) is exact, every unit is read from the
// standby (SHOW TABLE_COPIES), the standby's statistics show it read the
// table and the primary's that it did not, and the log names the
// standby's real version. With two standbys the units are spread over
// both, each reading part of the table.
func TestCopyFromReplicas(t *testing.T) {
	t.Parallel()
	c := startVersion(t, 17, 3, nil)
	primary := c.Instances[0]
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// One source database shared by both runs; each run copies into fresh
	// destination databases.
	e1 := newCopyEnvOn(t, "rep1", primary, c.Instances[1:], 1, 2, "")
	e1.setupSQL(t, 200000)
	src := e1.src[0]
	// orders keeps the default replica identity (its primary key, without
	// the sharding column): the writer's moves are found by key.
	src.exec(t, `ANALYZE`)
	var orders int64
	fmt.Sscan(src.one(t, `SELECT count(*) FROM orders`), &orders)
	if orders < 590000 {
		t.Fatalf("the source holds %d orders, want about 600k", orders)
	}
	s1, err := c.AddStandby(ctx, primary, pgtest.StandbyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.WaitReplay(ctx, primary); err != nil {
		t.Fatal(err)
	}

	t.Run("one standby", func(t *testing.T) {
		e1.logs = &testkit.Buffer{}
		e1.addReplica(t, s1, true)
		primaryBefore, standbyBefore := reads(t, primary, src.db, "orders"), reads(t, s1, src.db, "orders")
		var p tableReads
		id := copyUnderWrites(t, e1, "rep1_slot", func() { p = reads(t, primary, src.db, "orders").minus(primaryBefore) })
		nodes, formats := copyNodes(t, e1, "orders")
		want := fmt.Sprintf("replica 127.0.0.1:%d", s1.Port)
		if len(nodes) != 1 || nodes[want] == 0 {
			t.Fatalf("orders units read from %v, want every one from %s", nodes, want)
		}
		if len(formats) != 1 || formats["binary"] == 0 {
			t.Fatalf("formats %v, want binary only (every server runs 17)", formats)
		}
		// orders (about 50 MB) is one unit, read by a sequential scan.
		var read tableReads
		waitFor(t, 10*time.Second, "the standby's statistics count the copy's reads", func() bool {
			read = reads(t, s1, src.db, "orders").minus(standbyBefore)
			return read.seq >= orders
		})
		if p.seq != 0 || p.idx > orders/10 {
			t.Fatalf("the primary read orders rows during the copy (%d by sequential scan, %d by index; the standby %d): want none but the writer's lookups", p.seq, p.idx, read.seq)
		}
		t.Logf("the standby read %d orders rows by sequential scan, the primary none (%d index fetches: the writer's)", read.seq, p.idx)
		logs := e1.logs.String()
		for _, w := range []string{"copying from replica", "version=\"PostgreSQL 17.", fmt.Sprintf("replica=127.0.0.1:%d", s1.Port)} {
			if !strings.Contains(logs, w) {
				t.Fatalf("the log lacks %q:\n%s", w, firstLines(logs, 40))
			}
		}
		if strings.Contains(logs, "PostgreSQL 15") {
			t.Fatalf("the log speaks of PostgreSQL 15 on a 17 cluster:\n%s", logs)
		}
		stopAndDrop(t, e1, id, "rep1_slot")
	})

	t.Run("two standbys", func(t *testing.T) {
		s2, err := c.AddStandby(ctx, primary, pgtest.StandbyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s2.WaitReplay(ctx, primary); err != nil {
			t.Fatal(err)
		}
		e2 := envOnSource(t, "rep2", src, c.Instances[1:3], "resharding_split_threshold = 4194304")
		for _, d := range e2.dst {
			d.exec(t, shardSchema)
		}
		e2.addReplica(t, s1, true)
		e2.addReplica(t, s2, true)
		e2.logs = &testkit.Buffer{}
		e2.load(t)
		defer func() {
			if t.Failed() {
				t.Log(e2.logs.String())
			}
		}()
		before := []tableReads{reads(t, primary, src.db, "orders"), reads(t, s1, src.db, "orders"), reads(t, s2, src.db, "orders")}
		var p tableReads
		id := copyUnderWrites(t, e2, "rep2_slot", func() { p = reads(t, primary, src.db, "orders").minus(before[0]) })
		nodes, _ := copyNodes(t, e2, "orders")
		a, b := fmt.Sprintf("replica 127.0.0.1:%d", s1.Port), fmt.Sprintf("replica 127.0.0.1:%d", s2.Port)
		if len(nodes) != 2 || nodes[a] == 0 || nodes[b] == 0 {
			t.Fatalf("orders units read from %v, want them spread over %s and %s", nodes, a, b)
		}
		// Ranges of the primary key: read by index or bitmap scans.
		var r1, r2 tableReads
		waitFor(t, 10*time.Second, "both standbys' statistics count the copy's reads", func() bool {
			r1 = reads(t, s1, src.db, "orders").minus(before[1])
			r2 = reads(t, s2, src.db, "orders").minus(before[2])
			return r1.seq+r1.idx > 0 && r2.seq+r2.idx > 0 && r1.seq+r1.idx+r2.seq+r2.idx >= orders
		})
		if p.seq != 0 || p.idx > orders/10 {
			t.Fatalf("the primary read orders rows during the copy (%d sequential, %d by index): want none but the writer's lookups", p.seq, p.idx)
		}
		t.Logf("units %v; standby 1 read %+v orders rows, standby 2 %+v, the primary %+v (the writer's lookups)", nodes, r1, r2, p)
		stopAndDrop(t, e2, id, "rep2_slot")
	})

	t.Run("preflight names a misconfigured standby", func(t *testing.T) {
		bad, err := c.AddStandby(ctx, primary, pgtest.StandbyOptions{Settings: map[string]string{"hot_standby_feedback": "off", "max_replication_slots": "1"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := bad.WaitReplay(ctx, primary); err != nil {
			t.Fatal(err)
		}
		// The one slot a standby with max_replication_slots = 1 has.
		if err := bad.Exec(ctx, "postgres", `SELECT pg_create_physical_replication_slot('taken')`); err != nil {
			t.Fatal(err)
		}
		e3 := envOnSource(t, "rep3", src, c.Instances[1:3], "")
		for _, d := range e3.dst {
			d.exec(t, shardSchema)
		}
		e3.addReplica(t, bad, true)
		_, err = e3.exec.Execute(ctx, commands.CopyData{Route: e3.route(), Slot: "rep3_slot", Foreground: true})
		var ce *commands.Error
		if !errors.As(err, &ce) || ce.Code != "55000" {
			t.Fatalf("COPY_DATA with a misconfigured standby: %v, want a 55000 refusal", err)
		}
		where := fmt.Sprintf("src shard 0 replica (127.0.0.1:%d/%s)", bad.Port, src.db)
		for _, w := range []string{where + " has hot_standby_feedback = off", where + " has no free replication slot"} {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("refusal lacks %q: %v", w, err)
			}
		}
		if n := src.one(t, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'rep3_slot'`); n != "0" {
			t.Fatal("a refused copy created its slot")
		}
	})
}

// envOnSource makes an env whose source is the existing database src and
// whose two destination shards are fresh databases on dst.
func envOnSource(t *testing.T, name string, src node, dst []*pgtest.Instance, general string) *copyEnv {
	t.Helper()
	var dsts []node
	for i := 0; i < 2; i++ {
		n := node{dst[i%len(dst)], fmt.Sprintf("%s_dst%d", name, i)}
		if err := n.inst.CreateDatabase(context.Background(), n.db); err != nil {
			t.Fatal(err)
		}
		dsts = append(dsts, n)
	}
	return newEnvFrom(t, []node{src}, dsts, general)
}

// stopAndDrop stops a task and drops its slot on the source, so a later
// run on the same source starts afresh.
func stopAndDrop(t *testing.T, e *copyEnv, id, slot string) {
	t.Helper()
	if _, err := e.exec.Execute(context.Background(), commands.StopTask{Task: id}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the slot is released", func() bool {
		return e.src[0].one(t, fmt.Sprintf(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' AND active`, slot)) == "0"
	})
	e.src[0].exec(t, fmt.Sprintf(`SELECT pg_drop_replication_slot('%s')`, slot))
}

// TestReplicasFallBackToPrimary: replicas that cannot copy (a PostgreSQL 15
// standby; a replica that does not answer) are left out, the primary does
// the copy, and the log says why, naming each replica and its real version.
func TestReplicasFallBackToPrimary(t *testing.T) {
	t.Parallel()
	c := startVersion(t, 15, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := c.AddStandby(ctx, c.Instances[0], pgtest.StandbyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := newCopyEnvOn(t, "repfb", c.Instances[0], c.Instances[1:3], 1, 2, "")
	e.logs = &testkit.Buffer{}
	e.setupSQL(t, 3000)
	if err := s.WaitReplay(ctx, c.Instances[0]); err != nil {
		t.Fatal(err)
	}
	e.addReplica(t, s, true)
	e.addReplicaAt(t, freePort(t), true)
	e.copy(t, "repfb_slot")
	e.verifyCopy(t)
	nodes, _ := copyNodes(t, e, "orders")
	if want := fmt.Sprintf("primary 127.0.0.1:%d", c.Instances[0].Port); len(nodes) != 1 || nodes[want] == 0 {
		t.Fatalf("orders read from %v, want the primary %s", nodes, want)
	}
	logs := e.logs.String()
	var version int
	fmt.Sscan(node{s, "postgres"}.one(t, `SELECT current_setting('server_version_num')`), &version)
	for _, w := range []string{
		"the primary does the copy",
		fmt.Sprintf("replica 127.0.0.1:%d: it runs PostgreSQL 15.%d, and a standby holds a logical slot only from PostgreSQL 16 on", s.Port, version%10000),
		"cannot connect",
	} {
		if !strings.Contains(logs, w) {
			t.Fatalf("the log lacks %q:\n%s", w, firstLines(logs, 30))
		}
	}
}
