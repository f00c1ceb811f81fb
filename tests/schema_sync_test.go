package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/wire"
)

// schemaEnv is a source database and a two-shard destination on the
// harness instances, with a catalog describing them.
type schemaEnv struct {
	srcDB, dstDB string
	cat          *catalog.Catalog
	exec         *commands.Executor
	cfgPath      string
	usersPath    string
}

func (e *schemaEnv) src() *pgtest.Instance      { return cluster.Instances[0] }
func (e *schemaEnv) shards() []*pgtest.Instance { return cluster.Instances[1:3] }

// newSchemaEnv creates fresh databases and a catalog. extra is appended to
// [general]; mutate may edit the config text (e.g. break a port).
func newSchemaEnv(t *testing.T, name string, mutate func(string) string) *schemaEnv {
	t.Helper()
	ctx := context.Background()
	e := &schemaEnv{srcDB: name + "_src", dstDB: name + "_dst"}
	if err := e.src().CreateDatabase(ctx, e.srcDB); err != nil {
		t.Fatal(err)
	}
	for _, s := range e.shards() {
		if err := s.CreateDatabase(ctx, e.dstDB); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fmt.Sprintf(`[general]
host = "127.0.0.1"
port = %d
resharding_parallel_copies = 3

[admin]
password = %q

[[databases]]
name = "src"
host = "127.0.0.1"
port = %d
database_name = %q

[[databases]]
name = "dst"
host = "127.0.0.1"
port = %d
database_name = %q
shard = 0

[[databases]]
name = "dst"
host = "127.0.0.1"
port = %d
database_name = %q
shard = 1

[[sharded_tables]]
database = "dst"
column = "user_id"
`, freePort(t), adminPassword, e.src().Port, e.srcDB, e.shards()[0].Port, e.dstDB, e.shards()[1].Port, e.dstDB)
	if mutate != nil {
		cfg = mutate(cfg)
	}
	users := fmt.Sprintf(`[[users]]
name = %q
database = "src"
password = %q
schema_admin = true

[[users]]
name = %q
database = "dst"
password = %q
schema_admin = true
`, pgtest.User, pgtest.Password, pgtest.User, pgtest.Password)
	dir := t.TempDir()
	e.cfgPath, e.usersPath = filepath.Join(dir, "pgdog.toml"), filepath.Join(dir, "users.toml")
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.usersPath, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Load(e.cfgPath, e.usersPath)
	if err != nil {
		t.Fatal(err)
	}
	e.cat = cat
	e.exec = commands.NewExecutor(cat, hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: os.Stderr}))
	return e
}

func (e *schemaEnv) loadSource(t *testing.T, sql string) {
	t.Helper()
	if err := e.src().Exec(context.Background(), e.srcDB, sql); err != nil {
		t.Fatal(err)
	}
}

func (e *schemaEnv) sync(t *testing.T, phase commands.Phase) *commands.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: phase, Route: commands.Route{Source: "src", Destination: "dst", Publication: "all_tables"}})
	if err != nil {
		var ce *commands.Error
		if errors.As(err, &ce) {
			t.Fatalf("SCHEMA_SYNC %s: [%s] %s\nhint: %s", phase, ce.Code, ce.Message, ce.Hint)
		}
		t.Fatalf("SCHEMA_SYNC %s: %v", phase, err)
	}
	if len(res.Rows) != 2 {
		t.Fatalf("SCHEMA_SYNC %s: %d summary rows, want one per shard", phase, len(res.Rows))
	}
	for _, row := range res.Rows {
		if failed := row[6].(int64); failed != 0 {
			t.Fatalf("SCHEMA_SYNC %s: shard %d had %d failures: %v", phase, row[1], failed, row[8])
		}
	}
	return res
}

// query returns every row of a one-column-per-field query as strings.
func query(t *testing.T, inst *pgtest.Instance, db, sql string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := inst.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = fmt.Sprint(v)
		}
		out = append(out, strings.Join(parts, " | "))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

