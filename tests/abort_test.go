package tests

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/sync/cutover"
	"github.com/reshard/reshard/sync/migrate"
)

// persistedStep is the step migration id recorded on the env's shard 0.
func (e *copyEnv) persistedStep(t *testing.T, id string) string {
	t.Helper()
	rows := query(t, e.dst[0].inst, e.dst[0].db, fmt.Sprintf(`SELECT step FROM reshard.migrations WHERE id = '%s'`, id))
	if len(rows) != 1 {
		return ""
	}
	return rows[0]
}

func (e *copyEnv) waitPersistedStep(t *testing.T, id, step string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); e.persistedStep(t, id) != step; {
		if time.Now().After(deadline) {
			state, msg := e.taskState(t)
			t.Fatalf("task %s never reached step %s (%s %s)", id, step, state, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cutoverAsync runs CUTOVER in the background; the channel gets its error.
func (e *copyEnv) cutoverAsync(id string) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		_, err := e.exec.Execute(ctx, commands.Cutover{Task: id})
		done <- err
	}()
	return done
}

func (e *copyEnv) mustCutover(t *testing.T, id, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := e.exec.Execute(ctx, commands.Cutover{Task: id})
	if err != nil {
		t.Fatalf("CUTOVER %s: %v", id, err)
	}
	if res.Rows[0][1] != want {
		t.Fatalf("CUTOVER answered %v, want %s", res.Rows, want)
	}
}

// TestAbortFromEveryState: ABORT_TASK ends a migration in every state —
// copying, streaming, stopped, failed, mid-cutover, reverse_streaming,
// mid-rollback, after a rollback — and leaves no slot, no replication
// origin and no reshard schema on any server; WITH DATA also empties the
// shards (refused once they are the application's side); both sides take
// writes where they should, and RESHARD can start over.
func TestAbortFromEveryState(t *testing.T) {
	cases := []struct {
		name, pause string
		withData    bool
		// into drives the migration into the state; it returns what to
		// wait for once ABORT_TASK answered (a CUTOVER it left pending).
		into func(t *testing.T, e *copyEnv, id string) <-chan error
		// reverse: the shards are the application's side at the end.
		reverse bool
	}{
		{name: "copying", withData: true, into: func(t *testing.T, e *copyEnv, id string) <-chan error {
			return nil // the env starts the migration in copying
		}},
		{name: "streaming", into: func(t *testing.T, e *copyEnv, id string) <-chan error { return nil }},
		{name: "stopped", withData: true, into: func(t *testing.T, e *copyEnv, id string) <-chan error {
			if _, err := e.exec.Execute(context.Background(), commands.StopTask{Task: id}); err != nil {
				t.Fatal(err)
			}
			return nil
		}},
		{name: "failed", into: func(t *testing.T, e *copyEnv, id string) <-chan error {
			// A change the shards cannot take fails the stream for good.
			e.dst[1].exec(t, `ALTER TABLE countries ADD CONSTRAINT short_names CHECK (length(name) < 20)`)
			e.src[0].exec(t, `UPDATE countries SET name = repeat('x', 30) WHERE code = 'NL'`)
			for deadline := time.Now().Add(time.Minute); ; {
				if state, _ := e.taskState(t); state == "failed" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the stream did not fail")
				}
				time.Sleep(50 * time.Millisecond)
			}
			return nil
		}},
		{name: "mid-cutover", pause: cutover.StepReverseSlots, into: func(t *testing.T, e *copyEnv, id string) <-chan error {
			done := e.cutoverAsync(id)
			e.waitPersistedStep(t, id, cutover.StepReverseSlots)
			return done
		}},
		{name: "reverse_streaming", reverse: true, into: func(t *testing.T, e *copyEnv, id string) <-chan error {
			e.mustCutover(t, id, "reverse_streaming")
			return nil
		}},
		{name: "mid-rollback", pause: cutover.RollbackForwardSlots, reverse: true, into: func(t *testing.T, e *copyEnv, id string) <-chan error {
			e.mustCutover(t, id, "reverse_streaming")
			done := e.cutoverAsync(id)
			e.waitPersistedStep(t, id, cutover.RollbackForwardSlots)
			return done
		}},
		{name: "after a rollback", withData: true, into: func(t *testing.T, e *copyEnv, id string) <-chan error {
			e.mustCutover(t, id, "reverse_streaming")
			e.mustCutover(t, id, "streaming")
			return nil
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.pause != "" {
				t.Setenv(migrate.PauseEnv, c.pause)
			}
			e := newCopyEnv(t, fmt.Sprintf("abort%d", i), 1, 2, "")
			src := e.src[0]
			src.exec(t, copySchema)
			loadData(t, src, 0, 1, 300)
			var id string
			if c.name == "copying" {
				id = e.reshardCopying(t)
			} else {
				id = e.reshardStreaming(t)
			}
			pending := c.into(t, e, id)
			state, _ := e.taskState(t)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if c.reverse {
				// WITH DATA would delete the application's rows.
				_, err := e.exec.Execute(ctx, commands.AbortTask{Task: id, WithData: true})
				var ce *commands.Error
				if !errors.As(err, &ce) || ce.Code != "55000" || !strings.Contains(ce.Message, "application's side") {
					t.Fatalf("ABORT_TASK WITH DATA after the cutover: %v", err)
				}
			}
			res, err := e.exec.Execute(ctx, commands.AbortTask{Task: id, WithData: c.withData})
			if err != nil {
				t.Fatalf("ABORT_TASK in state %s: %v", state, err)
			}
			if pending != nil {
				<-pending
			}
			var removed []string
			for _, r := range res.Rows {
				removed = append(removed, fmt.Sprintf("%s %s", r[2], r[3]))
			}
			t.Logf("ABORT_TASK in state %s removed: %s", state, strings.Join(removed, "; "))
			if !strings.Contains(strings.Join(removed, "\n"), "slot reshard_") || !strings.Contains(strings.Join(removed, "\n"), "schema reshard") {
				t.Fatalf("ABORT_TASK does not say it removed the slot and the state: %v", res.Rows)
			}
			if got, msg := e.taskState(t); got != "aborted" || !strings.Contains(msg, "removed") {
				t.Fatalf("after ABORT_TASK the task is %s: %s", got, msg)
			}
			if left := e.slots(t); len(left) != 0 {
				t.Fatalf("slots left after ABORT_TASK in state %s: %v", state, left)
			}
			checkNoOrigins(t, e, e.reshardSlotStem(t))
			for _, n := range e.nodes() {
				if c := n.one(t, `SELECT count(*) FROM pg_namespace WHERE nspname = 'reshard'`); c != "0" {
					t.Fatalf("%s keeps reshard's state after ABORT_TASK", n.db)
				}
			}
			// The side that takes the writes takes them.
			writable := []node{src}
			if c.reverse {
				writable = e.dst
			}
			for _, n := range writable {
				if err := n.inst.Exec(ctx, n.db, `INSERT INTO countries VALUES ('AB', 'after abort')`); err != nil {
					t.Fatalf("%s does not take writes after ABORT_TASK: %v", n.db, err)
				}
			}
			if c.withData {
				for k, d := range e.dst {
					for _, table := range copyTables {
						if n := d.one(t, "SELECT count(*) FROM "+table); n != "0" {
							t.Fatalf("WITH DATA left %s rows in %s on shard %d", n, table, k)
						}
					}
				}
				// A fresh RESHARD starts over.
				for _, d := range e.dst {
					d.exec(t, `DROP TRIGGER IF EXISTS slow_copy ON orders`)
				}
				again := e.reshardStreaming(t)
				if again == id {
					t.Fatalf("RESHARD after the abort continued task %s", id)
				}
				e.waitSame(t, time.Minute)
				if _, err := e.exec.Execute(ctx, commands.AbortTask{Task: again}); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// reshardCopying starts RESHARD with the copy slowed on the shards and
// returns once it copies.
func (e *copyEnv) reshardCopying(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	if _, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: commands.PhasePre, Route: e.route()}); err != nil {
		t.Fatal(err)
	}
	for _, d := range e.dst {
		d.exec(t, `CREATE FUNCTION slow_copy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.01); RETURN NEW; END $$;
			CREATE TRIGGER slow_copy BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION slow_copy();
			ALTER TABLE orders ENABLE ALWAYS TRIGGER slow_copy`)
	}
	res, err := e.exec.Execute(ctx, commands.Reshard{Route: e.route()})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Rows[0][0].(string)
	for deadline := time.Now().Add(time.Minute); ; {
		copies, err := e.exec.Execute(ctx, commands.Show{Name: "table_copies"})
		if err != nil {
			t.Fatal(err)
		}
		copying := false
		for _, r := range copies.Rows {
			copying = copying || (r[1] == "orders" && r[2] == "copying")
		}
		if state, msg := e.taskState(t); state == "copying" && copying {
			break
		} else if state == "failed" || time.Now().After(deadline) {
			t.Fatalf("RESHARD: %s %s", state, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return id
}
