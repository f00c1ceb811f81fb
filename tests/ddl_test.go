package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/tests/pgtest"
)

// ddlGeneral turns DDL replication on.
const ddlGeneral = `resharding_ddl = "replicate"`

// ddlSchema adds to the copy schema what the DDL tests change: an enum
// column, and a gate table (the biggest, copied first by one worker per
// source shard) whose copy a test can hold on the shards.
const ddlSchema = `
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE TABLE tickets (id serial PRIMARY KEY, customer_id int, status mood NOT NULL DEFAULT 'calm', body text);
INSERT INTO tickets (customer_id, status, body) SELECT 1 + g % 200, (ARRAY['calm','busy'])[1 + g % 2]::mood, 't' || g FROM generate_series(1, 500) g;
CREATE TABLE gate (id bigint PRIMARY KEY, pad text);
INSERT INTO gate SELECT g, repeat('x', 400) FROM generate_series(1, 20000) g;
CREATE TABLE scratch (id int PRIMARY KEY, v text);
INSERT INTO scratch SELECT g, 's' || g FROM generate_series(1, 100) g;
`

// ddlEnv is a copy env with DDL replication on, the copy schema and the
// DDL schema loaded on its source.
func ddlEnv(t *testing.T, name string, general string) (*copyEnv, node) {
	t.Helper()
	e := newCopyEnv(t, name, 1, 2, ddlGeneral+"\n"+general)
	src := e.src[0]
	src.exec(t, copySchema)
	loadData(t, src, 0, 1, 2000)
	src.exec(t, ddlSchema)
	src.exec(t, `ALTER TABLE orders REPLICA IDENTITY FULL`)
	return e, src
}

// ddlWriter is the write load of the DDL tests: the copy tests' writer on
// customers and orders (whose columns no DDL below touches), plus inserts
// and updates of tickets through every column it has at the time (it
// reads them from the catalog before each write, so columns added,
// renamed or dropped meanwhile are written as they are).
func ddlWriter(t *testing.T, n node, stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Add(1)
	go writer(t, n, stop, wg)
	ticketsWriter(t, n, stop, wg)
}

// ticketsWriter is ddlWriter's load on tickets alone.
func ticketsWriter(t *testing.T, n node, stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx := context.Background()
		conn, err := n.inst.Connect(ctx, n.db)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var body string
			if err := conn.QueryRow(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = 'tickets'::regclass AND attname IN ('body', 'text_body') AND NOT attisdropped`).Scan(&body); err != nil {
				t.Errorf("tickets writer: %v", err)
				return
			}
			sql := fmt.Sprintf(`INSERT INTO tickets (customer_id, %s) VALUES (%d, 'w%d')`, body, 1+i%200, i)
			if i%3 == 1 {
				sql = fmt.Sprintf(`UPDATE tickets SET %[1]s = %[1]s || '.' WHERE id = %[2]d`, body, 1+i%400)
			}
			if _, err := conn.Exec(ctx, sql); err != nil {
				if strings.Contains(err.Error(), "42703") {
					continue // renamed between the two: again
				}
				t.Errorf("tickets writer: %s: %v", sql, err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
}

// publishedTables lists the source's published tables (schema.name).
func publishedTables(t *testing.T, src node) []string {
	t.Helper()
	return query(t, src.inst, src.db, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = 'all_tables' AND schemaname <> 'reshard' ORDER BY 1`)
}