const userSchemas = `n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')`

const columnsQuery = `SELECT table_schema, table_name, column_name, data_type, udt_name, is_nullable,
  coalesce(column_default, ''), is_identity, is_generated, coalesce(generation_expression, '')
FROM information_schema.columns WHERE table_schema IN ('public', 'billing')`

const constraintsQuery = `SELECT n.nspname, c.relname, con.conname, con.contype, pg_get_constraintdef(con.oid), con.convalidated
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ` + userSchemas

const indexesQuery = `SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes WHERE schemaname IN ('public', 'billing')`

// fingerprint is the catalog state a schema phase may change.
const fingerprintQuery = `SELECT 'col', table_schema || '.' || table_name || '.' || column_name || ' ' || data_type || ' ' || coalesce(column_default, '')
  FROM information_schema.columns WHERE table_schema IN ('public', 'billing')
UNION ALL SELECT 'con', conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) || convalidated FROM pg_constraint WHERE connamespace IN (SELECT oid FROM pg_namespace WHERE nspname IN ('public', 'billing'))
UNION ALL SELECT 'idx', indexdef FROM pg_indexes WHERE schemaname IN ('public', 'billing')
UNION ALL SELECT 'seq', schemaname || '.' || sequencename || ' ' || data_type::text || ' ' || increment_by || ' ' || coalesce(last_value, -1) FROM pg_sequences
UNION ALL SELECT 'trg', tgname || ' ' || tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal
UNION ALL SELECT 'view', schemaname || '.' || viewname || ' ' || definition FROM pg_views WHERE schemaname IN ('public', 'billing')
UNION ALL SELECT 'fn', p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ('public', 'billing')
UNION ALL SELECT 'type', typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname IN ('public', 'billing')
UNION ALL SELECT 'ext', extname FROM pg_extension
UNION ALL SELECT 'pub', pubname FROM pg_publication
UNION ALL SELECT 'comment', coalesce(obj_description(c.oid), '') || coalesce(col_description(c.oid, 1), '') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'billing')
UNION ALL SELECT 'inherits', inhrelid::regclass::text || ' ' || inhparent::regclass::text FROM pg_inherits`

// widened are the columns the realistic schema's integer keys widen.
var widened = map[string]bool{
	"public.users.id": true, "public.orders.id": true, "public.orders.user_id": true,
	"public.products.id": true, "public.order_items.order_id": true, "public.order_items.product_id": true,
	"public.order_items.user_id": true, "billing.invoices.user_id": true, "billing.invoices.order_id": true,
	"public.Weird Names; Inc.Id": true,
	// A view column selecting a widened key follows it.
	"billing.user_totals.user_id": true,
}

