package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/preflight"
	"github.com/reshard/reshard/tests/testkit"
)

// noticeConn connects to the admin server and collects the NOTICEs it
// sends.
type noticeConn struct {
	*pgx.Conn
	mu      sync.Mutex
	notices []string
}

func connectNotices(t *testing.T, ctx context.Context, addr fmt.Stringer) *noticeConn {
	t.Helper()
	cfg, err := pgx.ParseConfig(fmt.Sprintf("postgres://admin:%s@%s/admin?sslmode=disable", adminPassword, addr))
	if err != nil {
		t.Fatal(err)
	}
	nc := &noticeConn{}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		nc.mu.Lock()
		nc.notices = append(nc.notices, n.Severity+" "+n.Code+" "+n.Message)
		nc.mu.Unlock()
	}
	if nc.Conn, err = pgx.ConnectConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(context.Background()) })
	return nc
}

// taken returns the notices received so far and forgets them.
func (nc *noticeConn) taken() []string {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	out := nc.notices
	nc.notices = nil
	return out
}

// reshardNotices starts RESHARD through an admin server on e and returns
// the admin connection, the task id and the NOTICEs that came with it.
func (e *copyEnv) reshardNotices(t *testing.T, ctx context.Context) (*noticeConn, string, string) {
	t.Helper()
	addr, _ := serveAdmin(t, e, hclog.NewNullLogger())
	admin := connectNotices(t, ctx, addr)
	var id string
	if err := admin.QueryRow(ctx, "RESHARD src dst all_tables").Scan(&id); err != nil {
		t.Fatalf("RESHARD: %v", err)
	}
	return admin, id, strings.Join(admin.taken(), "\n")
}

// userObjects lists what a node holds outside the system schemas:
// schemas (reshard's state schema included), relations, types, functions,
// triggers, event triggers, publications and replication origins: what a
// refused command must not leave.
func userObjects(t *testing.T, n node) []string {
	t.Helper()
	return query(t, n.inst, n.db, `WITH user_ns AS (SELECT oid, nspname FROM pg_namespace
		  WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND nspname NOT LIKE 'pg_temp%' AND nspname NOT LIKE 'pg_toast_temp%')
		SELECT 'schema ' || nspname FROM user_ns
		UNION ALL SELECT 'relation ' || n.nspname || '.' || c.relname FROM pg_class c JOIN user_ns n ON n.oid = c.relnamespace
		UNION ALL SELECT 'type ' || n.nspname || '.' || y.typname FROM pg_type y JOIN user_ns n ON n.oid = y.typnamespace WHERE y.typrelid = 0 AND y.typelem = 0
		UNION ALL SELECT 'function ' || n.nspname || '.' || p.proname FROM pg_proc p JOIN user_ns n ON n.oid = p.pronamespace
		UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
		UNION ALL SELECT 'event trigger ' || evtname FROM pg_event_trigger
		UNION ALL SELECT 'publication ' || pubname FROM pg_publication
		UNION ALL SELECT 'origin ' || roname FROM pg_replication_origin
		ORDER BY 1`)
}

