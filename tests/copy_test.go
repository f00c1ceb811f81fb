package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

// node is a database on one harness instance.
type node struct {
	inst *pgtest.Instance
	db   string
}

func (n node) exec(t *testing.T, sql string) {
	t.Helper()
	if err := n.inst.Exec(context.Background(), n.db, sql); err != nil {
		t.Fatalf("%s on %s: %v", abbrev(sql), n.db, err)
	}
}

func (n node) one(t *testing.T, sql string) string {
	t.Helper()
	rows := query(t, n.inst, n.db, sql)
	if len(rows) != 1 {
		t.Fatalf("%s: %d rows", sql, len(rows))
	}
	return rows[0]
}

func abbrev(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}

// copyEnv is a source cluster and a destination cluster made of databases
// on the harness instances.
type copyEnv struct {
	src, dst  []node
	cat       *catalog.Catalog
	exec      *commands.Executor
	cfgPath   string
	usersPath string
	// publication is the route's publication: all_tables unless set.
	publication string
	// logs, when set, receives the executor's log at level info (load).
	logs *testkit.Buffer
}

// newCopyEnv creates nSrc source databases and nDst destination databases
// (spread over the instances), and a config: customers sharded by id, every
// table with customer_id sharded by it, the rest omni.
func newCopyEnv(t *testing.T, name string, nSrc, nDst int, general string) *copyEnv {
	t.Helper()
	return newCopyEnvOn(t, name, cluster.Instances[0], cluster.Instances[1:3], nSrc, nDst, general)
}

// newCopyEnvOn is newCopyEnv with the source databases on src and the
// destination databases spread over dst.
func newCopyEnvOn(t *testing.T, name string, src *pgtest.Instance, dst []*pgtest.Instance, nSrc, nDst int, general string) *copyEnv {
	t.Helper()
	ctx := context.Background()
	var srcs, dsts []node
	for i := 0; i < nSrc; i++ {
		n := node{src, fmt.Sprintf("%s_src%d", name, i)}
		if err := n.inst.CreateDatabase(ctx, n.db); err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, n)
	}
	for i := 0; i < nDst; i++ {
		n := node{dst[i%len(dst)], fmt.Sprintf("%s_dst%d", name, i)}
		if err := n.inst.CreateDatabase(ctx, n.db); err != nil {
			t.Fatal(err)
		}
		dsts = append(dsts, n)
	}
	return newEnvFrom(t, srcs, dsts, general)
}