func TestSchemaSyncRealistic(t *testing.T) {
	e := newSchemaEnv(t, "ssreal", nil)
	schemaSQL, err := os.ReadFile("testdata/realistic_schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	e.loadSource(t, string(schemaSQL))
	// A role the destination does not have: its GRANT is reported, not fatal.
	e.loadSource(t, `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'reporting_ro') THEN CREATE ROLE reporting_ro; END IF; END $$;
		GRANT SELECT ON orders TO reporting_ro;`)
	for _, s := range e.shards() {
		// The role exists on the source instance only.
		if err := s.Exec(context.Background(), "postgres", "DROP ROLE IF EXISTS reporting_ro"); err != nil {
			t.Fatal(err)
		}
	}

	// PRE.
	res := e.sync(t, commands.PhasePre)
	if notes := res.Rows[0][8].(string); !strings.Contains(notes, "reporting_ro") || !strings.Contains(notes, "widened") {
		t.Fatalf("PRE notes do not report the missing role and widened keys: %q", notes)
	}
	srcCols := query(t, e.src(), e.srcDB, columnsQuery)
	var want []string
	for _, c := range srcCols {
		f := strings.Split(c, " | ")
		if widened[f[0]+"."+f[1]+"."+f[2]] {
			if f[3] != "integer" {
				t.Fatalf("expected %s to be integer on the source, got %s", c, f[3])
			}
			f[3], f[4] = "bigint", "int8"
		}
		want = append(want, strings.Join(f, " | "))
	}
	sort.Strings(want)
	srcPK := query(t, e.src(), e.srcDB, constraintsQuery+` AND con.contype = 'p'`)
	for i, s := range e.shards() {
		got := query(t, s, e.dstDB, columnsQuery)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("shard %d columns differ after PRE:\n%s", i, diff(want, got))
		}
		if pk := query(t, s, e.dstDB, constraintsQuery+` AND con.contype = 'p'`); strings.Join(pk, "\n") != strings.Join(srcPK, "\n") {
			t.Fatalf("shard %d primary keys after PRE:\n%v\nwant\n%v", i, pk, srcPK)
		}
		if idx := query(t, s, e.dstDB, `SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisprimary AND n.nspname IN ('public', 'billing')`); len(idx) != 0 {
			t.Fatalf("shard %d has secondary indexes after PRE: %v", i, idx)
		}
		if fk := query(t, s, e.dstDB, constraintsQuery+` AND con.contype = 'f'`); len(fk) != 0 {
			t.Fatalf("shard %d has foreign keys after PRE: %v", i, fk)
		}
	}
	before := query(t, e.shards()[1], e.dstDB, fingerprintQuery)
	res = e.sync(t, commands.PhasePre)
	noneApplied(t, "second PRE", res)
	if after := query(t, e.shards()[1], e.dstDB, fingerprintQuery); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("second PRE changed the schema:\n%s", diff(before, after))
	}

	// POST.
	e.sync(t, commands.PhasePost)
	srcIdx := query(t, e.src(), e.srcDB, indexesQuery)
	srcCons := query(t, e.src(), e.srcDB, constraintsQuery)
	for i, s := range e.shards() {
		if got := query(t, s, e.dstDB, indexesQuery); strings.Join(got, "\n") != strings.Join(srcIdx, "\n") {
			t.Fatalf("shard %d indexes after POST:\n%s", i, diff(srcIdx, got))
		}
		if got := query(t, s, e.dstDB, constraintsQuery); strings.Join(got, "\n") != strings.Join(srcCons, "\n") {
			t.Fatalf("shard %d constraints after POST (all validated, as on the source):\n%s", i, diff(srcCons, got))
		}
		if trg := query(t, s, e.dstDB, `SELECT tgname FROM pg_trigger WHERE NOT tgisinternal`); len(trg) != 1 || trg[0] != "orders_touch" {
			t.Fatalf("shard %d triggers: %v", i, trg)
		}
		if ri := query(t, s, e.dstDB, `SELECT relreplident::text FROM pg_class WHERE oid = 'public.order_items'::regclass`); ri[0] != "f" {
			t.Fatalf("shard %d replica identity of order_items = %v", i, ri)
		}
	}
	before = query(t, e.shards()[0], e.dstDB, fingerprintQuery)
	noneApplied(t, "second POST", e.sync(t, commands.PhasePost))
	noneApplied(t, "PRE after POST", e.sync(t, commands.PhasePre)) // PRE after POST is a no-op too
	if after := query(t, e.shards()[0], e.dstDB, fingerprintQuery); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("second POST changed the schema:\n%s", diff(before, after))
	}

	// CUTOVER: rows exist (ids up to 500 on the source, 900 on a shard);
	// afterwards shard k hands out k mod 2 above every value anywhere.
	e.loadSource(t, `INSERT INTO users (email, name) SELECT 'u' || g || '@x.io', 'u' FROM generate_series(1, 500) g`)
	if err := e.shards()[1].Exec(context.Background(), e.dstDB, `INSERT INTO users (id, email, name) VALUES (900, 'z@x.io', 'z')`); err != nil {
		t.Fatal(err)
	}
	e.sync(t, commands.PhaseCutover)
	seen := map[int64]bool{}
	for k, s := range e.shards() {
		inc := query(t, s, e.dstDB, `SELECT increment_by FROM pg_sequences WHERE sequencename = 'users_id_seq'`)
		if inc[0] != "2" {
			t.Fatalf("shard %d users_id_seq increment %v", k, inc)
		}
		for _, v := range query(t, s, e.dstDB, `SELECT nextval('users_id_seq') FROM generate_series(1, 5)`) {
			var n int64
			fmt.Sscan(v, &n)
			if n <= 900+0 || n%2 != int64(k) || seen[n] {
				t.Fatalf("shard %d handed out %d (must be > 900, ≡ %d mod 2, unique)", k, n, k)
			}
			seen[n] = true
		}
	}
	before = query(t, e.shards()[0], e.dstDB, fingerprintQuery)
	e.sync(t, commands.PhaseCutover)
	if after := query(t, e.shards()[0], e.dstDB, fingerprintQuery); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("second CUTOVER changed sequences:\n%s", diff(before, after))
	}

	// POST_CUTOVER: the publication is on every shard; twice is fine.
	e.sync(t, commands.PhasePostCutover)
	e.sync(t, commands.PhasePostCutover)
	for k, s := range e.shards() {
		if p := query(t, s, e.dstDB, `SELECT pubname, puballtables FROM pg_publication`); len(p) != 1 || p[0] != "all_tables | true" {
			t.Fatalf("shard %d publications: %v", k, p)
		}
	}
}

