package tests

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/commands"
)

// waitCaughtUp waits until the stream's slot has no lag and every shard
// shows the source's last write (SHOW REPLICATION_SLOTS refreshes each
// second).
func (e *copyEnv) waitCaughtUp(t *testing.T, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	// A marker written last on the source: once every shard has it (omni
	// table), everything before it has been applied.
	marker := fmt.Sprintf("M%d", time.Now().UnixNano()%1e9)
	e.src[0].exec(t, fmt.Sprintf(`INSERT INTO countries VALUES ('%s', 'marker')`, marker))
	for {
		ok := true
		for _, d := range e.dst {
			if d.one(t, fmt.Sprintf(`SELECT count(*) FROM countries WHERE code = '%s'`, marker)) != "1" {
				ok = false
			}
		}
		if ok {
			res, err := e.exec.Execute(ctx, commands.Show{Name: "replication_slots"})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Rows) > 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			tasks, _ := e.exec.Execute(ctx, commands.Show{Name: "tasks"})
			t.Fatalf("stream did not catch up within %s; tasks: %v", timeout, tasks.Rows)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// awaitState waits, from the task's own state events (none is missed, as a
// poll of SHOW TASKS can miss a short state), until task id enters state
// want, and returns the states it went through; it fails the test if the
// task ends first or ctx does.
func (e *copyEnv) awaitState(t *testing.T, ctx context.Context, id, want string) []string {
	t.Helper()
	tk, ok := e.exec.Tasks.Get(id)
	if !ok {
		t.Fatalf("task %s is not in the executor's tasks", id)
	}
	_, states, err := tk.WaitState(ctx, func(s string) bool { return s == want })
	if err != nil {
		t.Fatalf("waiting for %s: %v", want, err)
	}
	return states
}

// waitWrites waits until writer (writing on n) has made rounds more rounds
// of its six statements: its ids (one a statement) on customers, one of them
// an INSERT each round, have grown past what they were.
func waitWrites(t *testing.T, n node, rounds int) {
	t.Helper()
	var mark int64
	fmt.Sscan(n.one(t, `SELECT max(id) FROM customers`), &mark)
	for deadline := time.Now().Add(time.Minute); ; {
		var now int64
		fmt.Sscan(n.one(t, `SELECT max(id) FROM customers`), &now)
		if now >= mark+int64(6*rounds) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the writer made no progress (customers max id %d, was %d)", now, mark)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *copyEnv) taskState(t *testing.T) (string, string) {
	t.Helper()
	res, err := e.exec.Execute(context.Background(), commands.Show{Name: "tasks"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) == 0 {
		return "", ""
	}
	last := res.Rows[len(res.Rows)-1]
	return last[5].(string), last[8].(string)
}

// writer runs a mixed write load on the source until stopped.
func writer(t *testing.T, n node, stop <-chan struct{}, wg *sync.WaitGroup) {
	writerFrom(t, n, 500000, 0, stop, wg)
}

// writerFrom is writer inserting rows with ids above next, pausing pause
// after each statement.
func writerFrom(t *testing.T, n node, next int, pause time.Duration, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	ctx := context.Background()
	conn, err := n.inst.Connect(ctx, n.db)
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close(ctx)
	r := rand.New(rand.NewSource(1))
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-time.After(pause):
		}
		next++
		var sql string
		switch i % 6 {
		case 0:
			sql = fmt.Sprintf(`INSERT INTO customers (id, name, region) VALUES (%d, 'w%d', 'eu')`, next, next)
		case 1:
			sql = fmt.Sprintf(`INSERT INTO orders (id, customer_id, total, note) VALUES (%d, %d, %d, 'live')`, next, 1+r.Intn(100), r.Intn(1000))
		case 2:
			sql = fmt.Sprintf(`UPDATE orders SET total = total + 1 WHERE id = %d`, 1+r.Intn(3000))
		case 3:
			// Moves a row to another shard (sharding key change).
			sql = fmt.Sprintf(`UPDATE orders SET customer_id = %d WHERE id = %d`, 1+r.Intn(100), 1+r.Intn(3000))
		case 4:
			sql = fmt.Sprintf(`DELETE FROM orders WHERE id = %d`, 1+r.Intn(3000))
		case 5:
			sql = fmt.Sprintf(`UPDATE customers SET region = 'r%d' WHERE id = %d`, i, 1+r.Intn(1000))
		}
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Errorf("writer: %s: %v", sql, err)
			return
		}
	}
}

func TestStreamAfterCopy(t *testing.T) {
	for _, shards := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d shards", shards), func(t *testing.T) {
			// With 3 shards, streamed transactions may hold only 1 MiB in
			// memory: the large ones are spilled to disk and read back.
			extra := ""
			if shards == 3 {
				extra = "resharding_stream_memory = 1048576"
			}
			e := newCopyEnv(t, fmt.Sprintf("st%d", shards), 1, shards, extra)
			e.setup(t, 3000)
			src := e.src[0]
			// The sharding column of these tables is not in their primary key:
			// with REPLICA IDENTITY FULL every UPDATE carries the old row, so a
			// sharding-key change moves the row.
			src.exec(t, `ALTER TABLE orders REPLICA IDENTITY FULL; ALTER TABLE notes REPLICA IDENTITY FULL;
				ALTER TABLE events_2025 REPLICA IDENTITY FULL; ALTER TABLE events_2026 REPLICA IDENTITY FULL;
				ALTER TABLE customers ADD COLUMN bio text;`)
			for _, d := range e.dst {
				d.exec(t, `ALTER TABLE customers ADD COLUMN bio text`)
			}
			src.exec(t, fmt.Sprintf(`ALTER DATABASE %s SET logical_decoding_work_mem = '64kB'`, src.db))
			// TOASTed values: large and incompressible.
			src.exec(t, `UPDATE customers SET bio = (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 200)) WHERE id <= 50`)

			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go writer(t, src, stop, &wg)
			res, err := e.exec.Execute(ctx, commands.CopyData{Route: e.route(), Slot: fmt.Sprintf("st%d_slot", shards)})
			if err != nil {
				t.Fatal(err)
			}
			taskID := res.Rows[0][0].(string)
			// Writes during the copy, then after it.
			if states := e.awaitState(t, ctx, taskID, "streaming"); strings.Join(states, " ") != "copying streaming" {
				t.Fatalf("task %s went through %v, want copying, streaming", taskID, states)
			}
			t.Logf("%s: streaming", time.Now().Format("15:04:05.000"))
			waitWrites(t, src, 10)
			close(stop)
			wg.Wait()

			src.exec(t, `
				-- sharding-key changes of rows with unchanged TOASTed values
				UPDATE customers SET name = name || '!' WHERE id <= 50;
				UPDATE orders SET customer_id = customer_id + 1 WHERE id BETWEEN 100 AND 160 AND customer_id IS NOT NULL;
				-- deletes, an omni-table change, a truncate followed by new rows
				DELETE FROM orders WHERE id BETWEEN 200 AND 260;
				UPDATE countries SET name = upper(name);
				DELETE FROM countries WHERE code = 'JP';
				TRUNCATE notes;
				INSERT INTO notes SELECT md5((g * 3)::text)::uuid, g % 300, 'after truncate' FROM generate_series(1, 400) g;
				-- a NULL sharding key
				INSERT INTO orders (id, customer_id, total) VALUES (900001, NULL, 1);
			`)
			// A moved row whose TOASTed column is unchanged: customers are
			// sharded by id, so moving means changing the id.
			src.exec(t, `DELETE FROM orders WHERE customer_id BETWEEN 1 AND 10; UPDATE customers SET id = id + 700000 WHERE id BETWEEN 1 AND 10`)
			// Rolled back work is never applied.
			src.exec(t, `BEGIN; INSERT INTO customers (id, name) VALUES (800001, 'rolled back'); ROLLBACK`)
			src.exec(t, `BEGIN; INSERT INTO customers (id, name) VALUES (800002, 'kept');
				SAVEPOINT s; INSERT INTO customers (id, name) VALUES (800003, 'rolled back'); ROLLBACK TO s; COMMIT`)
			// A large transaction, streamed while in progress.
			src.exec(t, `INSERT INTO events SELECT 1000000 + g, g % 500, DATE '2026-02-01' + (g % 100), jsonb_build_object('big', g) FROM generate_series(1, 150000) g`)
			src.exec(t, `BEGIN; INSERT INTO events SELECT 2000000 + g, g % 500, DATE '2026-03-01', NULL FROM generate_series(1, 50000) g; ROLLBACK`)
			// A large streamed transaction that moves rows between shards
			// and rolls back a subtransaction in the middle.
			src.exec(t, `BEGIN;
				INSERT INTO customers (id, name) SELECT 5000000 + g, 'before savepoint' FROM generate_series(1, 20000) g;
				UPDATE orders SET customer_id = 5000001 + id % 20000 WHERE id BETWEEN 1000 AND 1999;
				SAVEPOINT a;
				INSERT INTO customers (id, name) SELECT 5100000 + g, 'rolled back' FROM generate_series(1, 20000) g;
				ROLLBACK TO a;
				INSERT INTO customers (id, name) SELECT 5200000 + g, 'kept after savepoint' FROM generate_series(1, 20000) g;
				UPDATE customers SET name = name || ' (updated)' WHERE id BETWEEN 5200001 AND 5205000;
				COMMIT`)
			// Many deletes by key in one transaction (merged on the shards).
			src.exec(t, `DELETE FROM customers WHERE id BETWEEN 5000001 AND 5000700`)

			t.Logf("%s: writes done, waiting for the stream", time.Now().Format("15:04:05.000"))
			e.waitCaughtUp(t, 2*time.Minute)
			t.Logf("%s: caught up", time.Now().Format("15:04:05.000"))
			if state, msg := e.taskState(t); state != "streaming" {
				t.Fatalf("task %s after catching up: %s", state, msg)
			}
			e.verifyCopy(t)
			for _, d := range e.dst {
				if n := d.one(t, `SELECT count(*) FROM customers WHERE name = 'rolled back'`); n != "0" {
					t.Fatalf("rolled-back rows applied: %s", n)
				}
			}
			var bigTotal int
			for _, d := range e.dst {
				var n int
				fmt.Sscan(d.one(t, `SELECT count(*) FROM events WHERE id > 1000000`), &n)
				bigTotal += n
			}
			if bigTotal != 150000 {
				t.Fatalf("large transaction: %d rows on the shards, want 150000", bigTotal)
			}
			if slots := e.exec.Registry.Slots(); len(slots) != 1 || (shards == 3) != (slots[0].Spilled > 0) {
				t.Fatalf("streamed transactions spilled to disk: %+v (spilling expected with 3 shards only)", slots)
			}
			slots, _ := e.exec.Execute(ctx, commands.Show{Name: "replication_slots"})
			if len(slots.Rows) != 1 || slots.Rows[0][3] != fmt.Sprintf("st%d_slot", shards) || slots.Rows[0][7] != true {
				t.Fatalf("SHOW REPLICATION_SLOTS: %v", slots.Rows)
			}
			if _, err := e.exec.Execute(ctx, commands.StopTask{Task: taskID}); err != nil {
				t.Fatal(err)
			}
			if state, msg := e.taskState(t); state != "stopped" || !strings.Contains(msg, fmt.Sprintf("COPY_DATA src dst all_tables st%d_slot continues it", shards)) {
				t.Fatalf("after STOP_TASK: %s %s", state, msg)
			}
		})
	}
}