// waitStreaming waits for the task to stream.
func (e *copyEnv) waitStreaming(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		res, err := e.exec.Execute(context.Background(), commands.Show{Name: "tasks"})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res.Rows {
			if r[0] != id {
				continue
			}
			switch r[5] {
			case "streaming":
				return
			case "failed", "stopped", "done":
				t.Fatalf("task %s %s: %s", id, r[5], r[8])
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s does not stream: %v", id, res.Rows)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPreflightRefusesBeforeAnything: RESHARD, COPY_DATA and REPLICATE run
// every check before they answer. A refusal is an ErrorResponse with a
// SQLSTATE that lists every problem, and leaves nothing: no task, no slot,
// no schema object or state on the shards.
func TestPreflightRefusesBeforeAnything(t *testing.T) {
	// With DDL capture on, a RESHARD that went ahead would install event
	// triggers and reshard.ddl on the source first.
	e := newCopyEnv(t, "pfa", 1, 2, `resharding_ddl = "replicate"`)
	e.src[0].exec(t, copySchema)
	loadData(t, e.src[0], 0, 1, 100)
	e.src[0].exec(t, `CREATE TABLE loose (customer_id bigint, v text)`)
	// What exists on the shards beforehand (only what this test made).
	e.dst[1].exec(t, `CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL); INSERT INTO countries VALUES ('XX', 'x')`)
	before := [][]string{userObjects(t, e.dst[0]), userObjects(t, e.dst[1])}
	srcBefore := userObjects(t, e.src[0])
	// pg_dump_path that does not exist: one more problem for RESHARD.
	cfg, _ := os.ReadFile(e.cfgPath)
	os.WriteFile(e.cfgPath, []byte(strings.Replace(string(cfg), "[admin]", "[replication]\npg_dump_path = \"/nonexistent/pg_dump\"\n\n[admin]", 1)), 0o600)
	e.load(t)
	addr, _ := serveAdmin(t, e, hclog.NewNullLogger())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := connectNotices(t, ctx, addr)

	nothingLeft := func(t *testing.T, what string) {
		t.Helper()
		rows, err := admin.Query(ctx, "SHOW TASKS")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			n++
		}
		rows.Close()
		if n != 0 {
			t.Errorf("%s left %d tasks", what, n)
		}
		if s := e.src[0].one(t, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); s != "0" {
			t.Errorf("%s left %s slots on the source", what, s)
		}
		if got := userObjects(t, e.src[0]); strings.Join(got, ",") != strings.Join(srcBefore, ",") {
			t.Errorf("%s changed the source: %v, before %v", what, got, srcBefore)
		}
		for k, d := range e.dst {
			if got := userObjects(t, d); strings.Join(got, ",") != strings.Join(before[k], ",") {
				t.Errorf("%s changed shard %d: %v, before %v", what, k, got, before[k])
			}
		}
	}
	for _, c := range []struct {
		sql  string
		want []string
	}{
		{"RESHARD src dst all_tables", []string{"RESHARD refused", "public.loose", "tables not empty", "public.countries", "pg_dump not found"}},
		{"RESHARD src dst nosuchpub", []string{`publication "nosuchpub" does not exist`}},
		{"COPY_DATA src dst nosuchpub", []string{"COPY_DATA refused", `publication "nosuchpub" does not exist`}},
		{"COPY_DATA src dst all_tables pfa_slot", []string{"tables missing on destination dst shard 0", "public.orders", "public.loose"}},
		{"REPLICATE src dst all_tables pfa_noslot", []string{"REPLICATE refused", `replication slot "pfa_noslot" does not exist`}},
	} {
		t.Run(c.sql, func(t *testing.T) {
			_, err := admin.Exec(ctx, c.sql)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				t.Fatalf("%s: want an ErrorResponse, got %v", c.sql, err)
			}
			if pe.Code != "55000" {
				t.Errorf("SQLSTATE %s, want 55000: %s", pe.Code, pe.Message)
			}
			for _, w := range c.want {
				if !strings.Contains(pe.Message, w) {
					t.Errorf("%s: the refusal does not name %q:\n%s", c.sql, w, pe.Message)
				}
			}
			t.Logf("%s: [%s] %s", c.sql, pe.Code, pe.Message)
			nothingLeft(t, c.sql)
		})
	}
}

// crossSchema is a store sharded by customer_id whose foreign keys can
// cross shards as in Chinook and Northwind: invoice_line (no customer_id:
// an omni table) references the sharded invoice; order_details (omni)
// references orders; payment (sharded by its customer) references a
// rental of possibly another customer (Pagila). runner's composite key
// holds a smallint discriminator.
const crossSchema = `
CREATE TABLE customer (customer_id serial PRIMARY KEY, name text);
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE invoice (invoice_id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customer, total numeric);
CREATE TABLE invoice_line (invoice_line_id serial PRIMARY KEY, invoice_id int NOT NULL REFERENCES invoice, qty int);
CREATE TABLE orders (order_id smallint PRIMARY KEY, customer_id int REFERENCES customer);
CREATE TABLE order_details (order_id smallint NOT NULL REFERENCES orders, product_id int NOT NULL, qty int, PRIMARY KEY (order_id, product_id));
CREATE TABLE rental (rental_id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customer);
CREATE TABLE payment (payment_id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customer, rental_id int REFERENCES rental);
CREATE TABLE runner (id serial, runner_type smallint NOT NULL, customer_id int, PRIMARY KEY (id, runner_type));
INSERT INTO countries VALUES ('NL', 'Netherlands');
INSERT INTO customer (name) SELECT 'c' || g FROM generate_series(1, 50) g;
INSERT INTO invoice (customer_id, total) SELECT 1 + g % 50, g FROM generate_series(1, 200) g;
INSERT INTO invoice_line (invoice_id, qty) SELECT 1 + g % 200, g FROM generate_series(1, 400) g;
INSERT INTO orders SELECT g, 1 + g % 50 FROM generate_series(1, 100) g;
INSERT INTO order_details SELECT 1 + g % 100, g, 1 FROM generate_series(1, 300) g;
INSERT INTO rental (customer_id) SELECT 1 + g % 50 FROM generate_series(1, 100) g;
INSERT INTO payment (customer_id, rental_id) SELECT 1 + g % 50, 1 + (g * 7) % 100 FROM generate_series(1, 150) g;
INSERT INTO runner (runner_type, customer_id) SELECT 1 + g % 3, 1 + g % 50 FROM generate_series(1, 30) g;
CREATE PUBLICATION all_tables FOR ALL TABLES;
`

// orphans counts with my own SQL the rows of table on a node whose
// referenced row is not on that node.
func orphans(t *testing.T, n node, table, col, ref, refCol string) string {
	t.Helper()
	return n.one(t, fmt.Sprintf(`SELECT count(*) FROM %s x WHERE x.%s IS NOT NULL AND NOT EXISTS (SELECT 1 FROM %s r WHERE r.%s = x.%s)`, table, col, ref, refCol, col))
}

// TestCrossShardForeignKeys: preflight names the foreign keys that can
// point across shards (a NOTICE), RESHARD reaches streaming, and POST
// leaves each that does not hold on a shard NOT VALID and reports it with
// its rows through the admin server; the keys that hold are validated.
func TestCrossShardForeignKeys(t *testing.T) {
	e := newCopyEnv(t, "xfk", 1, 2, "")
	e.src[0].exec(t, crossSchema)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin, id, notices := e.reshardNotices(t, ctx)
	for _, fk := range []string{"invoice_line_invoice_id_fkey on public.invoice_line", "order_details_order_id_fkey on public.order_details",
		"payment_rental_id_fkey on public.payment"} {
		if !strings.Contains(notices, "NOTICE 00000 foreign key "+fk) {
			t.Errorf("no NOTICE names %s as crossing shards:\n%s", fk, notices)
		}
	}
	for _, fk := range []string{"invoice_customer_id_fkey", "payment_customer_id_fkey", "rental_customer_id_fkey"} {
		if strings.Contains(notices, fk) {
			t.Errorf("the co-located %s is named as crossing shards:\n%s", fk, notices)
		}
	}
	e.waitStreaming(t, id)

	// My own count of the rows without their referenced row on each shard.
	type key struct{ table, col, ref, refCol, name string }
	crossing := []key{{"invoice_line", "invoice_id", "invoice", "invoice_id", "invoice_line_invoice_id_fkey"},
		{"order_details", "order_id", "orders", "order_id", "order_details_order_id_fkey"},
		{"payment", "rental_id", "rental", "rental_id", "payment_rental_id_fkey"}}
	want := map[string]bool{}
	for k, d := range e.dst {
		for _, c := range crossing {
			n := orphans(t, d, c.table, c.col, c.ref, c.refCol)
			valid := d.one(t, fmt.Sprintf(`SELECT convalidated FROM pg_constraint WHERE conname = '%s'`, c.name))
			if n == "0" {
				if valid != "true" {
					t.Errorf("shard %d: %s holds but is not validated", k, c.name)
				}
				continue
			}
			if valid != "false" {
				t.Errorf("shard %d: %s has %s rows without their referenced row but is %s", k, c.name, n, valid)
			}
			want[fmt.Sprintf("foreign key %s on public.%s left NOT VALID on shard %d: %s rows", c.name, c.table, k, n)] = true
		}
		for _, name := range []string{"invoice_customer_id_fkey", "payment_customer_id_fkey", "rental_customer_id_fkey"} {
			if v := d.one(t, fmt.Sprintf(`SELECT convalidated FROM pg_constraint WHERE conname = '%s'`, name)); v != "true" {
				t.Errorf("shard %d: co-located %s not validated", k, name)
			}
		}
		// The smallint discriminator in runner's key stays smallint; the
		// serial key and the smallint order key (a primary key without a
		// sequence) as they should be.
		if got := d.one(t, `SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY column_name) FROM information_schema.columns
			WHERE table_name IN ('runner', 'orders') AND column_name IN ('id', 'runner_type', 'order_id')`); got != "id bigint, order_id smallint, runner_type smallint" {
			t.Errorf("shard %d key types: %s", k, got)
		}
	}
	if len(want) == 0 {
		t.Fatal("no foreign key crosses shards in the fixture: the test proves nothing")
	}
	// POST again through the admin server: it reports each one.
	rows, err := admin.Query(ctx, "SCHEMA_SYNC POST src dst all_tables")
	if err != nil {
		t.Fatal(err)
	}
	var notes []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		if failed := vals[6].(int64); failed != 0 {
			t.Errorf("POST failed %d statements: %v", failed, vals[8])
		}
		notes = append(notes, vals[8].(string))
	}
	rows.Close()
	all := strings.Join(notes, "; ")
	for w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("SCHEMA_SYNC POST does not report %q:\n%s", w, all)
		}
	}
	if _, err := admin.Exec(ctx, "STOP_TASK "+id); err != nil {
		t.Fatal(err)
	}

	// The CLI: the same engine and the same setting. schema-sync, a copy
	// (data-sync --sync-only), schema-sync --data-sync-complete: the keys
	// that cross shards are left NOT VALID and printed, the exit code is 0;
	// with resharding_foreign_keys = "skip" none is created.
	t.Run("cli", func(t *testing.T) {
		bin := buildReshard(t)
		for _, mode := range []string{"validate", "skip"} {
			e := newCopyEnv(t, "xfkcli_"+mode, 1, 2, fmt.Sprintf("resharding_foreign_keys = %q", mode))
			e.src[0].exec(t, crossSchema)
			route := []string{"--config", e.cfgPath, "--users", e.usersPath}
			ends := []string{"--from-database", "src", "--to-database", "dst", "--publication", "all_tables"}
			var post string
			for _, args := range [][]string{{"schema-sync"}, {"data-sync", "--sync-only", "--replication-slot", "xfkcli_" + mode}, {"schema-sync", "--data-sync-complete"}} {
				out, err := exec.Command(bin, append(append(append([]string{}, route...), args...), ends...)...).CombinedOutput()
				if err != nil {
					t.Fatalf("%s reshard %v: %v\n%s", mode, args, err, out)
				}
				post = string(out)
			}
			for k, d := range e.dst {
				n := orphans(t, d, "invoice_line", "invoice_id", "invoice", "invoice_id")
				valid := d.one(t, `SELECT coalesce(string_agg(convalidated::text, ','), 'none') FROM pg_constraint WHERE conname = 'invoice_line_invoice_id_fkey'`)
				switch {
				case mode == "skip" && valid != "none":
					t.Errorf("skip, shard %d: invoice_line_invoice_id_fkey is there (%s)", k, valid)
				case mode == "validate" && n != "0" && valid != "false":
					t.Errorf("validate, shard %d: invoice_line_invoice_id_fkey has %s rows without their invoice but is %s", k, n, valid)
				case mode == "validate" && n != "0" && !strings.Contains(post, fmt.Sprintf("foreign key invoice_line_invoice_id_fkey on public.invoice_line left NOT VALID on shard %d: %s rows", k, n)):
					t.Errorf("validate, shard %d: the CLI does not print the key left NOT VALID with its %s rows:\n%s", k, n, post)
				}
			}
			if mode == "skip" && !strings.Contains(post, "foreign keys not created on the shards ([general] resharding_foreign_keys = skip)") {
				t.Errorf("skip: the CLI does not say the foreign keys were not created:\n%s", post)
			}
		}
	})

	// not_valid and skip: the same POST on fresh shards.
	for _, mode := range []string{"not_valid", "skip"} {
		t.Run(mode, func(t *testing.T) {
			e := newCopyEnv(t, "xfk_"+mode, 1, 2, fmt.Sprintf("resharding_foreign_keys = %q", mode))
			e.src[0].exec(t, crossSchema)
			ctx := context.Background()
			for _, p := range []commands.Phase{commands.PhasePre, commands.PhasePost} {
				if _, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: p, Route: e.route()}); err != nil {
					t.Fatalf("SCHEMA_SYNC %s: %v", p, err)
				}
			}
			for k, d := range e.dst {
				got := d.one(t, `SELECT count(*) || ' ' || count(*) FILTER (WHERE convalidated) FROM pg_constraint WHERE contype = 'f'`)
				want := "7 0"
				if mode == "skip" {
					want = "0 0"
				}
				if got != want {
					t.Errorf("shard %d: foreign keys (all, validated) %s, want %s", k, got, want)
				}
			}
		})
	}
}