// noneApplied checks that a rerun's summary is honest: nothing changed,
// so no statement counts as applied; each is already present.
func noneApplied(t *testing.T, what string, res *commands.Result) {
	t.Helper()
	for _, row := range res.Rows {
		if applied, skipped, stmts := row[4].(int64), row[5].(int64), row[3].(int64); applied != 0 || skipped != stmts {
			t.Errorf("%s on shard %d: %d of %d statements applied, %d already present; want all already present (notes: %v)", what, row[1], applied, stmts, skipped, row[8])
		}
	}
}

func diff(want, got []string) string {
	w, g := map[string]bool{}, map[string]bool{}
	for _, s := range want {
		w[s] = true
	}
	for _, s := range got {
		g[s] = true
	}
	var b strings.Builder
	for _, s := range want {
		if !g[s] {
			b.WriteString("  - " + s + "\n")
		}
	}
	for _, s := range got {
		if !w[s] {
			b.WriteString("  + " + s + "\n")
		}
	}
	return b.String()
}

func TestSchemaSyncDryRun(t *testing.T) {
	e := newSchemaEnv(t, "ssdry", nil)
	e.loadSource(t, `CREATE TABLE t (id serial PRIMARY KEY, user_id int NOT NULL, note text);
		CREATE INDEX t_user ON t (user_id); CREATE PUBLICATION all_tables FOR ALL TABLES;`)
	ctx := context.Background()
	for _, phase := range []commands.Phase{commands.PhasePre, commands.PhasePost} {
		res, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: phase, DryRun: true, Route: commands.Route{Source: "src", Destination: "dst", Publication: "all_tables"}})
		if err != nil {
			t.Fatal(err)
		}
		shards := map[int64]int{}
		var all []string
		for _, row := range res.Rows {
			shards[row[0].(int64)]++
			all = append(all, row[2].(string))
		}
		if len(shards) != 2 || shards[0] != shards[1] || shards[0] == 0 {
			t.Fatalf("%s dry run: statements per shard %v", phase, shards)
		}
		text := strings.Join(all, "\n")
		switch phase {
		case commands.PhasePre:
			if !strings.Contains(text, "id bigint NOT NULL") || !strings.Contains(text, "PRIMARY KEY (id)") || strings.Contains(text, "CREATE INDEX") {
				t.Fatalf("PRE dry run SQL:\n%s", text)
			}
		case commands.PhasePost:
			if !strings.Contains(text, "CREATE INDEX t_user") {
				t.Fatalf("POST dry run SQL:\n%s", text)
			}
		}
	}
	for k, s := range e.shards() {
		if n := query(t, s, e.dstDB, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'`); n[0] != "0" {
			t.Fatalf("dry run created %s relations on shard %d", n[0], k)
		}
	}
}