// TestStreamTwoSourceShards streams from both source shards' slots into the
// destination shards.
func TestStreamTwoSourceShards(t *testing.T) {
	e := newCopyEnv(t, "st2src", 2, 2, "")
	e.setup(t, 2000)
	for _, s := range e.src {
		s.exec(t, `ALTER TABLE orders REPLICA IDENTITY FULL`)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := e.exec.Execute(ctx, commands.CopyData{Route: e.route(), Slot: "st2src_slot"})
	if err != nil {
		t.Fatal(err)
	}
	taskID := res.Rows[0][0].(string)
	if states := e.awaitState(t, ctx, taskID, "streaming"); strings.Join(states, " ") != "copying streaming" {
		t.Fatalf("task %s went through %v, want copying, streaming", taskID, states)
	}
	for i, s := range e.src {
		base := 600000 + i*10000
		s.exec(t, fmt.Sprintf(`
			INSERT INTO customers (id, name) SELECT g, 'n' || g FROM generate_series(%[1]d, %[1]d + 99) g WHERE g %% 2 = %[2]d;
			UPDATE orders SET total = total * 2 WHERE id %% 10 = 1;
			UPDATE orders SET customer_id = customer_id + 2 WHERE id %% 10 = 3 AND customer_id IS NOT NULL AND customer_id + 2 IN (SELECT id FROM customers);
			DELETE FROM orders WHERE id %% 10 = 5;
			INSERT INTO events SELECT %[1]d + g, g %% 50, DATE '2026-05-01', NULL FROM generate_series(1, 500) g;
		`, base, i))
	}
	// Omni changes come from source shard 0 (the copy's source for them).
	e.src[0].exec(t, `UPDATE countries SET name = name || '.'`)
	e.src[1].exec(t, `UPDATE countries SET name = name || '.'`)
	e.waitCaughtUp(t, 2*time.Minute)
	// Source shard 1's changes arrive through its own slot: wait for them.
	deadline := time.Now().Add(time.Minute)
	for {
		var n int
		for _, d := range e.dst {
			var c int
			fmt.Sscan(d.one(t, `SELECT count(*) FROM events WHERE id > 610000`), &c)
			n += c
		}
		if n == 500 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("source shard 1's events: %d of 500 on the shards", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.verifyCopy(t)
	slots, _ := e.exec.Execute(ctx, commands.Show{Name: "replication_slots"})
	if len(slots.Rows) != 2 {
		t.Fatalf("SHOW REPLICATION_SLOTS lists %d slots, want one per source shard", len(slots.Rows))
	}
	if _, err := e.exec.Execute(ctx, commands.StopTask{Task: taskID}); err != nil {
		t.Fatal(err)
	}
}