// newEnvFrom makes an env of existing databases: the source shards (in
// shard order) and the destination shards, and its config: customers
// sharded by id, every table with customer_id sharded by it, the rest omni.
func newEnvFrom(t *testing.T, srcs, dsts []node, general string) *copyEnv {
	t.Helper()
	e := &copyEnv{src: srcs, dst: dsts}
	var b strings.Builder
	fmt.Fprintf(&b, "[general]\nhost = \"127.0.0.1\"\nport = %d\nresharding_parallel_copies = 4\n%s\n\n[admin]\npassword = %q\n\n", freePort(t), general, adminPassword)
	for i, n := range srcs {
		fmt.Fprintf(&b, "[[databases]]\nname = \"src\"\nhost = \"127.0.0.1\"\nport = %d\ndatabase_name = %q\nshard = %d\n\n", n.inst.Port, n.db, i)
	}
	for i, n := range dsts {
		fmt.Fprintf(&b, "[[databases]]\nname = \"dst\"\nhost = \"127.0.0.1\"\nport = %d\ndatabase_name = %q\nshard = %d\n\n", n.inst.Port, n.db, i)
	}
	b.WriteString("[[sharded_tables]]\ndatabase = \"dst\"\nname = \"customers\"\ncolumn = \"id\"\n\n[[sharded_tables]]\ndatabase = \"dst\"\ncolumn = \"customer_id\"\n")
	e.cfgPath, e.usersPath = testkit.WriteConfig(t, t.TempDir(), b.String())
	e.load(t)
	t.Cleanup(func() {
		// A task left running would stream (and reconnect, and hold its
		// slot) under the tests after this one: stop every task of the
		// env's executor first.
		stopTasks(e.exec)
		// The replication origins the streams made (reshard_<slot>_<k>)
		// hold replication state slots of the shared instances, as many
		// as max_replication_slots: drop this test's, named after the
		// slots on its databases (forward slots on the sources, reverse
		// ones on the shards).
		var slots []string
		for _, n := range append(append([]node(nil), e.src...), e.dst...) {
			conn, err := n.inst.Connect(context.Background(), n.db)
			if err != nil {
				continue
			}
			rows, err := conn.Query(context.Background(), `SELECT slot_name::text FROM pg_replication_slots WHERE database = current_database()`)
			if err == nil {
				names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
				slots = append(slots, names...)
			}
			conn.Close(context.Background())
		}
		dropOrigins(e, slots)
		// Slots hold WAL on the shared instances: drop this test's slots.
		for _, s := range e.src {
			conn, err := s.inst.Connect(context.Background(), s.db)
			if err == nil {
				_, _ = conn.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database() AND NOT active`)
				conn.Close(context.Background())
			}
		}
	})
	return e
}

// dropOrigins drops, on every instance of the env, the replication
// origins of the streams of slots (those not in use; errors are ignored).
func dropOrigins(e *copyEnv, slots []string) {
	if len(slots) == 0 {
		return
	}
	seen := map[*pgtest.Instance]bool{}
	for _, n := range append(append([]node(nil), e.src...), e.dst...) {
		if seen[n.inst] {
			continue
		}
		seen[n.inst] = true
		conn, err := n.inst.Connect(context.Background(), n.db)
		if err != nil {
			continue
		}
		rows, err := conn.Query(context.Background(), `SELECT roname::text FROM pg_replication_origin o
			WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) s WHERE starts_with(o.roname, left('reshard_' || s || '_', 63)))`, slots)
		if err == nil {
			names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
			for _, name := range names {
				_, _ = conn.Exec(context.Background(), `SELECT pg_replication_origin_drop($1)`, name)
			}
		}
		conn.Close(context.Background())
	}
}

// stopTasks ends every task exec runs, as a shutdown of reshard would
// (each is cancelled and waited for, 30 seconds at most).
func stopTasks(exec *commands.Executor) {
	if exec == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exec.Tasks.StopAll(ctx)
}

// load (re)reads the env's config files into its catalog and executor.
func (e *copyEnv) load(t *testing.T) {
	t.Helper()
	cat, err := catalog.Load(e.cfgPath, e.usersPath)
	if err != nil {
		t.Fatal(err)
	}
	e.cat = cat
	if e.logs != nil {
		e.exec = commands.NewExecutor(cat, hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: e.logs}))
		return
	}
	e.exec = commands.NewExecutor(cat, hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: os.Stderr}))
}

// copySchema is the source schema of the copy tests.
const copySchema = `
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, region text);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric(10,2),
  note text, doubled numeric GENERATED ALWAYS AS (total * 2) STORED);
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE events (id bigint NOT NULL, customer_id bigint, at date NOT NULL, payload jsonb, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE notes (uid uuid PRIMARY KEY, customer_id bigint, body text);
CREATE PUBLICATION all_tables FOR ALL TABLES;
`

// loadData fills source shard i of n with rows whose ids are ≡ i mod n.
func loadData(t *testing.T, n node, i, of, rows int) {
	t.Helper()
	n.exec(t, fmt.Sprintf(`
INSERT INTO customers (id, name, region) SELECT g, 'c' || g, (ARRAY['eu','us',NULL])[1 + g %% 3] FROM generate_series(1, %[1]d) g WHERE g %% %[2]d = %[3]d;
INSERT INTO orders (id, customer_id, total, note)
  SELECT g, CASE WHEN g %% 17 = 0 THEN NULL ELSE 1 + (g * 7) %% %[1]d END, (g %% 1000) / 7.0, E'tab\there\nnew ''line'' \\ ' || g
  FROM generate_series(1, %[1]d * 3) g WHERE g %% %[2]d = %[3]d AND (g %% 17 = 0 OR (1 + (g * 7) %% %[1]d) IN (SELECT id FROM customers));
INSERT INTO events SELECT g, CASE WHEN g %% 11 = 0 THEN NULL ELSE g %% 500 END, DATE '2025-06-01' + (g %% 400), jsonb_build_object('g', g)
  FROM generate_series(1, %[1]d) g WHERE g %% %[2]d = %[3]d;
INSERT INTO notes SELECT md5(g::text)::uuid, g %% 300, repeat('x', g %% 50) FROM generate_series(1, %[1]d) g WHERE g %% %[2]d = %[3]d;
`, rows, of, i))
	// The omni table is the same on every source shard.
	n.exec(t, `INSERT INTO countries VALUES ('NL','Netherlands'),('DE','Germany'),('JP','Japan')`)
}

func (e *copyEnv) setup(t *testing.T, rows int) {
	t.Helper()
	for i, s := range e.src {
		s.exec(t, copySchema)
		loadData(t, s, i, len(e.src), rows)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: commands.PhasePre, Route: e.route()}); err != nil {
		t.Fatalf("SCHEMA_SYNC PRE: %v", err)
	}
}

func (e *copyEnv) route() commands.Route {
	pub := e.publication
	if pub == "" {
		pub = "all_tables"
	}
	return commands.Route{Source: "src", Destination: "dst", Publication: pub}
}

func (e *copyEnv) copy(t *testing.T, slot string) *commands.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := e.exec.Execute(ctx, commands.CopyData{Route: e.route(), Slot: slot, Foreground: true, SyncOnly: true})
	if err != nil {
		var ce *commands.Error
		if errors.As(err, &ce) {
			t.Fatalf("copy: [%s] %s", ce.Code, ce.Message)
		}
		t.Fatalf("copy: %v", err)
	}
	return res
}

// checksum is count and an order-independent sum of row hashes.
func checksum(t *testing.T, n node, table, where string) (int64, string) {
	t.Helper()
	row := n.one(t, fmt.Sprintf(`SELECT count(*), coalesce(sum(hashtext(x::text)::numeric), 0) FROM ONLY %s x %s`, table, where))
	f := strings.Split(row, " | ")
	var c int64
	fmt.Sscan(f[0], &c)
	return c, f[1]
}

// verifyCopy checks every table: the union of the destination shards
// equals the union of the source shards, rows sit on their shard, omni
// tables are whole on every shard, NULL keys are on shard 0.
func (e *copyEnv) verifyCopy(t *testing.T) {
	t.Helper()
	sharded := map[string]string{"customers": "id", "orders": "customer_id", "events_2025": "customer_id", "events_2026": "customer_id", "notes": "customer_id"}
	for _, table := range []string{"customers", "orders", "events_2025", "events_2026", "notes", "countries"} {
		var srcCount int64
		var srcRows []string
		for _, s := range e.src {
			srcRows = append(srcRows, query(t, s.inst, s.db, fmt.Sprintf("SELECT x::text FROM ONLY %s x", table))...)
		}
		if table == "countries" {
			srcRows = query(t, e.src[0].inst, e.src[0].db, "SELECT x::text FROM countries x")
		}
		srcCount = int64(len(srcRows))
		var dstRows []string
		for k, d := range e.dst {
			rows := query(t, d.inst, d.db, fmt.Sprintf("SELECT x::text FROM ONLY %s x", table))
			col, isSharded := sharded[table]
			if !isSharded {
				if strings.Join(rows, "\n") != strings.Join(srcRows, "\n") {
					t.Fatalf("omni table %s on shard %d differs from the source (%d vs %d rows)", table, k, len(rows), len(srcRows))
				}
				continue
			}
			dstRows = append(dstRows, rows...)
			typ := d.one(t, fmt.Sprintf(`SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '%s'::regclass AND attname = '%s'`, table, col))
			// READ WRITE: a shard is read-only after a rollback.
			d.exec(t, fmt.Sprintf(`BEGIN READ WRITE; CREATE SCHEMA IF NOT EXISTS chk; CREATE TABLE IF NOT EXISTS chk.hp_%s (k %s) PARTITION BY HASH (k); COMMIT`, strings.ReplaceAll(typ, " ", "_"), typ))
			bad := d.one(t, fmt.Sprintf(`SELECT count(*) FROM ONLY %s WHERE NOT satisfies_hash_partition('chk.hp_%s'::regclass, %d, %d, %s)`,
				table, strings.ReplaceAll(typ, " ", "_"), len(e.dst), k, col))
			if bad != "0" {
				t.Fatalf("%s: %s rows on shard %d belong elsewhere", table, bad, k)
			}
			nulls := d.one(t, fmt.Sprintf(`SELECT count(*) FROM ONLY %s WHERE %s IS NULL`, table, col))
			if k > 0 && nulls != "0" {
				t.Fatalf("%s: %s NULL-key rows on shard %d (they belong on shard 0)", table, nulls, k)
			}
		}
		if _, isSharded := sharded[table]; isSharded {
			sortStrings(dstRows)
			sortStrings(srcRows)
			if int64(len(dstRows)) != srcCount || strings.Join(dstRows, "\n") != strings.Join(srcRows, "\n") {
				t.Fatalf("%s: shards hold %d rows, source %d; differences:\n%s", table, len(dstRows), srcCount, firstLines(diff(srcRows, dstRows), 10))
			}
			if srcCount == 0 {
				t.Fatalf("%s: no rows to compare", table)
			}
		}
	}
	// Generated columns are computed on the destination.
	for k, d := range e.dst {
		hasGenerated := d.one(t, `SELECT count(*) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'doubled' AND NOT attisdropped`) == "1"
		if hasGenerated {
			if bad := d.one(t, `SELECT count(*) FROM orders WHERE doubled IS DISTINCT FROM total * 2`); bad != "0" {
				t.Fatalf("shard %d: %s rows with a wrong generated column", k, bad)
			}
		}
		if typ := d.one(t, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'customer_id'`); typ != "bigint" {
			t.Fatalf("orders.customer_id is %s on the destination, want bigint (widened with customers.id)", typ)
		}
	}
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], "…")
	}
	return strings.Join(lines, "\n")
}