// tableCatalog describes a table as a node has it, for comparing the
// source's with the shards': its columns in order with their types, NOT
// NULL and defaults (an integer column the shards widened compares as
// integer), its indexes and constraints by name and definition.
func tableCatalog(t *testing.T, n node, table string) string {
	t.Helper()
	cols := query(t, n.inst, n.db, fmt.Sprintf(`SELECT a.attname || ' ' ||
		CASE WHEN format_type(a.atttypid, a.atttypmod) IN ('smallint', 'integer', 'bigint') THEN 'integer' ELSE format_type(a.atttypid, a.atttypmod) END ||
		CASE WHEN a.attnotnull THEN ' not null' ELSE '' END || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
		FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = '%s'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, table))
	idx := query(t, n.inst, n.db, fmt.Sprintf(`SELECT c.relname || ' ' || i.indisvalid || ' ' || regexp_replace(pg_get_indexdef(i.indexrelid), '\bbigint\b|\binteger\b', 'int', 'g')
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = '%s'::regclass ORDER BY 1`, table))
	cons := query(t, n.inst, n.db, fmt.Sprintf(`SELECT conname || ' ' || contype::text || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = '%s'::regclass ORDER BY 1`, table))
	return "columns: " + strings.Join(cols, ", ") + "\nindexes: " + strings.Join(idx, "; ") + "\nconstraints: " + strings.Join(cons, "; ")
}

// compareDDL checks the shards against the source: the same published
// tables, each with the source's catalog on every shard, and the same rows
// (sharded tables: their union, each row on its shard; omni tables: on
// every shard), by my own SQL.
func (e *copyEnv) compareDDL(t *testing.T, keys map[string]string) {
	t.Helper()
	e.compareDDLWith(t, keys, false)
}

// compareDDLCutOver is compareDDL after a CUTOVER, which gave the shards
// their shard-local id generators (docs/cutover.md): shard k of N holds
// the schema reshard_local, and a sequence-backed sharding key's default
// reshard_local.nextval('s'::regclass, N, k) where the old database has
// nextval('s'::regclass). Nothing else may differ.
func (e *copyEnv) compareDDLCutOver(t *testing.T, keys map[string]string) {
	t.Helper()
	e.compareDDLWith(t, keys, true)
}

func (e *copyEnv) compareDDLWith(t *testing.T, keys map[string]string, cutOver bool) {
	t.Helper()
	src := e.src[0]
	tables := publishedTables(t, src)
	skip := "'pg_catalog', 'information_schema', 'reshard'"
	if cutOver {
		skip += ", 'reshard_local'"
	}
	for k, d := range e.dst {
		got := query(t, d.inst, d.db, `SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN (`+skip+`) ORDER BY 1`)
		var want []string
		for _, tb := range query(t, src.inst, src.db, `SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'reshard') ORDER BY 1`) {
			want = append(want, tb)
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("shard %d tables %v, source %v", k, got, want)
		}
		local := regexp.MustCompile(fmt.Sprintf(`reshard_local\.nextval\(('[^']*'::regclass), %d, %d\)`, len(e.dst), k))
		for _, tb := range tables {
			g := tableCatalog(t, d, tb)
			if cutOver {
				g = local.ReplaceAllString(g, "nextval($1)")
			}
			if s := tableCatalog(t, src, tb); s != g {
				t.Errorf("%s on shard %d:\n%s\nsource:\n%s", tb, k, g, s)
			}
		}
	}
	var bare []string
	for _, tb := range tables {
		bare = append(bare, strings.TrimPrefix(tb, "public."))
	}
	e.compareSourceAndShards(t, bare, keys)
}

// caughtUp waits until the stream has applied everything written so far,
// failing at once if the task fails.
func (e *copyEnv) caughtUp(t *testing.T, timeout time.Duration) {
	t.Helper()
	done := make(chan struct{})
	defer close(done)
	failed := make(chan string, 1)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			res, err := e.exec.Execute(context.Background(), commands.Show{Name: "tasks"})
			if err != nil {
				continue
			}
			for _, r := range res.Rows {
				if r[5] == "failed" {
					failed <- fmt.Sprint(r[8])
					return
				}
			}
		}
	}()
	ok := make(chan bool, 1)
	go func() { ok <- e.waitCaughtUpOrStop(timeout, done) }()
	select {
	case msg := <-failed:
		t.Fatalf("the task failed: %s", msg)
	case caught := <-ok:
		if !caught {
			t.Fatalf("the stream did not catch up within %s", timeout)
		}
	}
}

