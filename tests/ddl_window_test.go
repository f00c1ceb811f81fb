package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/commands"
)

// holdingPgDump writes a pg_dump that, when asked to dump at an exported
// snapshot (RESHARD's dump, after its slots are made), adds a line to
// dir/waiting and waits for dir/go before running the real pg_dump. It
// cannot outlive the test: the wait gives up (exit 1, no dump) when
// dir/stop exists (the test has ended), when dir is gone or after five
// minutes.
func holdingPgDump(t *testing.T, dir string) string {
	t.Helper()
	real, err := exec.LookPath(catalog.DefaultPgDump)
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	script := fmt.Sprintf(`#!/bin/sh
for a in "$@"; do
	if [ "$a" = "--snapshot" ]; then
		echo dump >> %[1]q
		n=0
		while [ ! -e %[2]q ]; do
			n=$((n + 1))
			if [ -e %[4]q ] || [ ! -d %[5]q ] || [ $n -gt 6000 ]; then
				echo "held pg_dump gave up waiting for %[2]s" >&2
				exit 1
			fi
			sleep 0.05
		done
	fi
done
exec %[3]q "$@"
`, filepath.Join(dir, "waiting"), filepath.Join(dir, "go"), real, filepath.Join(dir, "stop"), dir)
	path := filepath.Join(dir, "pg_dump")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// Registered after dir's removal, so it runs before it: a dump still
	// held gives up.
	t.Cleanup(func() { _ = os.WriteFile(filepath.Join(dir, "stop"), nil, 0o644) })
	return path
}

// windowStatements are the DDL run while RESHARD waits between its slot
// and its dump: a column added with a default, one renamed, one dropped,
// an enum value added and used, a table created with rows, an index. Six
// of them are DDL.
var windowStatements = []string{
	`ALTER TABLE customers ADD COLUMN tier text NOT NULL DEFAULT 'basic'`,
	`ALTER TABLE tickets RENAME COLUMN body TO text_body`,
	`ALTER TYPE mood ADD VALUE 'angry'`,
	`INSERT INTO tickets (customer_id, status, text_body) VALUES (7, 'angry', 'in the window')`,
	`BEGIN; CREATE TABLE reviews (id serial PRIMARY KEY, customer_id int REFERENCES customers (id), stars int NOT NULL);
	 INSERT INTO reviews (customer_id, stars) SELECT 1 + g % 100, g % 5 FROM generate_series(1, 300) g; COMMIT`,
	`ALTER TABLE scratch DROP COLUMN gone`,
	`CREATE INDEX tickets_status_idx ON tickets (status)`,
}

// TestDDLInTheDumpWindow: RESHARD is held after its slots are made and
// before its pg_dump runs (a pg_dump that waits), the application's DDL
// and writes run in that window, then the dump goes on at the slot's
// snapshot. The window is closed: the dump has the schema of the copied
// rows, the stream carries the window's statements (SHOW DDL lists each
// applied), and the shards end equal to the source, catalog and rows.
// With the dump taken before the slot (the old order) the shards would
// miss the window's statements, or have them twice. A table dropped or
// renamed in the window (pg_dump cannot lock it by its name at the
// snapshot) makes RESHARD take new slots and dump again: the statements
// are then in the dump, and the shards end equal too.
func TestDDLInTheDumpWindow(t *testing.T) {
	for _, c := range []struct {
		name  string
		stmts []string
		// dumps and carried are the dumps at a snapshot and the DDL
		// statements the stream carries.
		dumps, carried int
	}{
		{"carried", windowStatements, 1, 6},
		{"dropped", append(append([]string{}, windowStatements...), `DROP TABLE doomed`, `ALTER TABLE scratch RENAME TO scratch_renamed`), 2, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, src := ddlEnv(t, "ddlwin"+c.name[:1], "")
			src.exec(t, `ALTER TABLE scratch ADD COLUMN gone text DEFAULT 'x';
				CREATE TABLE doomed (id int PRIMARY KEY, v text); INSERT INTO doomed SELECT g, 'd' FROM generate_series(1, 10) g`)
			dir := t.TempDir()
			e.usePgDump(t, holdingPgDump(t, dir))
			stop := make(chan struct{})
			var wg sync.WaitGroup
			ddlWriter(t, src, stop, &wg)
			ctx := context.Background()
			if _, err := e.exec.Execute(ctx, commands.Reshard{Route: e.route()}); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(time.Minute); ; {
				if _, err := os.Stat(filepath.Join(dir, "waiting")); err == nil {
					break
				}
				if state, msg := e.taskState(t); state == "failed" || time.Now().After(deadline) {
					t.Fatalf("RESHARD never reached its dump: %s %s", state, msg)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if n := src.one(t, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); n != "1" {
				t.Fatalf("RESHARD dumps with %s slots on the source, want its slot made first", n)
			}
			for _, sql := range c.stmts {
				src.exec(t, sql)
			}
			if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			e.waitState(t, "streaming", 3*time.Minute)
			time.Sleep(300 * time.Millisecond)
			close(stop)
			wg.Wait()
			e.caughtUp(t, 2*time.Minute)
			e.compareDDL(t, ddlKeys)
			b, err := os.ReadFile(filepath.Join(dir, "waiting"))
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(b), "dump"); n != c.dumps {
				t.Errorf("RESHARD dumped at a snapshot %d times, want %d", n, c.dumps)
			}
			var got int
			for _, d := range e.dst {
				var n int
				fmt.Sscan(d.one(t, `SELECT count(*) FROM tickets WHERE text_body = 'in the window' AND status = 'angry'`), &n)
				got += n
			}
			if got != 1 {
				t.Errorf("the shards have the window's ticket %d times", got)
			}
			states := e.ddlStates(t)
			for stmt, st := range states {
				if !strings.HasPrefix(st, "applied 0,1") {
					t.Errorf("SHOW DDL: %q is %s", stmt, st)
				}
			}
			if len(states) != c.carried {
				t.Errorf("SHOW DDL lists %d statements, want %d: %v", len(states), c.carried, states)
			}
			if n := src.one(t, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); n != "1" {
				t.Errorf("the source keeps %s slots, want the stream's alone", n)
			}
		})
	}
}
