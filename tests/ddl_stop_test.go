package tests

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/commands"
)

// noCapture checks that no database of the env has an event trigger or
// reshard's captured statements left.
func (e *copyEnv) noCapture(t *testing.T, when string) {
	t.Helper()
	for _, n := range e.nodes() {
		if c := n.one(t, `SELECT count(*) FROM pg_event_trigger`); c != "0" {
			t.Errorf("%s: %s keeps %s event triggers", when, n.db, c)
		}
		if c := n.one(t, `SELECT count(*) FROM pg_proc p JOIN pg_namespace s ON s.oid = p.pronamespace WHERE s.nspname = 'reshard'`); c != "0" {
			t.Errorf("%s: %s keeps %s of reshard's functions", when, n.db, c)
		}
		if c := n.one(t, `SELECT count(*) FROM pg_class WHERE oid = to_regclass('reshard.ddl')`); c != "0" {
			t.Errorf("%s: %s keeps reshard.ddl", when, n.db)
		}
	}
}

// waitFailed waits until the migration fails and returns its message
// (SHOW TASKS); after timeout it fails the test with what, the state and
// the message.
func (e *copyEnv) waitFailed(t *testing.T, timeout time.Duration, what string) string {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; {
		state, msg := e.taskState(t)
		if state == "failed" {
			return msg
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s %s", what, state, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDDLUncarriableStops: a statement that would move rows between
// shards (changing the sharding column's type; dropping it) stops the
// task under a write load: SHOW TASKS says failed, naming the statement,
// why and what to do; SHOW DDL lists it failed; the shards hold nothing of
// it nor of the changes after it, and equal the source as it was before
// it. ABORT_TASK then removes the event triggers.
func TestDDLUncarriableStops(t *testing.T) {
	for _, c := range []struct {
		name, sql, why, todo string
	}{
		{"type", `ALTER TABLE tickets ALTER COLUMN customer_id TYPE numeric`,
			"it changes the type of sharding column customer_id of table public.tickets from integer to numeric", "only after the migration is finished (after CUTOVER)"},
		{"drop", `ALTER TABLE tickets DROP COLUMN customer_id`,
			"it drops sharding column customer_id of table public.tickets", "only after the migration is finished (after CUTOVER)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, src := ddlEnv(t, "ddlun"+c.name, "")
			id := e.reshardStreaming(t)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go writer(t, src, stop, &wg)
			time.Sleep(300 * time.Millisecond)
			close(stop)
			wg.Wait()
			e.caughtUp(t, time.Minute)
			e.compareDDL(t, ddlKeys)
			stop = make(chan struct{})
			wg.Add(1)
			go writerFrom(t, src, 700000, 0, stop, &wg)
			src.exec(t, `INSERT INTO tickets (customer_id, body) VALUES (21, 'before it')`)
			src.exec(t, c.sql)
			src.exec(t, `INSERT INTO tickets (body) VALUES ('after it')`)
			msg := e.waitFailed(t, time.Minute, "the task went on past "+c.sql)
			close(stop)
			wg.Wait()
			t.Logf("SHOW TASKS: %s", msg)
			for _, want := range []string{c.sql, c.why, c.todo, "ABORT", "INSERT INTO reshard.ddl_applied", "_0' on shard 0", "_1' on shard 1"} {
				if !strings.Contains(msg, want) {
					t.Errorf("the failure does not say %q: %s", want, msg)
				}
			}
			if st := e.ddlStates(t)[c.sql]; !strings.HasPrefix(st, "failed") {
				t.Errorf("SHOW DDL lists %s as %q", c.sql, st)
			}
			var before, after int
			for k, d := range e.dst {
				if typ := d.one(t, `SELECT coalesce(max(data_type), 'none') FROM information_schema.columns WHERE table_name = 'tickets' AND column_name = 'customer_id'`); typ != "integer" {
					t.Errorf("shard %d tickets.customer_id is %s after the failure", k, typ)
				}
				var b, a int
				fmt.Sscan(d.one(t, `SELECT count(*) FROM tickets WHERE body = 'before it'`), &b)
				fmt.Sscan(d.one(t, `SELECT count(*) FROM tickets WHERE body = 'after it'`), &a)
				before, after = before+b, after+a
			}
			if before != 1 || after != 0 {
				t.Errorf("rows around the statement on the shards: before it %d (want 1), after it %d (want 0)", before, after)
			}
			if _, err := e.exec.Execute(context.Background(), commands.AbortTask{Task: id}); err != nil {
				t.Fatalf("ABORT_TASK: %v", err)
			}
			e.noCapture(t, "after ABORT_TASK")
		})
	}
}

// severalSources is a DDL env of two source shards and two destination
// shards: the copy schema and the DDL schema on each source shard, the
// sharded rows of each its own (ids ≡ shard mod 2, tickets' ids apart),
// the omni tables the same on both, orders without their foreign key.
func severalSources(t *testing.T, name string) *copyEnv {
	t.Helper()
	e := newCopyEnv(t, name, 2, 2, ddlGeneral)
	for i, s := range e.src {
		s.exec(t, copySchema)
		loadData(t, s, i, 2, 2000)
		s.exec(t, ddlSchema)
		// The writer's orders reference customers of either source shard.
		s.exec(t, fmt.Sprintf(`ALTER TABLE orders REPLICA IDENTITY FULL; ALTER TABLE orders DROP CONSTRAINT orders_customer_id_fkey;
			UPDATE tickets SET id = id + %[1]d; SELECT setval('tickets_id_seq', %[1]d + 100000)`, i*1000000))
	}
	return e
}

// TestDDLSeveralSourceShards: with two source shards, the application's
// DDL runs on both (as a pooler sends it) under a write load on both:
// source shard 0's statement is applied on the shards, source shard 1's is
// matched to it (SHOW DDL: applied and matched), and the shards end equal
// to the union of the sources, catalog and rows. Then the source shards
// run different statements: the task stops, naming both.
func TestDDLSeveralSourceShards(t *testing.T) {
	e := severalSources(t, "ddl2s")
	e.reshardStreaming(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	ddlWriter(t, e.src[0], stop, &wg)
	ticketsWriter(t, e.src[1], stop, &wg)
	time.Sleep(200 * time.Millisecond)
	same := []string{
		`ALTER TABLE customers ADD COLUMN tier text NOT NULL DEFAULT 'basic'`,
		`ALTER TABLE tickets ADD COLUMN priority int DEFAULT 3`,
		`ALTER TABLE tickets RENAME COLUMN body TO text_body`,
		`CREATE TABLE reviews (id bigint PRIMARY KEY, customer_id int, stars int NOT NULL)`,
		`CREATE INDEX tickets_status_idx ON tickets (status)`,
		`ALTER TABLE tickets DROP COLUMN priority`,
	}
	for _, sql := range same {
		for _, s := range e.src {
			s.exec(t, sql)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i, s := range e.src {
		s.exec(t, fmt.Sprintf(`INSERT INTO reviews SELECT g, g %% 100, g %% 5 FROM generate_series(1, 400) g WHERE g %% 2 = %d`, i))
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	e.caughtUp(t, 2*time.Minute)
	// Source shard 1's stream has its own slot: wait for its last rows.
	for deadline := time.Now().Add(time.Minute); ; {
		var n int
		for _, d := range e.dst {
			var c int
			fmt.Sscan(d.one(t, `SELECT count(*) FROM reviews`), &c)
			n += c
		}
		if n == 400 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reviews: %d of 400 rows on the shards", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.compareDDL(t, ddlKeys)
	res, err := e.exec.Execute(context.Background(), commands.Show{Name: "ddl"})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, r := range res.Rows {
		count[fmt.Sprint(r[7])]++
	}
	if count["applied"] != len(same) || count["matched"] != len(same) || len(res.Rows) != 2*len(same) {
		t.Errorf("SHOW DDL: %v, want %d applied (source shard 0) and %d matched (source shard 1)", count, len(same), len(same))
	}
	for k, d := range e.dst {
		if n := d.one(t, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'tier'`); n != "1" {
			t.Errorf("shard %d has customers.tier %s times", k, n)
		}
	}

	e.src[0].exec(t, `ALTER TABLE tickets ADD COLUMN on_zero int`)
	e.src[1].exec(t, `ALTER TABLE tickets ADD COLUMN on_one int`)
	msg := e.waitFailed(t, time.Minute, "different statements on the source shards did not stop the task")
	t.Logf("SHOW TASKS: %s", msg)
	for _, want := range []string{"ADD COLUMN on_zero", "ADD COLUMN on_one", "source shard 1", "source shard 0", "run the same statement on every source shard"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the failure does not say %q: %s", want, msg)
		}
	}
}