// TestUnloggedTableNamed: a FOR ALL TABLES publication does not carry an
// unlogged table. Preflight names it (a NOTICE, with what will happen);
// VERIFY lists it as not published and fails, rather than exiting 0.
func TestUnloggedTableNamed(t *testing.T) {
	e := newCopyEnv(t, "unlog", 1, 2, "")
	e.src[0].exec(t, copySchema)
	loadData(t, e.src[0], 0, 1, 200)
	e.src[0].exec(t, `CREATE UNLOGGED TABLE sessions (id serial PRIMARY KEY, customer_id int, token text);
		INSERT INTO sessions (customer_id, token) SELECT g % 20, md5(g::text) FROM generate_series(1, 40) g;
		CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY)`)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin, id, notices := e.reshardNotices(t, ctx)
	if !strings.Contains(notices, `unlogged table public.sessions is not carried by publication "all_tables"`) || !strings.Contains(notices, "its rows are not copied or streamed") {
		t.Errorf("preflight does not name the unlogged table:\n%s", notices)
	}
	e.waitStreaming(t, id)
	res, err := e.exec.Execute(ctx, commands.Verify{Route: e.route(), Foreground: true})
	if err == nil || res == nil {
		t.Fatalf("VERIFY with an unlogged table's rows missing on the shards: %v, %v", res, err)
	}
	byTable := map[string][]any{}
	for _, r := range res.Rows {
		byTable[r[2].(string)] = r
	}
	if r := byTable["sessions"]; r == nil || r[3] != "not published" || r[4] != int64(40) || r[5] != int64(0) {
		t.Errorf("VERIFY sessions: %v", r)
	}
	// Empty on both sides: listed, and nothing is lost.
	if r := byTable["scratch"]; r == nil || r[3] != "match" {
		t.Errorf("VERIFY scratch: %v", r)
	}
	for _, table := range []string{"customers", "orders", "countries"} {
		if r := byTable[table]; r == nil || r[3] != "match" {
			t.Errorf("VERIFY %s: %v", table, r)
		}
	}
	if _, err := admin.Exec(ctx, "STOP_TASK "+id); err != nil {
		t.Fatal(err)
	}

	// A FOR TABLE publication leaving out a table that a published one
	// references: preflight names it with the foreign key.
	e.src[0].exec(t, `CREATE PUBLICATION some_tables FOR TABLE orders, countries`)
	j, err := job.New(job.Spec{Catalog: e.cat, Source: "src", Destination: "dst", Publication: "some_tables"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := preflight.Run(ctx, j, preflight.Request{Command: preflight.CopyData, SyncOnly: true}); err == nil {
		t.Fatal("COPY_DATA preflight passed although the shards' tables are not empty")
	}
	for _, d := range e.dst {
		d.exec(t, `TRUNCATE orders, countries`)
	}
	rep, err := preflight.Run(ctx, j, preflight.Request{Command: preflight.CopyData, SyncOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(rep.Notices, "\n")
	if !strings.Contains(got, `table public.customers is not carried by publication "some_tables"`) || !strings.Contains(got, "orders_customer_id_fkey on public.orders") {
		t.Errorf("preflight does not name the referenced, unpublished table:\n%s", got)
	}
}

// TestEmptyTsqueryFallsBackToText: PostgreSQL cannot read back an empty
// tsquery from its own binary COPY output; the unit holding it is cleared
// and copied again in text (the log and SHOW TABLE_COPIES say so), the
// other tables stay binary, and every row arrives.
func TestEmptyTsqueryFallsBackToText(t *testing.T) {
	e := newCopyEnv(t, "tsq", 1, 2, `resharding_copy_format = "binary"`)
	e.src[0].exec(t, copySchema)
	loadData(t, e.src[0], 0, 1, 300)
	e.src[0].exec(t, `CREATE TABLE searches (id serial PRIMARY KEY, customer_id int, q tsquery, note text);
		INSERT INTO searches (customer_id, q, note) SELECT g % 30, CASE WHEN g % 50 = 0 THEN ''::tsquery ELSE to_tsquery('simple', 'w' || g) END, 'n' || g
		FROM generate_series(1, 500) g`)
	var logs testkit.Buffer
	e.exec = commands.NewExecutor(e.cat, hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: &logs}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: commands.PhasePre, Route: e.route()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.exec.Execute(ctx, commands.CopyData{Route: e.route(), Slot: "tsq_slot", Foreground: true, SyncOnly: true}); err != nil {
		t.Fatalf("copy: %v\n%s", err, logs.String())
	}
	copies, err := e.exec.Execute(ctx, commands.Show{Name: "table_copies"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range copies.Rows {
		table, status, sql := r[1].(string), r[2].(string), r[11].(string)
		if status != "done" {
			t.Errorf("%s: %s", table, status)
		}
		if table == "searches" {
			if !strings.Contains(sql, "binary COPY failed on a value its type cannot read back") || !strings.Contains(sql, "(FORMAT text)") {
				t.Errorf("SHOW TABLE_COPIES does not say searches was copied in text: %s", sql)
			}
		} else if !strings.Contains(sql, "(FORMAT binary)") {
			t.Errorf("%s not copied in binary: %s", table, sql)
		}
	}
	if !strings.Contains(logs.String(), "copying the unit again in text format") || !strings.Contains(logs.String(), "searches") {
		t.Errorf("the log does not say so:\n%s", logs.String())
	}
	e.compareSourceAndShards(t, []string{"searches", "customers", "orders"}, map[string]string{"searches": "customer_id", "customers": "id", "orders": "customer_id"})
}

// TestSchemaSyncWithoutSuperuser: the shards' schema admin owns the
// destination databases but is no superuser. PRE reports the FOR ALL
// TABLES publication it may not create (and the OWNER TO it may not run)
// with the privilege missing instead of failing; POST_CUTOVER creates the
// publication reverse replication needs FOR TABLE, which it may.
func TestSchemaSyncWithoutSuperuser(t *testing.T) {
	const role, password = "rs_shard_admin", "shard-admin-pw"
	for _, s := range cluster.Instances[1:3] {
		if err := s.Exec(context.Background(), "postgres", fmt.Sprintf(`DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s LOGIN PASSWORD '%s'; END IF; END $$`, role, role, password)); err != nil {
			t.Fatal(err)
		}
	}
	e := newSchemaEnv(t, "nosu", func(cfg string) string {
		// The destination's nodes log in as the unprivileged role.
		return strings.ReplaceAll(cfg, "database_name = \"nosu_dst\"\n", fmt.Sprintf("database_name = \"nosu_dst\"\nuser = %q\npassword = %q\n", role, password))
	})
	for _, s := range e.shards() {
		if err := s.Exec(context.Background(), "postgres", fmt.Sprintf(`ALTER DATABASE %s OWNER TO %s`, e.dstDB, role)); err != nil {
			t.Fatal(err)
		}
	}
	e.loadSource(t, `CREATE TABLE accounts (id serial PRIMARY KEY, user_id int NOT NULL, name text);
		CREATE TABLE notes (id bigserial PRIMARY KEY, user_id int, body text);
		CREATE PUBLICATION all_tables FOR ALL TABLES WITH (publish = 'insert, update, delete')`)
	res := e.sync(t, commands.PhasePre)
	for _, row := range res.Rows {
		notes := row[8].(string)
		if !strings.Contains(notes, "publication not created") || !strings.Contains(notes, "superuser") || !strings.Contains(notes, role) {
			t.Errorf("shard %d: PRE does not report the publication it may not create: %s", row[1], notes)
		}
	}
	for k, s := range e.shards() {
		if got := query(t, s, e.dstDB, `SELECT tableowner || ' ' || tablename FROM pg_tables WHERE schemaname = 'public'`); strings.Join(got, ",") != role+" accounts,"+role+" notes" {
			t.Errorf("shard %d tables: %v", k, got)
		}
	}
	// A rerun on shards the schema admin cannot dump: the DBA keeps a
	// table of their own there that the role may not read (pg_dump locks
	// every table it dumps). PRE goes on, told by existence checks, says
	// so, and counts nothing that has a check as applied.
	for _, s := range e.shards() {
		if err := s.Exec(context.Background(), e.dstDB, `CREATE TABLE dba_audit (at timestamptz)`); err != nil {
			t.Fatal(err)
		}
	}
	res = e.sync(t, commands.PhasePre)
	for _, row := range res.Rows {
		notes := row[8].(string)
		if !strings.Contains(notes, "the shard's schema could not be dumped") || !strings.Contains(notes, "dba_audit") || !strings.Contains(notes, "told by existence checks") {
			t.Errorf("shard %d: the rerun does not say its shard could not be dumped: %s", row[1], notes)
		}
		// Every statement of this schema has an existence check (tables,
		// sequences, their OWNED BY, defaults, owners): nothing ran again,
		// nothing counts as applied (the OWNER TO and publication the role
		// may not run are reported again, not present).
		if applied := row[4].(int64); applied != 0 {
			t.Errorf("shard %d: the rerun applied %d statements although nothing changed: %s", row[1], applied, notes)
		}
		if !strings.Contains(notes, "existence checks; 0 statements without one ran again") {
			t.Errorf("shard %d: statements without an existence check ran again: %s", row[1], notes)
		}
		t.Logf("shard %d: rerun without a dump: %d statements, %d applied, %d already present", row[1], row[3], row[4], row[5])
	}
	for k, s := range e.shards() {
		if got := query(t, s, e.dstDB, `SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`); strings.Join(got, ",") != "accounts,dba_audit,notes" {
			t.Errorf("shard %d tables after the rerun: %v", k, got)
		}
		if err := s.Exec(context.Background(), e.dstDB, `DROP TABLE dba_audit`); err != nil {
			t.Fatal(err)
		}
	}
	e.sync(t, commands.PhasePost)
	e.sync(t, commands.PhasePostCutover)
	for k, s := range e.shards() {
		if got := query(t, s, e.dstDB, `SELECT pubname || ' ' || puballtables || ' ' || pubinsert || pubupdate || pubdelete || pubtruncate FROM pg_publication`); len(got) != 1 || got[0] != "all_tables false truetruetruefalse" {
			t.Errorf("shard %d publications after POST_CUTOVER: %v", k, got)
		}
		if got := query(t, s, e.dstDB, `SELECT tablename FROM pg_publication_tables WHERE pubname = 'all_tables'`); strings.Join(got, ",") != "accounts,notes" {
			t.Errorf("shard %d: the publication carries %v", k, got)
		}
	}
}
