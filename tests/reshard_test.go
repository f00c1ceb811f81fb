package tests

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// TestReshardAndVerifyThroughAdmin drives RESHARD and VERIFY through the
// admin server only, with a writer on the source.
func TestReshardAndVerifyThroughAdmin(t *testing.T) {
	e := newCopyEnv(t, "rsv", 1, 2, "")
	for i, s := range e.src {
		s.exec(t, copySchema)
		loadData(t, s, i, 1, 3000)
		s.exec(t, `ALTER TABLE orders REPLICA IDENTITY FULL`)
	}
	addr, _ := serveAdmin(t, e, hclog.NewNullLogger())
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	admin := connect(t, ctx, fmt.Sprintf("postgres://admin:%s@%s/admin?sslmode=disable", adminPassword, addr))

	taskState := func(id string) (string, string) {
		rows, err := admin.Query(ctx, "SHOW TASKS")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var tid, kind, src, dst, pub, state, elapsed, msg string
			var started time.Time
			if err := rows.Scan(&tid, &kind, &src, &dst, &pub, &state, &started, &elapsed, &msg); err != nil {
				t.Fatal(err)
			}
			if tid == id {
				return state, msg
			}
		}
		t.Fatalf("task %s not in SHOW TASKS", id)
		return "", ""
	}
	start := func(sql string) string {
		var id string
		if err := admin.QueryRow(ctx, sql).Scan(&id); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return id
	}

	stopWriter := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go writer(t, e.src[0], stopWriter, &wg)
	id := start("RESHARD src dst all_tables")
	states := e.awaitState(t, ctx, id, "streaming")
	t.Logf("RESHARD states: %v", states)
	if want := "schema_pre copying schema_post streaming"; strings.Join(states, " ") != want {
		t.Fatalf("RESHARD went through %v, want %s", states, want)
	}
	if state, _ := taskState(id); state != "streaming" {
		t.Fatalf("SHOW TASKS says %s once the task is streaming", state)
	}
	// The writer goes on while the task streams.
	waitWrites(t, e.src[0], 10)
	close(stopWriter)
	wg.Wait()
	e.waitCaughtUp(t, 2*time.Minute)
	// POST ran: the shards have the source's indexes and foreign keys.
	for k, d := range e.dst {
		if n := d.one(t, `SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated`); n != "1" {
			t.Fatalf("shard %d: %s validated foreign keys after RESHARD, want 1", k, n)
		}
	}

	verifyTask := func() (string, string, map[string][]string) {
		vid := start("VERIFY src dst all_tables")
		vt, ok := e.exec.Tasks.Get(vid)
		if !ok {
			t.Fatalf("task %s is not in the executor's tasks", vid)
		}
		select {
		case <-vt.Done():
		case <-ctx.Done():
			t.Fatalf("VERIFY did not end: %v (states %v)", ctx.Err(), vt.States())
		}
		state, msg := taskState(vid)
		if state == "verifying" {
			t.Fatalf("VERIFY ended, SHOW TASKS still says %s", state)
		}
		rows, err := admin.Query(ctx, "SHOW VERIFY")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]string{}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			if vals[0] != vid {
				continue
			}
			var f []string
			for _, v := range vals[3:] {
				f = append(f, fmt.Sprint(v))
			}
			got[vals[2].(string)] = f
		}
		rows.Close()
		return state, msg, got
	}
	state, msg, results := verifyTask()
	if state != "done" {
		t.Fatalf("VERIFY ended %s: %s (%v)", state, msg, results)
	}
	for _, table := range []string{"customers", "orders", "countries", "events_2025", "events_2026", "notes"} {
		// An omni table's destination_rows counts every shard's copy;
		// shard_rows lists each.
		r, ok := results[table]
		want := r[1]
		if table == "countries" {
			want = r[1] + "," + r[1]
		}
		if !ok || r[0] != "match" || (table != "countries" && r[1] != r[2]) || (table == "countries" && r[11] != want) || r[1] == "0" {
			t.Fatalf("VERIFY %s: %v", table, r)
		}
	}

	// A row deleted behind reshard's back on one shard.
	d := e.dst[1]
	conn, err := d.inst.Connect(ctx, d.db)
	if err != nil {
		t.Fatal(err)
	}
	var victim int64
	// Orders reference customers: delete without the FK check, as a stray
	// script with superuser rights could.
	if _, err := conn.Exec(ctx, `SET session_replication_role = replica`); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `DELETE FROM customers WHERE id = (SELECT min(id) FROM customers) RETURNING id`).Scan(&victim); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	state, msg, results = verifyTask()
	if state != "failed" || !strings.Contains(msg, "1 of") {
		t.Fatalf("VERIFY after a deletion ended %s: %s", state, msg)
	}
	r := results["customers"]
	if r[0] != "mismatch" || r[3] != "1" || r[4] != "0" || r[5] != "0" {
		t.Fatalf("VERIFY customers after deleting id %d on shard 1: %v (want mismatch, 1 missing)", victim, r)
	}
	if results["orders"][0] != "match" {
		t.Fatalf("VERIFY orders: %v", results["orders"])
	}

	// CUTOVER through the admin server.
	var tid, slot string
	if err := admin.QueryRow(ctx, "CUTOVER "+id).Scan(&tid, &state, &slot); err != nil {
		t.Fatalf("CUTOVER: %v", err)
	}
	if state != "reverse_streaming" {
		t.Fatalf("CUTOVER answered %s", state)
	}
	var srcMax int64
	fmt.Sscan(e.src[0].one(t, `SELECT max(id) FROM orders`), &srcMax)
	for k, d := range e.dst {
		var next int64
		fmt.Sscan(d.one(t, `SELECT nextval('orders_id_seq')`), &next)
		if next <= srcMax || next%2 != int64(k) {
			t.Fatalf("after CUTOVER shard %d's orders_id_seq hands out %d (source max %d)", k, next, srcMax)
		}
	}
	// A write on a shard reaches the source.
	e.dst[0].exec(t, `UPDATE countries SET name = 'from the shard' WHERE code = 'JP'`)
	deadline := time.Now().Add(time.Minute)
	for e.src[0].one(t, `SELECT name FROM countries WHERE code = 'JP'`) != "from the shard" {
		if time.Now().After(deadline) {
			t.Fatal("a write on a shard after CUTOVER did not reach the source")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Rollback: the source is the writable side again.
	if err := admin.QueryRow(ctx, "CUTOVER "+id).Scan(&tid, &state, &slot); err != nil {
		t.Fatalf("rollback CUTOVER: %v", err)
	}
	if state != "streaming" {
		t.Fatalf("rollback answered %s", state)
	}
	e.src[0].exec(t, `INSERT INTO countries VALUES ('RB', 'after rollback')`)
	e.waitCaughtUp(t, time.Minute)
	for k, d := range e.dst {
		if n := d.one(t, `SELECT count(*) FROM countries WHERE code = 'RB'`); n != "1" {
			t.Fatalf("shard %d did not get a source write after rollback", k)
		}
	}
	// Cutting over again after a rollback: the shards, closed by the
	// rollback, are the writable side again, and no forward slot is left
	// on the source.
	if err := admin.QueryRow(ctx, "CUTOVER "+id).Scan(&tid, &state, &slot); err != nil {
		t.Fatalf("second CUTOVER: %v", err)
	}
	if state != "reverse_streaming" {
		t.Fatalf("second CUTOVER answered %s", state)
	}
	e.dst[0].exec(t, `UPDATE countries SET name = 'second cutover' WHERE code = 'RB'`)
	deadline = time.Now().Add(time.Minute)
	for e.src[0].one(t, `SELECT name FROM countries WHERE code = 'RB'`) != "second cutover" {
		if time.Now().After(deadline) {
			t.Fatal("a write on a shard after the second CUTOVER did not reach the source")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := e.src[0].one(t, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database() AND NOT slot_name LIKE '%_rev%'`); n != "0" {
		t.Fatalf("the source keeps %s forward slots after the second CUTOVER", n)
	}
	if _, err := admin.Exec(ctx, "STOP_TASK "+id); err != nil {
		t.Fatal(err)
	}
}