func expectSchemaError(t *testing.T, e *schemaEnv, code, contains string) *commands.Error {
	t.Helper()
	_, err := e.exec.Execute(context.Background(), commands.SchemaSync{Phase: commands.PhasePre, Route: commands.Route{Source: "src", Destination: "dst", Publication: "all_tables"}})
	var ce *commands.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want an error [%s] %q, got %v", code, contains, err)
	}
	if ce.Code != code || !strings.Contains(ce.Message, contains) {
		t.Fatalf("got [%s] %s, want [%s] containing %q", ce.Code, ce.Message, code, contains)
	}
	return ce
}

func shardsEmpty(t *testing.T, e *schemaEnv) {
	t.Helper()
	for k, s := range e.shards() {
		if n := query(t, s, e.dstDB, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'`); n[0] != "0" {
			t.Fatalf("shard %d was changed (%s relations) by a failed sync", k, n[0])
		}
	}
}

func TestSchemaSyncErrors(t *testing.T) {
	t.Run("missing publication", func(t *testing.T) {
		e := newSchemaEnv(t, "sserr1", nil)
		e.loadSource(t, `CREATE TABLE t (id int PRIMARY KEY)`)
		ce := expectSchemaError(t, e, "42704", `publication "all_tables" does not exist on source`)
		if !strings.Contains(ce.Hint, "CREATE PUBLICATION") {
			t.Fatalf("hint %q", ce.Hint)
		}
		shardsEmpty(t, e)
	})
	t.Run("missing pg_dump", func(t *testing.T) {
		e := newSchemaEnv(t, "sserr2", func(c string) string {
			return c + "\n[replication]\npg_dump_path = \"/nonexistent/pg_dump\"\n"
		})
		e.loadSource(t, `CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION all_tables FOR ALL TABLES`)
		expectSchemaError(t, e, "58P01", `pg_dump not found at "/nonexistent/pg_dump"`)
		shardsEmpty(t, e)
	})
	t.Run("pg_dump older than the server", func(t *testing.T) {
		dir := t.TempDir()
		fake := filepath.Join(dir, "pg_dump")
		if err := os.WriteFile(fake, []byte("#!/bin/sh\necho 'pg_dump (PostgreSQL) 13.4'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		e := newSchemaEnv(t, "sserr3", func(c string) string {
			return c + fmt.Sprintf("\n[replication]\npg_dump_path = %q\n", fake)
		})
		e.loadSource(t, `CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION all_tables FOR ALL TABLES`)
		expectSchemaError(t, e, "XX000", "pg_dump 13 is older than the source server (PostgreSQL 15): install pg_dump 15 or newer")
		shardsEmpty(t, e)
	})
	t.Run("unreachable shard", func(t *testing.T) {
		dead := freePort(t)
		e := newSchemaEnv(t, "sserr4", func(c string) string {
			return strings.Replace(c, fmt.Sprintf("port = %d", cluster.Instances[2].Port), fmt.Sprintf("port = %d", dead), 1)
		})
		e.loadSource(t, `CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION all_tables FOR ALL TABLES`)
		ce := expectSchemaError(t, e, "08006", fmt.Sprintf("cannot connect to dst shard 1 at 127.0.0.1:%d", dead))
		if !strings.Contains(ce.Message, "nothing was changed") {
			t.Fatalf("message does not say nothing changed: %s", ce.Message)
		}
		shardsEmpty(t, e)
	})
	t.Run("failing statement names shard and sqlstate", func(t *testing.T) {
		e := newSchemaEnv(t, "sserr5", nil)
		e.loadSource(t, `CREATE TABLE t (id int PRIMARY KEY, user_id int); CREATE TABLE u (id int PRIMARY KEY); CREATE PUBLICATION all_tables FOR ALL TABLES`)
		// Shard 1 already has a conflicting object named u.
		if err := e.shards()[1].Exec(context.Background(), e.dstDB, `CREATE TYPE u AS (x int)`); err != nil {
			t.Fatal(err)
		}
		ce := expectSchemaError(t, e, "42P07", `dst shard 1`)
		if !strings.Contains(ce.Message, `relation "u" already exists`) || !strings.Contains(ce.Message, "CREATE TABLE public.u") {
			t.Fatalf("message does not name the statement and cause: %s", ce.Message)
		}
		if !strings.Contains(ce.Hint, "run the phase again") || !strings.Contains(ce.Hint, "shard 0:") {
			t.Fatalf("hint does not report progress and how to resume: %q", ce.Hint)
		}
	})
}

