package testkit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

// TestCompareShards: shards split by PostgreSQL's own hash partitioning
// compare equal; each kind of broken copy is caught: rows moved to the
// wrong shard (counts and hash sums still agree), rows doubled on one
// shard and missing on the other, a changed value, a lost omni row, a NULL
// key off shard 0.
func TestCompareShards(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := pgtest.Start(ctx, 1, pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	inst := cl.Instances[0]
	const schema = `CREATE TABLE t (id bigint, k bigint, v text); CREATE INDEX t_k ON t (k);
		CREATE TABLE c (code text PRIMARY KEY, name text NOT NULL DEFAULT 'x');
		CREATE TEMP TABLE hp (k bigint) PARTITION BY HASH (k);`
	conns := map[string]*pgx.Conn{}
	for _, db := range []string{"src", "s0", "s1"} {
		if err := inst.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
		c, err := inst.Connect(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, schema); err != nil {
			t.Fatal(err)
		}
		conns[db] = c
	}
	exec := func(db, sql string) {
		t.Helper()
		if _, err := conns[db].Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %s: %v", db, sql, err)
		}
	}
	exec("src", `INSERT INTO t SELECT g, g % 97, md5(g::text) FROM generate_series(1, 2000) g; INSERT INTO t VALUES (0, NULL, 'null key');
		INSERT INTO c VALUES ('JP', 'Japan'), ('FR', 'France')`)
	for k, db := range []string{"s0", "s1"} {
		exec(db, `INSERT INTO c VALUES ('JP', 'Japan'), ('FR', 'France')`)
		// The source's rows of this shard, through a file-less copy: the
		// rows are regenerated and filtered by the same hash.
		where := "satisfies_hash_partition('pg_temp.hp'::regclass, 2, " + string(rune('0'+k)) + ", (g % 97)::bigint)"
		exec(db, `INSERT INTO t SELECT g, g % 97, md5(g::text) FROM generate_series(1, 2000) g WHERE `+where)
	}
	exec("s0", `INSERT INTO t VALUES (0, NULL, 'null key')`)
	tables := []testkit.Table{{Name: "t", Key: "k"}, {Name: "c"}}
	compare := func() testkit.Comparison {
		t.Helper()
		res, err := testkit.CompareShards(ctx, []*pgx.Conn{conns["src"]}, []*pgx.Conn{conns["s0"], conns["s1"]}, tables)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := compare(); !res.Equal() || res.Rows != 2003 {
		t.Fatalf("a correct split: %s (%d rows)", res, res.Rows)
	}
	breaks := []struct{ name, do, undo, want string }{
		{"a changed value", `UPDATE t SET v = v || '!' WHERE id = (SELECT min(id) FROM t WHERE k IS NOT NULL)`, `UPDATE t SET v = rtrim(v, '!') WHERE id = (SELECT min(id) FROM t WHERE k IS NOT NULL)`, "shards hold"},
		{"a lost omni row", `DELETE FROM c WHERE code = 'FR'`, `INSERT INTO c VALUES ('FR', 'France')`, "omni c on shard"},
	}
	// Moved: 5 rows of s1 deleted there and inserted on s0.
	var moved [][]any
	rows, _ := conns["s1"].Query(ctx, `DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY id LIMIT 5) RETURNING id, k, v`)
	for rows.Next() {
		v, _ := rows.Values()
		moved = append(moved, v)
	}
	if rows.Err() != nil || len(moved) != 5 {
		t.Fatalf("moving rows: %v (%d)", rows.Err(), len(moved))
	}
	for _, v := range moved {
		if _, err := conns["s0"].Exec(ctx, `INSERT INTO t VALUES ($1, $2, $3)`, v...); err != nil {
			t.Fatal(err)
		}
	}
	if res := compare(); res.Equal() || !strings.Contains(res.String(), "belong on another shard") || strings.Contains(res.String(), "shards hold") {
		t.Fatalf("rows moved to the wrong shard: %s", res)
	}
	// Doubled and missing: the moved rows twice on s0, and 5 more of s1's
	// rows gone, so that the total count still agrees.
	for _, v := range moved {
		if _, err := conns["s0"].Exec(ctx, `INSERT INTO t VALUES ($1, $2, $3)`, v...); err != nil {
			t.Fatal(err)
		}
	}
	exec("s1", `DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY id LIMIT 5)`)
	if res := compare(); res.Equal() || !strings.Contains(res.String(), "shards hold") {
		t.Fatalf("rows doubled on one shard, missing on the other: %s", res)
	}
	t.Logf("doubled on shard 0, missing on shard 1: %s", compare())
	// Back to a correct split.
	exec("s0", `TRUNCATE t; INSERT INTO t SELECT g, g % 97, md5(g::text) FROM generate_series(1, 2000) g WHERE satisfies_hash_partition('pg_temp.hp'::regclass, 2, 0, (g % 97)::bigint); INSERT INTO t VALUES (0, NULL, 'null key')`)
	exec("s1", `TRUNCATE t; INSERT INTO t SELECT g, g % 97, md5(g::text) FROM generate_series(1, 2000) g WHERE satisfies_hash_partition('pg_temp.hp'::regclass, 2, 1, (g % 97)::bigint)`)
	if res := compare(); !res.Equal() {
		t.Fatalf("split again: %s", res)
	}
	for _, b := range breaks {
		exec("s1", b.do)
		if res := compare(); res.Equal() || !strings.Contains(res.String(), b.want) {
			t.Fatalf("%s: %s", b.name, res)
		}
		exec("s1", b.undo)
	}
	// A NULL key belongs on shard 0.
	exec("s0", `DELETE FROM t WHERE k IS NULL`)
	exec("s1", `INSERT INTO t VALUES (0, NULL, 'null key')`)
	if res := compare(); res.Equal() || !strings.Contains(res.String(), "1 rows on shard 1 belong on another shard") {
		t.Fatalf("NULL key on shard 1: %s", res)
	}

	// Catalogs: equal schemas list equally; a missing index, a changed
	// default and an extra column are named.
	want, err := testkit.Catalog(ctx, conns["src"], "public")
	if err != nil {
		t.Fatal(err)
	}
	got, err := testkit.Catalog(ctx, conns["s0"], "public")
	if err != nil {
		t.Fatal(err)
	}
	if d := testkit.DiffLines(want, got); len(d) != 0 || len(want) < 8 {
		t.Fatalf("equal schemas: %d lines, differences %v", len(want), d)
	}
	exec("s1", `DROP INDEX t_k; ALTER TABLE c ALTER COLUMN name SET DEFAULT 'y'; ALTER TABLE t ADD COLUMN extra int`)
	got, err = testkit.Catalog(ctx, conns["s1"], "public")
	if err != nil {
		t.Fatal(err)
	}
	d := strings.Join(testkit.DiffLines(want, got), "\n")
	for _, w := range []string{"- index CREATE INDEX t_k ON public.t USING btree (k)", "- column c.name text NOT NULL DEFAULT 'x'::text",
		"+ column c.name text NOT NULL DEFAULT 'y'::text", "+ column t.extra integer"} {
		if !strings.Contains(d, w) {
			t.Errorf("catalog diff lacks %q:\n%s", w, d)
		}
	}
}
