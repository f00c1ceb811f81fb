package tests

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/commands"
)

// holdTickets makes the shards' apply of a tickets row whose body is body
// wait (a row trigger, ENABLE ALWAYS, takes a shared advisory lock the
// test holds exclusively) until release is called.
func holdTickets(t *testing.T, e *copyEnv, body string) (release func()) {
	t.Helper()
	ctx := context.Background()
	var conns []*pgx.Conn
	for _, d := range e.dst {
		d.exec(t, fmt.Sprintf(`CREATE FUNCTION hold_ticket() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN IF NEW.body = '%s' THEN PERFORM pg_advisory_xact_lock_shared(4243); END IF; RETURN NEW; END $$;
			CREATE TRIGGER hold_ticket BEFORE INSERT ON tickets FOR EACH ROW EXECUTE FUNCTION hold_ticket();
			ALTER TABLE tickets ENABLE ALWAYS TRIGGER hold_ticket`, body))
		conn, err := d.inst.Connect(ctx, d.db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(4243)`); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			for _, c := range conns {
				c.Close(ctx)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// waitLockWait waits until a session waits for an advisory lock on one of
// the shards, and returns that shard.
func waitLockWait(t *testing.T, e *copyEnv, timeout time.Duration) int {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; {
		for k, d := range e.dst {
			if d.one(t, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`) != "0" {
				return k
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the stream never reached the held row")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDDLKillBetweenStatementAndChanges: reshard serve streams under a
// write load; a source transaction writes a row, adds a column and writes
// rows with it. The shard's apply of the row after the statement is held
// (so the statement ran in the shard's open transaction), reshard is
// killed with SIGKILL there and started again: every shard has the
// statement once (no "already exists", one record in reshard.ddl_applied)
// and every row of the transaction once, and the shards end equal to the
// source.
func TestDDLKillBetweenStatementAndChanges(t *testing.T) {
	e, src := ddlEnv(t, "ddlkill", "")
	s := newServeEnv(t, e)
	s.start(t, "")
	s.id = s.run(t, "RESHARD src dst all_tables")[0][0]
	s.waitState(t, "streaming", 2*time.Minute)
	release := holdTickets(t, e, "after the statement")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	ddlWriter(t, src, stop, &wg)
	time.Sleep(200 * time.Millisecond)
	src.exec(t, `BEGIN;
		INSERT INTO tickets (customer_id, body) VALUES (11, 'before the statement');
		ALTER TABLE tickets ADD COLUMN priority int NOT NULL DEFAULT 3;
		INSERT INTO tickets (customer_id, body, priority) VALUES (12, 'after the statement', 9);
		UPDATE tickets SET priority = 5 WHERE id <= 50;
		COMMIT`)
	k := waitLockWait(t, e, time.Minute)
	// The statement ran in shard k's open transaction: other sessions do
	// not see it yet.
	if n := e.dst[k].one(t, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'tickets' AND column_name = 'priority'`); n != "0" {
		t.Fatalf("shard %d committed the statement before the changes after it", k)
	}
	s.admin.Close(context.Background())
	s.admin = nil
	s.proc.Kill()
	t.Logf("reshard killed with SIGKILL while shard %d applied the row after the statement", k)
	release()
	s.start(t, "")
	s.waitState(t, "streaming", 2*time.Minute)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if !e.waitCaughtUpOrStop(2*time.Minute, nil) {
		state, msg := s.task(t)
		t.Fatalf("the stream did not catch up after the restart: %s %s\n%s", state, msg, lastOutput(s.proc.Output(), 40))
	}
	if state, msg := s.task(t); state != "streaming" {
		t.Fatalf("task after the restart: %s %s", state, msg)
	}
	for k, d := range e.dst {
		d.exec(t, `DROP TRIGGER hold_ticket ON tickets; DROP FUNCTION hold_ticket()`)
		if n := d.one(t, `SELECT count(*) FROM reshard.ddl_applied WHERE statement LIKE '%ADD COLUMN priority%'`); n != "1" {
			t.Errorf("shard %d records the statement %s times", k, n)
		}
	}
	var after, before int
	for _, d := range e.dst {
		var a, b int
		fmt.Sscan(d.one(t, `SELECT count(*) FROM tickets WHERE body = 'after the statement' AND priority = 9`), &a)
		fmt.Sscan(d.one(t, `SELECT count(*) FROM tickets WHERE body = 'before the statement' AND priority = 3`), &b)
		after, before = after+a, before+b
	}
	if after != 1 || before != 1 {
		t.Errorf("the transaction's rows on the shards: before the statement %d, after it %d, want 1 each", before, after)
	}
	e.compareDDL(t, ddlKeys)
	rows := s.run(t, "SHOW DDL")
	if len(rows) != 1 || rows[0][7] != "applied" {
		t.Errorf("SHOW DDL after the restart: %v", rows)
	}
}

// reverseWriter is the application writing on destination shard d after
// a cutover: updates of its customers, tickets inserted for its own
// customers (so they stay on their shard) and deleted.
func reverseWriter(t *testing.T, d node, stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx := context.Background()
		conn, err := d.inst.Connect(ctx, d.db)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			sql := fmt.Sprintf(`UPDATE customers SET region = 'rv%d' WHERE id = (SELECT id FROM customers ORDER BY id OFFSET %d LIMIT 1)`, i, i%300)
			switch i % 3 {
			case 1:
				sql = fmt.Sprintf(`INSERT INTO tickets (customer_id, body) SELECT customer_id, 'rv%d' FROM tickets WHERE customer_id IS NOT NULL ORDER BY id OFFSET %d LIMIT 1`, i, i%100)
			case 2:
				sql = fmt.Sprintf(`DELETE FROM tickets WHERE id = (SELECT id FROM tickets ORDER BY id OFFSET %d LIMIT 1)`, 200+i%100)
			}
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Errorf("writer on %s: %s: %v", d.db, sql, err)
				return
			}
		}
	}()
}

// TestDDLAfterCutover: after CUTOVER, the application writes on the
// shards and runs its DDL on each of them (through the pooler): the
// reverse stream applies shard 0's statements on the old database (shard
// 1's matched), which ends equal to the shards, catalog and rows. STOP_TASK
// then finishes the migration, and no database keeps an event trigger.
func TestDDLAfterCutover(t *testing.T) {
	e, src := ddlEnv(t, "ddlrev", "")
	id := e.reshardStreaming(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	ddlWriter(t, src, stop, &wg)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	e.caughtUp(t, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.exec.Execute(ctx, commands.Cutover{Task: id}); err != nil {
		t.Fatalf("CUTOVER: %v", err)
	}
	for k, d := range e.dst {
		if n := d.one(t, `SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'reshard_ddl%'`); n != "2" {
			t.Fatalf("shard %d has %s of reshard's event triggers after CUTOVER, want 2", k, n)
		}
	}
	stop = make(chan struct{})
	for _, d := range e.dst {
		reverseWriter(t, d, stop, &wg)
	}
	time.Sleep(200 * time.Millisecond)
	stmts := []string{
		`ALTER TABLE customers ADD COLUMN tier text NOT NULL DEFAULT 'basic'`,
		`ALTER TABLE tickets ADD COLUMN priority int DEFAULT 3`,
		`CREATE INDEX tickets_status_idx ON tickets (status)`,
		`CREATE TABLE reviews (id bigint PRIMARY KEY, customer_id bigint, stars int NOT NULL)`,
	}
	for _, sql := range stmts {
		for _, d := range e.dst {
			d.exec(t, sql)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for k, d := range e.dst {
		d.exec(t, fmt.Sprintf(`INSERT INTO tickets (customer_id, body, priority) SELECT customer_id, 'prio', 1 FROM tickets WHERE customer_id IS NOT NULL ORDER BY id LIMIT 5;
			INSERT INTO reviews SELECT c.id * 10 + %d, c.id, 4 FROM customers c ORDER BY c.id LIMIT 20`, k))
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	// Each shard's reverse stream has caught up once a marker written
	// there last reached the old database.
	for k, d := range e.dst {
		d.exec(t, fmt.Sprintf(`UPDATE customers SET region = 'marker%d' WHERE id = (SELECT min(id) FROM customers)`, k))
	}
	for _, d := range e.dst {
		d.exec(t, `INSERT INTO countries VALUES ('MK', 'marker')`)
	}
	for deadline := time.Now().Add(40 * time.Second); ; {
		if src.one(t, `SELECT count(*) FROM customers WHERE region LIKE 'marker%'`) == "2" && src.one(t, `SELECT count(*) FROM countries WHERE code = 'MK'`) == "1" {
			break
		}
		if state, msg := e.taskState(t); state == "failed" || time.Now().After(deadline) {
			res, _ := e.exec.Execute(context.Background(), commands.Show{Name: "ddl"})
			var lines []string
			if res != nil {
				for _, r := range res.Rows {
					lines = append(lines, fmt.Sprint(r))
				}
			}
			t.Fatalf("the reverse streams did not catch up: %s %s; markers %s, SHOW DDL:\n%s", state, msg,
				src.one(t, `SELECT count(*) FROM customers WHERE region LIKE 'marker%'`), strings.Join(lines, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.compareDDLCutOver(t, ddlKeys)
	// What the reverse streams applied on the old database is reshard's,
	// not the application's: its capture there records none of it (a
	// rollback's forward stream would carry it back to the shards).
	if n := src.one(t, `SELECT count(*) FROM reshard.ddl`); n != "0" {
		t.Errorf("the old database captured %s statements the reverse streams applied there: %s", n,
			strings.Join(query(t, src.inst, src.db, `SELECT statement FROM reshard.ddl ORDER BY id`), "; "))
	}
	res, err := e.exec.Execute(ctx, commands.Show{Name: "ddl"})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, r := range res.Rows {
		count[fmt.Sprint(r[7])]++
	}
	if count["applied"] != len(stmts) || count["matched"] != len(stmts) {
		var lines []string
		for _, r := range res.Rows {
			lines = append(lines, fmt.Sprint(r[1:9]))
		}
		t.Errorf("SHOW DDL after CUTOVER: %v, want %d applied (shard 0's) and %d matched:\n%s", count, len(stmts), len(stmts), strings.Join(lines, "\n"))
	}
	if _, err := e.exec.Execute(ctx, commands.StopTask{Task: id}); err != nil {
		t.Fatal(err)
	}
	if state, msg := e.taskState(t); state != "done" {
		t.Fatalf("task after finishing: %s %s", state, msg)
	}
	e.noCapture(t, "after the migration finished")
}

// TestDDLAbortAfterCutover: ABORT_TASK of a migration streaming back to
// the old database after CUTOVER (capture installed on the source and, by
// the cutover, on every shard) removes the event triggers, their
// functions and reshard.ddl from every database.
func TestDDLAbortAfterCutover(t *testing.T) {
	e, _ := ddlEnv(t, "ddlabrev", "")
	id := e.reshardStreaming(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.exec.Execute(ctx, commands.Cutover{Task: id}); err != nil {
		t.Fatalf("CUTOVER: %v", err)
	}
	for _, n := range e.nodes() {
		if c := n.one(t, `SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'reshard_ddl%'`); c != "2" {
			t.Fatalf("%s has %s of reshard's event triggers after CUTOVER, want 2", n.db, c)
		}
	}
	if _, err := e.exec.Execute(ctx, commands.AbortTask{Task: id}); err != nil {
		t.Fatalf("ABORT_TASK after CUTOVER: %v", err)
	}
	e.noCapture(t, "after ABORT_TASK of a cut-over task")
}