func sortStrings(s []string) { sort.Strings(s) }

func TestCopyTwoShards(t *testing.T) {
	e := newCopyEnv(t, "cp2", 1, 2, "")
	e.setup(t, 3000)
	res := e.copy(t, "cp2_slot")
	if res.Rows[0][0] != "cp2_slot" || res.Rows[0][2] != false {
		t.Fatalf("result %v", res.Rows[0])
	}
	e.verifyCopy(t)
}

func TestCopyThreeShardsText(t *testing.T) {
	e := newCopyEnv(t, "cp3", 1, 3, `resharding_copy_format = "text"`)
	e.setup(t, 2000)
	e.copy(t, "cp3_slot")
	e.verifyCopy(t)
}

func TestCopyTwoSourceShards(t *testing.T) {
	e := newCopyEnv(t, "cpss", 2, 2, "")
	e.setup(t, 2000)
	e.copy(t, "cpss_slot")
	e.verifyCopy(t)
	for i, s := range e.src {
		if n := s.one(t, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cpss_slot_`+fmt.Sprint(i)+`'`); n != "1" {
			t.Fatalf("source shard %d has no slot cpss_slot_%d", i, i)
		}
	}
}

// TestCopyIsTheSnapshot: rows written after the slot exists are not in a
// --sync-only copy, and the copy equals the source as of the slot.
func TestCopyIsTheSnapshot(t *testing.T) {
	e := newCopyEnv(t, "cpsnap", 1, 2, "resharding_split_threshold = 65536")
	e.setup(t, 20000)
	// Enough data that the copy is still running when the writes come.
	e.src[0].exec(t, `CREATE TABLE bulk (id bigint PRIMARY KEY, customer_id bigint, pad text);
		INSERT INTO bulk SELECT g, g % 1000, repeat(md5(g::text), 4) FROM generate_series(1, 300000) g`)
	for _, d := range e.dst {
		d.exec(t, `CREATE TABLE bulk (id bigint PRIMARY KEY, customer_id bigint, pad text)`)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.exec.Execute(context.Background(), commands.CopyData{Route: e.route(), Slot: "cpsnap_slot", Foreground: true, SyncOnly: true})
		done <- err
	}()
	// The plan is recorded after the slot (and its snapshot) exist.
	deadline := time.Now().Add(time.Minute)
	for e.dst[0].one(t, `SELECT to_regclass('reshard.copy_units') IS NOT NULL`) != "true" || e.dst[0].one(t, `SELECT count(*) FROM reshard.copy_units`) == "0" {
		if time.Now().After(deadline) {
			t.Fatal("copy never started")
		}
		time.Sleep(2 * time.Millisecond)
	}
	e.src[0].exec(t, `INSERT INTO customers (id, name) VALUES (999001, 'late'), (999002, 'late');
		UPDATE orders SET note = 'changed late' WHERE id % 5 = 0; DELETE FROM notes WHERE customer_id < 10;`)
	if pending := e.dst[0].one(t, `SELECT count(*) FROM reshard.copy_units WHERE NOT done`); pending == "0" {
		t.Fatal("the copy finished before the concurrent writes: the test proves nothing; grow its data")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for k, d := range e.dst {
		if n := d.one(t, `SELECT count(*) FROM customers WHERE name = 'late'`); n != "0" {
			t.Fatalf("shard %d has %s rows inserted after the snapshot", k, n)
		}
		if n := d.one(t, `SELECT count(*) FROM orders WHERE note = 'changed late'`); n != "0" {
			t.Fatalf("shard %d has %s rows updated after the snapshot", k, n)
		}
	}
	var total int
	for _, d := range e.dst {
		var n int
		fmt.Sscan(d.one(t, `SELECT count(*) FROM notes WHERE customer_id < 10`), &n)
		total += n
	}
	if total == 0 {
		t.Fatal("rows deleted after the snapshot are missing from the copy")
	}
}

func TestCopyPreflight(t *testing.T) {
	expect := func(t *testing.T, e *copyEnv, contains ...string) {
		t.Helper()
		_, err := e.exec.Execute(context.Background(), commands.CopyData{Route: e.route(), Slot: "pf_slot", Foreground: true})
		var ce *commands.Error
		if !errors.As(err, &ce) {
			t.Fatalf("want a preflight error, got %v", err)
		}
		for _, c := range contains {
			if !strings.Contains(ce.Message, c) {
				t.Fatalf("[%s] %s\ndoes not mention %q", ce.Code, ce.Message, c)
			}
		}
		if ce.Code != "55000" {
			t.Fatalf("code %s", ce.Code)
		}
		for _, s := range e.src {
			if n := s.one(t, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); n != "0" {
				t.Fatalf("preflight failure left %s slots", n)
			}
		}
		for _, d := range e.dst {
			if n := d.one(t, `SELECT count(*) FROM pg_namespace WHERE nspname = 'reshard'`); n != "0" {
				t.Fatal("preflight failure created copy state")
			}
		}
	}
	t.Run("no primary key", func(t *testing.T) {
		e := newCopyEnv(t, "pf1", 1, 2, "")
		e.setup(t, 100)
		e.src[0].exec(t, `CREATE TABLE loose (customer_id bigint, v text); CREATE TABLE loose2 (v text)`)
		for _, d := range e.dst {
			d.exec(t, `CREATE TABLE loose (customer_id bigint, v text); CREATE TABLE loose2 (v text)`)
		}
		expect(t, e, "without a primary key or replica identity", "public.loose, public.loose2")
	})
	t.Run("sharding column of another type than data_type", func(t *testing.T) {
		// customer_id is the sharding column, data_type bigint (left out):
		// a varchar one would fail the copy mid-way, a uuid one would be
		// hashed as bytes; a domain over an integer is an integer.
		e := newCopyEnv(t, "pf5", 1, 2, "")
		e.setup(t, 100)
		ddl := `CREATE DOMAIN ukey AS uuid; CREATE DOMAIN ikey AS int4; CREATE DOMAIN iikey AS ikey;
			CREATE TABLE vkeyed (id int PRIMARY KEY, customer_id varchar(8));
			CREATE TABLE dkeyed (id int PRIMARY KEY, customer_id ukey);
			CREATE TABLE okkeyed (id int PRIMARY KEY, customer_id iikey)`
		e.src[0].exec(t, ddl)
		for _, d := range e.dst {
			d.exec(t, ddl)
		}
		expect(t, e, `table public.vkeyed: its sharding column customer_id is of type varchar, but its [[sharded_tables]] entry says data_type = "bigint"`,
			`set data_type = "varchar"`, `table public.dkeyed: its sharding column customer_id is of type ukey (a domain over uuid)`, `set data_type = "uuid"`)
		_, err := e.exec.Execute(context.Background(), commands.CopyData{Route: e.route(), Slot: "pf_slot", Foreground: true})
		if strings.Contains(err.Error(), "okkeyed") {
			t.Fatalf("a domain over a domain over integer refused: %v", err)
		}
	})
	t.Run("missing publication", func(t *testing.T) {
		e := newCopyEnv(t, "pf2", 1, 2, "")
		e.setup(t, 100)
		e.src[0].exec(t, `DROP PUBLICATION all_tables`)
		expect(t, e, `publication "all_tables" does not exist`)
	})
	t.Run("destination not empty", func(t *testing.T) {
		e := newCopyEnv(t, "pf3", 1, 2, "")
		e.setup(t, 100)
		e.dst[1].exec(t, `INSERT INTO countries VALUES ('XX', 'x'); INSERT INTO customers (id, name) VALUES (1, 'x')`)
		expect(t, e, "tables not empty", "public.countries", "public.customers")
	})
	t.Run("wal_level replica", func(t *testing.T) {
		ctx := context.Background()
		replica, err := pgtest.Start(ctx, 1, pgtest.Options{Settings: map[string]string{"wal_level": "replica"}})
		if err != nil {
			t.Fatal(err)
		}
		defer replica.Stop()
		e := newCopyEnv(t, "pf4", 1, 2, "")
		e.setup(t, 100)
		// Point the source at a server with wal_level = replica, same schema.
		inst := replica.Instances[0]
		if err := inst.CreateDatabase(ctx, "pf4_src0"); err != nil {
			t.Fatal(err)
		}
		n := node{inst, "pf4_src0"}
		n.exec(t, copySchema)
		cfg, _ := os.ReadFile(e.cfgPath)
		os.WriteFile(e.cfgPath, []byte(strings.Replace(string(cfg), fmt.Sprintf("port = %d\ndatabase_name = \"pf4_src0\"", cluster.Instances[0].Port), fmt.Sprintf("port = %d\ndatabase_name = \"pf4_src0\"", inst.Port), 1)), 0o600)
		cat, err := catalog.Load(e.cfgPath, e.usersPath)
		if err != nil {
			t.Fatal(err)
		}
		e.exec = commands.NewExecutor(cat, hclog.NewNullLogger())
		e.src = []node{n}
		expect(t, e, "wal_level = replica", "set wal_level = logical")
	})
}

// TestTableCopiesShowsRanges copies a large table split into ranges through
// the admin server and watches SHOW TABLE_COPIES.
func TestTableCopiesShowsRanges(t *testing.T) {
	e := newCopyEnv(t, "cpshow", 1, 2, "resharding_split_threshold = 262144")
	e.setup(t, 100)
	e.src[0].exec(t, `CREATE TABLE big (id bigint PRIMARY KEY, customer_id bigint, pad text);
		INSERT INTO big SELECT g, g % 1000, repeat(md5(g::text), 4) FROM generate_series(1, 300000) g;`)
	for _, d := range e.dst {
		d.exec(t, `CREATE TABLE big (id bigint PRIMARY KEY, customer_id bigint, pad text)`)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := e.exec.Execute(ctx, commands.CopyData{Route: e.route(), Slot: "cpshow_slot"})
	if err != nil {
		t.Fatal(err)
	}
	taskID := res.Rows[0][0].(string)
	maxRunning, ranges := 0, 0
	for {
		show, err := e.exec.Execute(ctx, commands.Show{Name: "table_copies"})
		if err != nil {
			t.Fatal(err)
		}
		running, bigRows := 0, 0
		for _, r := range show.Rows {
			if r[1] == "big" {
				bigRows++
				if r[2] == "copying" {
					running++
				}
			}
		}
		if running > maxRunning {
			maxRunning = running
		}
		if bigRows > ranges {
			ranges = bigRows
		}
		tasks, _ := e.exec.Execute(ctx, commands.Show{Name: "tasks"})
		state := tasks.Rows[0][5].(string)
		if state != "copying" {
			if state != "streaming" {
				t.Fatalf("task %s ended %s: %s", taskID, state, tasks.Rows[0][8])
			}
			// The copy is over: finished ranges stay listed as done while the
			// task streams.
			show, _ := e.exec.Execute(ctx, commands.Show{Name: "table_copies"})
			for _, r := range show.Rows {
				if r[2] != "done" || r[13].(float64) != 100 {
					t.Fatalf("after the copy, SHOW TABLE_COPIES lists %v", r[:3])
				}
			}
			if _, err := e.exec.Execute(ctx, commands.StopTask{Task: taskID}); err != nil {
				t.Fatal(err)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("big split into %d ranges, at most %d copying at once", ranges, maxRunning)
	if ranges < 4 || maxRunning < 2 {
		t.Fatalf("big was split into %d ranges with at most %d copying at once; want >= 4 ranges, several at once", ranges, maxRunning)
	}
	var total int
	for _, d := range e.dst {
		var n int
		fmt.Sscan(d.one(t, `SELECT count(*) FROM big`), &n)
		total += n
	}
	if total != 300000 {
		t.Fatalf("big: %d rows on the shards, want 300000", total)
	}
}