// waitCaughtUpOrStop is waitCaughtUp without testing.T (it runs beside a
// watcher), ending early when stop is closed.
func (e *copyEnv) waitCaughtUpOrStop(timeout time.Duration, stop <-chan struct{}) bool {
	marker := fmt.Sprintf("M%d", time.Now().UnixNano()%1e9)
	ctx := context.Background()
	if err := e.src[0].inst.Exec(ctx, e.src[0].db, fmt.Sprintf(`INSERT INTO countries VALUES ('%s', 'marker')`, marker)); err != nil {
		return false
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		all := true
		for _, d := range e.dst {
			conn, err := d.inst.Connect(ctx, d.db)
			if err != nil {
				all = false
				continue
			}
			var n int
			err = conn.QueryRow(ctx, `SELECT count(*) FROM countries WHERE code = $1`, marker).Scan(&n)
			conn.Close(ctx)
			if err != nil || n != 1 {
				all = false
			}
		}
		if all {
			return true
		}
		select {
		case <-stop:
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return false
}

// ddlKeys are the sharding keys of the DDL tests' tables (the rest are
// omni).
var ddlKeys = map[string]string{"customers": "id", "orders": "customer_id", "events": "customer_id", "events_2025": "customer_id",
	"events_2026": "customer_id", "notes": "customer_id", "tickets": "customer_id", "reviews": "customer_id"}

// ddlStates is SHOW DDL: state and applied shards by statement.
func (e *copyEnv) ddlStates(t *testing.T) map[string]string {
	t.Helper()
	res, err := e.exec.Execute(context.Background(), commands.Show{Name: "ddl"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range res.Rows {
		out[r[6].(string)] = fmt.Sprintf("%s %s", r[7], r[8])
	}
	return out
}

// ddlStatements is the application's schema migration the DDL tests run
// on the source under a write load: a column added with a default (a
// constant, and now(): the existing rows get the source's value), one
// renamed, one dropped; an index built concurrently; an enum value added
// and used by later rows; a table created with rows in the same and later
// transactions; a table dropped; a unique index; a comment; a query of
// four DDL statements of which the last alone is captured (a temporary
// table, a CREATE ... IF NOT EXISTS and a DROP ... IF EXISTS that change
// nothing: the shards must find the fourth, not the first). Twelve of them
// are DDL (SHOW DDL lists them).
var ddlStatements = []string{
	`ALTER TABLE customers ADD COLUMN tier text NOT NULL DEFAULT 'basic'`,
	`ALTER TABLE customers ADD COLUMN seen_at timestamptz DEFAULT now()`,
	`ALTER TABLE tickets ADD COLUMN priority int DEFAULT 3`,
	`ALTER TABLE tickets RENAME COLUMN body TO text_body`,
	ddlConcurrently,
	`ALTER TYPE mood ADD VALUE 'angry'`,
	`INSERT INTO tickets (customer_id, status, text_body) VALUES (7, 'angry', 'uses the new value')`,
	`BEGIN; CREATE TABLE reviews (id serial PRIMARY KEY, customer_id int REFERENCES customers (id), stars int NOT NULL);
	 INSERT INTO reviews (customer_id, stars) SELECT 1 + g % 100, g % 5 FROM generate_series(1, 300) g; COMMIT`,
	`INSERT INTO reviews (customer_id, stars) SELECT 1 + g % 100, 4 FROM generate_series(1, 50) g`,
	`ALTER TABLE tickets DROP COLUMN priority`,
	`UPDATE tickets SET text_body = 'after the drop' WHERE id < 20`,
	`DROP TABLE scratch`,
	`CREATE UNIQUE INDEX reviews_customer_stars ON reviews (id, customer_id)`,
	`COMMENT ON TABLE reviews IS 'carried'`,
	`CREATE TEMP TABLE scratch_tmp (k int); CREATE TABLE IF NOT EXISTS countries (code text); DROP TABLE IF EXISTS no_such_table;
	 CREATE TABLE notes_archive (id bigint PRIMARY KEY, note text)`,
}

// ddlConcurrently is ddlStatements' index built concurrently.
const ddlConcurrently = `CREATE INDEX CONCURRENTLY tickets_status_idx ON tickets (status)`

// checkDDLResult checks what every run of ddlStatements ends with: the
// shards equal to the source (catalog and rows), schema sync's rules
// applied (the new table's serial key and its foreign key to the widened
// customers.id are bigint on the shards), and SHOW DDL listing the twelve
// statements applied on both shards.
func (e *copyEnv) checkDDLResult(t *testing.T) {
	t.Helper()
	e.compareDDL(t, ddlKeys)
	for k, d := range e.dst {
		if got := d.one(t, `SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'reviews'`); got != "id bigint, customer_id bigint, stars integer" {
			t.Errorf("shard %d reviews: %s", k, got)
		}
	}
	e.checkDDLApplied(t, 12)
}

// checkDDLApplied checks that SHOW DDL lists n statements, each applied
// on both shards.
func (e *copyEnv) checkDDLApplied(t *testing.T, n int) {
	t.Helper()
	states := e.ddlStates(t)
	for stmt, st := range states {
		if !strings.HasPrefix(st, "applied 0,1") {
			t.Errorf("SHOW DDL: %q is %s", stmt, st)
		}
	}
	if len(states) != n {
		t.Errorf("SHOW DDL lists %d statements, want %d: %v", len(states), n, states)
	}
}

// TestDDLWhileStreaming: the application's DDL while the stream runs under
// a write load reaches every shard in the source's order: a column added
// with a default (a constant, and now(): the existing rows get the
// source's value), dropped, renamed; an index built concurrently; a table
// created with rows in the same and later transactions; an enum value
// added and used by later rows; a table dropped. The shards end equal to
// the source, catalog and rows.
func TestDDLWhileStreaming(t *testing.T) {
	e, src := ddlEnv(t, "ddls", "")
	e.reshardStreaming(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	ddlWriter(t, src, stop, &wg)
	time.Sleep(300 * time.Millisecond)
	for _, sql := range ddlStatements {
		src.exec(t, sql)
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	e.caughtUp(t, 2*time.Minute)
	e.checkDDLResult(t)
}

// TestDDLStopIsTheDefault: without resharding_ddl the source gets no event
// triggers, and a column added on the source stops the stream at the
// first change that has it, naming the DDL to run by hand (as before DDL
// replication).
func TestDDLStopIsTheDefault(t *testing.T) {
	e := newCopyEnv(t, "ddlstop", 1, 2, "")
	src := e.src[0]
	src.exec(t, copySchema)
	loadData(t, src, 0, 1, 500)
	id := e.reshardStreaming(t)
	if n := src.one(t, `SELECT count(*) FROM pg_event_trigger`); n != "0" {
		t.Fatalf("%s event triggers on the source with resharding_ddl unset", n)
	}
	if n := src.one(t, `SELECT count(*) FROM pg_namespace WHERE nspname = 'reshard'`); n != "0" {
		t.Fatal("the source has a reshard schema with resharding_ddl unset")
	}
	src.exec(t, `ALTER TABLE customers ADD COLUMN tier text DEFAULT 'basic'`)
	src.exec(t, `INSERT INTO customers (id, name, tier) VALUES (90001, 'after', 'gold')`)
	deadline := time.Now().Add(time.Minute)
	for {
		state, msg := e.taskState(t)
		if state == "failed" {
			if !strings.Contains(msg, "columns tier are missing on the destination") || !strings.Contains(msg, "ALTER TABLE") {
				t.Fatalf("task %s failed with: %s", id, msg)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream went on past a changed table: %s %s", state, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := e.dst[0].one(t, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'tier'`); got != "0" {
		t.Fatal("a shard got the column without DDL replication")
	}
}

// TestDDLNeedsSuperuser: with resharding_ddl = "replicate" and a source
// reached as a role that is not a superuser, RESHARD is refused before
// anything is created, naming the setting.
func TestDDLNeedsSuperuser(t *testing.T) {
	e, src := ddlEnv(t, "ddlsu", "")
	role := "ddlsu_app"
	src.exec(t, fmt.Sprintf(`DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%[1]s') THEN CREATE ROLE %[1]s LOGIN REPLICATION PASSWORD 'app-secret'; END IF; END$$;
		GRANT ALL ON SCHEMA public TO %[1]s; GRANT SELECT ON ALL TABLES IN SCHEMA public TO %[1]s`, role))
	t.Cleanup(func() { _ = src.inst.Exec(context.Background(), src.db, "DROP OWNED BY "+role+"; DROP ROLE "+role) })
	users := fmt.Sprintf("[[users]]\nname = \"app\"\ndatabase = \"src\"\npassword = \"x\"\nschema_admin = true\nserver_user = %q\nserver_password = \"app-secret\"\n\n[[users]]\nname = %q\ndatabase = \"dst\"\npassword = %q\nschema_admin = true\n",
		role, pgtest.User, pgtest.Password)
	if err := os.WriteFile(e.usersPath, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	e.load(t)
	_, err := e.exec.Execute(context.Background(), commands.Reshard{Route: e.route()})
	var ce *commands.Error
	if !errors.As(err, &ce) || !strings.Contains(ce.Error(), `resharding_ddl = "replicate" needs a superuser`) || !strings.Contains(ce.Error(), role) {
		t.Fatalf("RESHARD as a non-superuser: %v", err)
	}
	if n := src.one(t, `SELECT count(*) FROM pg_event_trigger`); n != "0" {
		t.Fatal("event triggers installed after a refusal")
	}
	if n := src.one(t, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); n != "0" {
		t.Fatal("a slot was created after a refusal")
	}
}

// holdGate makes the copy of the gate table wait on every destination
// shard until the returned release is called: a row trigger (ENABLE
// ALWAYS, the copy's session runs as a replica) takes a shared advisory
// lock that the test holds exclusively. The shards must have the schema.
func (e *copyEnv) holdGate(t *testing.T) (release func()) {
	t.Helper()
	ctx := context.Background()
	var held []func()
	for _, d := range e.dst {
		d.exec(t, `CREATE FUNCTION hold_copy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NEW; END $$;
			CREATE TRIGGER hold_copy BEFORE INSERT ON gate FOR EACH ROW EXECUTE FUNCTION hold_copy();
			ALTER TABLE gate ENABLE ALWAYS TRIGGER hold_copy`)
		conn, err := d.inst.Connect(ctx, d.db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(4242)`); err != nil {
			t.Fatal(err)
		}
		held = append(held, func() { conn.Close(ctx) })
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			for _, h := range held {
				h()
			}
		})
	}
	t.Cleanup(release)
	return release
}

// waitGateHeld waits until a copy worker waits for the gate's lock on
// destination shard 0.
func (e *copyEnv) waitGateHeld(t *testing.T) {
	t.Helper()
	d := e.dst[0]
	for deadline := time.Now().Add(2 * time.Minute); ; {
		if d.one(t, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`) != "0" {
			return
		}
		if state, msg := e.taskState(t); state == "failed" || time.Now().After(deadline) {
			t.Fatalf("the copy never reached the gate: %s %s", state, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitState waits until the migration is in state want, failing at once
// if it fails.
func (e *copyEnv) waitState(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; {
		state, msg := e.taskState(t)
		if state == want {
			return
		}
		if state == "failed" || state == "stopped" || time.Now().After(deadline) {
			t.Fatalf("task is %s (%s), want %s", state, msg, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDDLDuringCopy: the same schema migration as TestDDLWhileStreaming,
// run under a write load while RESHARD's copy is held on the gate table
// (so it runs while units are copying and before others start, on tables
// copied and not copied yet): the copy reads every table at the slot's
// snapshot through the source's current names, the stream applies the
// statements after the copy, and the shards end equal to the source. The
// index built concurrently waits on the source for the copy's snapshot
// (PostgreSQL waits for older snapshots), so it is sent last and ends
// once the gate is released.
func TestDDLDuringCopy(t *testing.T) {
	e, src := ddlEnv(t, "ddlc", "")
	ctx := context.Background()
	if _, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: commands.PhasePre, Route: e.route()}); err != nil {
		t.Fatal(err)
	}
	release := e.holdGate(t)
	if _, err := e.exec.Execute(ctx, commands.Reshard{Route: e.route()}); err != nil {
		t.Fatal(err)
	}
	e.waitGateHeld(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	ddlWriter(t, src, stop, &wg)
	time.Sleep(200 * time.Millisecond)
	for _, sql := range ddlStatements {
		if sql != ddlConcurrently {
			src.exec(t, sql)
			time.Sleep(50 * time.Millisecond)
		}
	}
	built := make(chan error, 1)
	go func() { built <- src.inst.Exec(ctx, src.db, ddlConcurrently) }()
	time.Sleep(300 * time.Millisecond)
	if state, msg := e.taskState(t); state != "copying" {
		t.Fatalf("the copy ended before the DDL did: %s %s", state, msg)
	}
	release()
	if err := <-built; err != nil {
		t.Fatalf("%s: %v", ddlConcurrently, err)
	}
	e.waitState(t, "streaming", 3*time.Minute)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	e.caughtUp(t, 2*time.Minute)
	for _, d := range e.dst {
		d.exec(t, `DROP TRIGGER hold_copy ON gate; DROP FUNCTION hold_copy()`)
	}
	e.checkDDLResult(t)
}

// A PostgreSQL 15 or 16 source runs DDL that names things by words 17 made
// keywords (a parameter and a column named json): reshard's parser has
// 17's grammar, so the captured statements are parsed, and run on the
// shards, with those words quoted. Before, the stream stopped at the
// first of them: "it does not parse".
func TestDDLNewerKeywordsFromOlderSource(t *testing.T) {
	e, src := ddlEnv(t, "ddlkw", "")
	if v := src.one(t, `SELECT current_setting('server_version_num')::int / 10000`); v != "15" && v != "16" {
		t.Fatalf("the tests' source is PostgreSQL %s: this test needs 15 or 16 (json is a keyword from 16, json_table from 17)", v)
	}
	e.reshardStreaming(t)
	src.exec(t, `CREATE FUNCTION public.keyed(json json, json_table text DEFAULT 'json json') RETURNS json LANGUAGE sql AS $$ SELECT json $$`)
	src.exec(t, `ALTER TABLE scratch ADD COLUMN json json; INSERT INTO scratch (id, v, json) VALUES (1001, 'k', '{"a": 1}')`)
	e.caughtUp(t, 2*time.Minute)
	if state, msg := e.taskState(t); state != "streaming" {
		t.Fatalf("task: %s %s", state, msg)
	}
	want := src.one(t, `SELECT pg_get_function_arguments('public.keyed'::regproc) || ' | ' || (SELECT json::text FROM scratch WHERE id = 1001) || ' | ' || public.keyed('{"b": 2}')::text`)
	for k, d := range e.dst {
		if got := d.one(t, `SELECT pg_get_function_arguments('public.keyed'::regproc) || ' | ' || (SELECT json::text FROM scratch WHERE id = 1001) || ' | ' || public.keyed('{"b": 2}')::text`); got != want {
			t.Errorf("shard %d: %s, the source %s", k, got, want)
		}
	}
}