// TestShowSchemaSyncDuringPost builds indexes on a table large enough to take
// seconds and watches SHOW SCHEMA_SYNC from a second admin connection.
func TestShowSchemaSyncDuringPost(t *testing.T) {
	e := newSchemaEnv(t, "ssshow", nil)
	e.loadSource(t, `CREATE TABLE bulk (id bigint PRIMARY KEY, user_id bigint, v double precision, s text);
		CREATE INDEX bulk_v ON bulk (v); CREATE INDEX bulk_s ON bulk (s); CREATE INDEX bulk_expr ON bulk ((v * 2), s);
		CREATE PUBLICATION all_tables FOR ALL TABLES;`)
	e.sync(t, commands.PhasePre)
	for _, s := range e.shards() {
		if err := s.Exec(context.Background(), e.dstDB, `INSERT INTO bulk SELECT g, g % 1000, random(), md5(g::text) FROM generate_series(1, 600000) g`); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := wire.New(e.cat, e.exec, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx) }()
	defer func() { stop(); <-done }()
	dsn := fmt.Sprintf("postgres://admin:%s@%s/admin?sslmode=disable", adminPassword, srv.Addr())
	a, b := connect(t, ctx, dsn), connect(t, ctx, dsn)

	postErr := make(chan error, 1)
	go func() {
		_, err := a.Exec(ctx, "SCHEMA_SYNC POST src dst all_tables")
		postErr <- err
	}()
	var sawRunning []string
	for len(sawRunning) == 0 {
		select {
		case err := <-postErr:
			t.Fatalf("POST finished (%v) before SHOW SCHEMA_SYNC saw a running index build", err)
		default:
		}
		rows, err := b.Query(ctx, "SHOW SCHEMA_SYNC")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var database, user, kind, state, elapsed, schema, table, sql string
			var shard, elapsedMS int64
			var started *time.Time
			if err := rows.Scan(&database, &user, &shard, &kind, &state, &started, &elapsed, &elapsedMS, &schema, &table, &sql); err != nil {
				t.Fatal(err)
			}
			if state == "running" && kind == "index" && strings.HasPrefix(sql, "CREATE INDEX") && table == "bulk" && started != nil && database == "dst" {
				sawRunning = append(sawRunning, fmt.Sprintf("shard %d: %s", shard, sql))
			}
		}
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := <-postErr; err != nil {
		t.Fatalf("POST: %v", err)
	}
	t.Logf("SHOW SCHEMA_SYNC saw: %v", sawRunning)
	var n int
	rows, _ := b.Query(ctx, "SHOW SCHEMA_SYNC")
	for rows.Next() {
		n++
	}
	if rows.Err() != nil || n != 0 {
		t.Fatalf("SHOW SCHEMA_SYNC lists %d statements after POST finished (%v)", n, rows.Err())
	}
}
