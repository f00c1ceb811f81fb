package tests

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/commands"
)

// sourceEnv is a copyEnv (1 source, 2 shards) whose source holds the copy
// schema and rows of data.
func sourceEnv(t *testing.T, name string, rows int, general string) (*copyEnv, node) {
	t.Helper()
	e := newCopyEnv(t, name, 1, 2, general)
	src := e.src[0]
	src.exec(t, copySchema)
	loadData(t, src, 0, 1, rows)
	return e, src
}

func (e *copyEnv) reshardStreaming(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	res, err := e.exec.Execute(ctx, commands.Reshard{Route: e.route()})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Rows[0][0].(string)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		state, msg := e.taskState(t)
		if state == "streaming" {
			return id
		}
		if state == "failed" || state == "stopped" || time.Now().After(deadline) {
			t.Fatalf("RESHARD: %s %s", state, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCutover(t *testing.T) {
	e, src := sourceEnv(t, "cut", 2000, "")
	src.exec(t, `ALTER TABLE orders REPLICA IDENTITY FULL`)
	id := e.reshardStreaming(t)
	src.exec(t, `INSERT INTO customers (id, name) SELECT 5000 + g, 'late' || g FROM generate_series(1, 50) g`)
	e.waitCaughtUp(t, time.Minute)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := e.exec.Execute(ctx, commands.Cutover{Task: id})
	if err != nil {
		t.Fatalf("CUTOVER: %v", err)
	}
	if res.Rows[0][1] != "reverse_streaming" {
		t.Fatalf("CUTOVER answered %v", res.Rows)
	}
	if state, msg := e.taskState(t); state != "reverse_streaming" {
		t.Fatalf("task after CUTOVER: %s %s", state, msg)
	}
	// Sequences: interleaved on the shards, above the source's maximum.
	var srcMax int64
	fmt.Sscan(src.one(t, `SELECT max(id) FROM customers`), &srcMax)
	for k, d := range e.dst {
		if inc := d.one(t, `SELECT increment_by FROM pg_sequences WHERE sequencename = 'customers_id_seq'`); inc != "2" {
			t.Fatalf("shard %d customers_id_seq increment %s", k, inc)
		}
		var next int64
		fmt.Sscan(d.one(t, `SELECT nextval('customers_id_seq')`), &next)
		if next <= srcMax || next%2 != int64(k) {
			t.Fatalf("shard %d handed out %d (source max %d)", k, next, srcMax)
		}
	}
	// The source is read-only for the application now.
	if err := src.inst.Exec(ctx, src.db, `INSERT INTO countries VALUES ('QQ', 'after cutover')`); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("a write on the source after cutover: %v", err)
	}
	// Writes on the shards reach the source (reverse replication).
	e.dst[0].exec(t, `INSERT INTO customers (name, region) VALUES ('written on shard 0', 'eu')`)
	e.dst[1].exec(t, `UPDATE customers SET region = 'moved' WHERE id = (SELECT min(id) FROM customers)`)
	e.dst[0].exec(t, `UPDATE countries SET name = 'Nederland' WHERE code = 'NL'`)
	e.dst[1].exec(t, `UPDATE countries SET name = 'Niederlande' WHERE code = 'DE'`) // omni: shard 1's copy is not the source of truth
	deadline := time.Now().Add(time.Minute)
	for {
		a := src.one(t, `SELECT count(*) FROM customers WHERE name = 'written on shard 0'`)
		b := src.one(t, `SELECT count(*) FROM customers WHERE region = 'moved'`)
		c := src.one(t, `SELECT name FROM countries WHERE code = 'NL'`)
		if a == "1" && b == "1" && c == "Nederland" {
			break
		}
		if time.Now().After(deadline) {
			state, msg := e.taskState(t)
			t.Fatalf("shard writes did not reach the source: %s %s %s (task %s %s)", a, b, c, state, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := src.one(t, `SELECT name FROM countries WHERE code = 'DE'`); n != "Germany" {
		t.Fatalf("an omni change on shard 1 reached the source: %s", n)
	}

	// Rollback: CUTOVER on the reverse_streaming task swaps back.
	res, err = e.exec.Execute(ctx, commands.Cutover{Task: id})
	if err != nil {
		t.Fatalf("rollback CUTOVER: %v", err)
	}
	if res.Rows[0][1] != "streaming" {
		t.Fatalf("rollback answered %v", res.Rows)
	}
	if err := e.dst[0].inst.Exec(ctx, e.dst[0].db, `INSERT INTO countries VALUES ('QQ', 'on a shard after rollback')`); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("a write on a shard after rollback: %v", err)
	}
	// The source takes writes again, its sequences above every shard's
	// values, and the shards follow it.
	var next, shardMax int64
	fmt.Sscan(src.one(t, `SELECT nextval('customers_id_seq')`), &next)
	for _, d := range e.dst {
		var m int64
		fmt.Sscan(d.one(t, `SELECT max(id) FROM customers`), &m)
		if m > shardMax {
			shardMax = m
		}
	}
	if next <= shardMax {
		t.Fatalf("after rollback the source hands out %d, but the shards hold ids up to %d", next, shardMax)
	}
	src.exec(t, `INSERT INTO customers (name) VALUES ('after rollback')`)
	e.waitCaughtUp(t, time.Minute)
	var total int
	for _, d := range e.dst {
		var n int
		fmt.Sscan(d.one(t, `SELECT count(*) FROM customers WHERE name = 'after rollback'`), &n)
		total += n
	}
	if total != 1 {
		t.Fatalf("a source write after rollback reached %d shards", total)
	}
	if state, _ := e.taskState(t); state != "streaming" {
		t.Fatalf("task after rollback: %s", state)
	}
	if _, err := e.exec.Execute(ctx, commands.StopTask{Task: id}); err != nil {
		t.Fatal(err)
	}
}

// TestCutoverTimeout: a writer holding a long transaction makes CUTOVER
// miss cutover_timeout: it aborts, the source stays writable, the stream
// goes on.
func TestCutoverTimeout(t *testing.T) {
	e, src := sourceEnv(t, "cutto", 500, "cutover_timeout = 1500")
	id := e.reshardStreaming(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	long, err := src.inst.Connect(ctx, src.db)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close(ctx)
	if _, err := long.Exec(ctx, `BEGIN`); err != nil {
		t.Fatal(err)
	}
	if _, err := long.Exec(ctx, `UPDATE countries SET name = name || '.' WHERE code = 'NL'`); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err = e.exec.Execute(ctx, commands.Cutover{Task: id})
	var ce *commands.Error
	if !errors.As(err, &ce) || ce.Code != "57014" || !strings.Contains(ce.Message, "cutover aborted") {
		t.Fatalf("CUTOVER with a long writer: %v", err)
	}
	t.Logf("aborted after %s: %s", time.Since(began).Round(time.Millisecond), ce.Message)
	if _, err := long.Exec(ctx, `COMMIT`); err != nil {
		t.Fatal(err)
	}
	src.exec(t, `INSERT INTO countries VALUES ('WW', 'writable')`)
	if state, msg := e.taskState(t); state != "streaming" {
		t.Fatalf("task after an aborted cutover: %s %s", state, msg)
	}
	e.waitCaughtUp(t, time.Minute)
	for k, d := range e.dst {
		if n := d.one(t, `SELECT count(*) FROM countries WHERE code = 'WW' OR name LIKE '%.'`); n != "2" {
			t.Fatalf("shard %d: writes after the aborted cutover did not stream (%s)", k, n)
		}
	}
	if _, err := e.exec.Execute(ctx, commands.StopTask{Task: id}); err != nil {
		t.Fatal(err)
	}
}

// TestCutoverTimeoutActionCutover: with cutover_timeout_action =
// "cutover", a writer holding a long transaction does not make CUTOVER
// give up: at cutover_timeout its session is ended (its change rolled
// back, on no side), the cutover completes, and so does the rollback
// with such a writer on a shard; the two sides equal each time.
func TestCutoverTimeoutActionCutover(t *testing.T) {
	e, src := sourceEnv(t, "cutforce", 500, "cutover_timeout = 1500\ncutover_timeout_action = \"cutover\"")
	id := e.reshardStreaming(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// longWriter opens a transaction on n that changes countries and
	// keeps it open.
	longWriter := func(n node, suffix string) *pgx.Conn {
		t.Helper()
		c, err := n.inst.Connect(ctx, n.db)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		if _, err := c.Exec(ctx, `BEGIN`); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, `UPDATE countries SET name = name || '`+suffix+`' WHERE code = 'NL'`); err != nil {
			t.Fatal(err)
		}
		return c
	}
	ended := func(c *pgx.Conn, what string) {
		t.Helper()
		if _, err := c.Exec(ctx, `COMMIT`); err == nil {
			t.Fatalf("the long writer on %s committed: its session was not ended", what)
		}
	}

	long := longWriter(src, ".")
	began := time.Now()
	res, err := e.exec.Execute(ctx, commands.Cutover{Task: id})
	if err != nil {
		t.Fatalf("CUTOVER with a long writer and cutover_timeout_action = cutover: %v", err)
	}
	if res.Rows[0][1] != "reverse_streaming" {
		t.Fatalf("CUTOVER answered %v", res.Rows)
	}
	t.Logf("cut over after %s, the long writer's session ended", time.Since(began).Round(time.Millisecond))
	ended(long, "the source")
	if n := src.one(t, `SELECT name FROM countries WHERE code = 'NL'`); strings.HasSuffix(n, ".") {
		t.Fatalf("the ended writer's change is on the source: %q", n)
	}
	e.verifyCopy(t)

	long = longWriter(e.dst[0], "!")
	res, err = e.exec.Execute(ctx, commands.Cutover{Task: id})
	if err != nil {
		t.Fatalf("rollback with a long writer on a shard: %v", err)
	}
	if res.Rows[0][1] != "streaming" {
		t.Fatalf("rollback answered %v", res.Rows)
	}
	ended(long, "shard 0")
	src.exec(t, `INSERT INTO countries VALUES ('WW', 'after the rollback')`)
	e.waitCaughtUp(t, time.Minute)
	for k, d := range e.dst {
		if n := d.one(t, `SELECT name FROM countries WHERE code = 'NL'`); strings.HasSuffix(n, "!") || strings.HasSuffix(n, ".") {
			t.Fatalf("shard %d: an ended writer's change is there: %q", k, n)
		}
	}
	e.verifyCopy(t)
	if _, err := e.exec.Execute(ctx, commands.StopTask{Task: id}); err != nil {
		t.Fatal(err)
	}
}

// TestStopAndReplicate: STOP_TASK, writes while nothing streams, then
// REPLICATE with the same slot continues without loss.
func TestStopAndReplicate(t *testing.T) {
	e, src := sourceEnv(t, "stoprep", 1000, "")
	src.exec(t, `ALTER TABLE orders REPLICA IDENTITY FULL`)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: commands.PhasePre, Route: e.route()}); err != nil {
		t.Fatal(err)
	}
	res, err := e.exec.Execute(ctx, commands.CopyData{Route: e.route(), Slot: "stoprep_slot"})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Rows[0][0].(string)
	for {
		state, msg := e.taskState(t)
		if state == "streaming" {
			break
		}
		if state != "copying" {
			t.Fatalf("%s %s", state, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
	src.exec(t, `UPDATE orders SET total = total + 1 WHERE id % 3 = 0`)
	if _, err := e.exec.Execute(ctx, commands.StopTask{Task: id}); err != nil {
		t.Fatal(err)
	}
	// Nothing streams now: these wait in the slot.
	src.exec(t, `INSERT INTO customers (id, name) SELECT 9000 + g, 'while stopped' FROM generate_series(1, 100) g;
		UPDATE orders SET customer_id = 9001 WHERE id % 7 = 0; DELETE FROM notes WHERE customer_id = 5`)
	res, err = e.exec.Execute(ctx, commands.Replicate{Route: e.route(), Slot: "stoprep_slot"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(t, time.Minute)
	e.verifyCopy(t)
	if _, err := e.exec.Execute(ctx, commands.StopTask{Task: res.Rows[0][0].(string)}); err != nil {
		t.Fatal(err)
	}
}

// TestCutoverFinish: STOP_TASK on a reverse_streaming task finishes the
// migration: reverse slots, origins and reshard's state are removed.
func TestCutoverFinish(t *testing.T) {
	e, src := sourceEnv(t, "cutfin", 300, "")
	id := e.reshardStreaming(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := e.exec.Execute(ctx, commands.Cutover{Task: id})
	if err != nil {
		t.Fatal(err)
	}
	slot := strings.TrimSuffix(res.Rows[0][2].(string), "_rev")
	if _, err := e.exec.Execute(ctx, commands.StopTask{Task: id}); err != nil {
		t.Fatal(err)
	}
	if state, msg := e.taskState(t); state != "done" {
		t.Fatalf("task after finishing: %s %s", state, msg)
	}
	for k, d := range e.dst {
		if n := d.one(t, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); n != "0" {
			t.Fatalf("shard %d keeps %s slots", k, n)
		}
		if n := d.one(t, `SELECT count(*) FROM pg_namespace WHERE nspname = 'reshard'`); n != "0" {
			t.Fatalf("shard %d keeps reshard's state", k)
		}
	}
	if n := src.one(t, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); n != "0" {
		t.Fatalf("the source keeps %s slots", n)
	}
	// Origins are per instance: this migration's are named after its slot.
	for _, n := range []node{e.dst[0], e.dst[1], src} {
		if c := n.one(t, fmt.Sprintf(`SELECT count(*) FROM pg_replication_origin WHERE strpos(roname, '%s') > 0`, slot)); c != "0" {
			t.Fatalf("%s keeps %s replication origins of the migration: %v", n.db, c, query(t, n.inst, n.db, "SELECT roname FROM pg_replication_origin"))
		}
	}
}
