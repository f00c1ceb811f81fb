package tests

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/tests/testkit"
)

// partitionSchema is a partition tree as real schemas have them (Pagila's
// payment, GitLab's partitioned CI tables): serial integer keys, two levels
// of partitioning and default partitions, and foreign keys declared only on
// some partitions (payment), only on the root (rental), and on both
// (visit). smallint kind is a discriminator inside payment's key.
const partitionSchema = `
CREATE TABLE customer (customer_id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE payment (payment_id serial, customer_id int NOT NULL, kind smallint NOT NULL, paid date NOT NULL, amount numeric(8,2),
  PRIMARY KEY (paid, payment_id, kind)) PARTITION BY RANGE (paid);
CREATE TABLE payment_2024 PARTITION OF payment FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY LIST (kind);
CREATE TABLE payment_2024_k1 PARTITION OF payment_2024 FOR VALUES IN (1);
CREATE TABLE payment_2024_other PARTITION OF payment_2024 DEFAULT;
CREATE TABLE payment_2025 PARTITION OF payment FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE payment_default PARTITION OF payment DEFAULT;
ALTER TABLE payment_2024_k1 ADD FOREIGN KEY (customer_id) REFERENCES customer;
ALTER TABLE payment_2025 ADD FOREIGN KEY (customer_id) REFERENCES customer;
CREATE TABLE rental (rental_id serial, customer_id int NOT NULL REFERENCES customer, at date NOT NULL, PRIMARY KEY (rental_id, at)) PARTITION BY RANGE (at);
CREATE TABLE rental_old PARTITION OF rental FOR VALUES FROM (MINVALUE) TO ('2025-01-01');
CREATE TABLE rental_new PARTITION OF rental FOR VALUES FROM ('2025-01-01') TO (MAXVALUE);
CREATE TABLE visit (visit_id serial, customer_id int NOT NULL REFERENCES customer, at date NOT NULL, PRIMARY KEY (visit_id, at)) PARTITION BY RANGE (at);
CREATE TABLE visit_a PARTITION OF visit FOR VALUES FROM (MINVALUE) TO ('2025-01-01');
CREATE TABLE visit_b PARTITION OF visit FOR VALUES FROM ('2025-01-01') TO (MAXVALUE);
ALTER TABLE visit_b ADD CONSTRAINT visit_b_customer FOREIGN KEY (customer_id) REFERENCES customer;
INSERT INTO countries VALUES ('NL', 'Netherlands'), ('JP', 'Japan');
INSERT INTO customer (name) SELECT 'c' || g FROM generate_series(1, 300) g;
INSERT INTO payment (customer_id, kind, paid, amount)
  SELECT 1 + g % 300, 1 + g % 3, DATE '2024-01-01' + (g % 800), (g % 1000) / 10.0 FROM generate_series(1, 4000) g;
INSERT INTO rental (customer_id, at) SELECT 1 + g % 300, DATE '2024-06-01' + (g % 400) FROM generate_series(1, 2000) g;
INSERT INTO visit (customer_id, at) SELECT 1 + g % 300, DATE '2024-06-01' + (g % 400) FROM generate_series(1, 1500) g;
`

// partitionTables are the leaves and roots compared after a reshard.
var partitionTables = []string{"customer", "payment", "payment_2024", "payment_2024_k1", "payment_2024_other", "payment_2025",
	"payment_default", "rental", "rental_old", "rental_new", "visit", "visit_a", "visit_b", "countries"}

// compareSourceAndShards compares each table with testkit.CompareShards
// (the comparison the benchmarks use): count and sum of row hashes of the
// source (the union of the source shards for a sharded table, source
// shard 0 for an omni table) against the union of the shards (a sharded table) or against
// every shard (omni), and that every row of a sharded table sits on the
// shard PostgreSQL's hash partitioning gives its key. Each table is read
// with ONLY (a relation's own rows, none for a partitioned table) and
// without (a root is its whole tree).
func (e *copyEnv) compareSourceAndShards(t *testing.T, tables []string, keyOf map[string]string) {
	t.Helper()
	ctx := context.Background()
	conn := func(n node) *pgx.Conn {
		c, err := n.inst.Connect(ctx, n.db)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(ctx) })
		return c
	}
	var shards []*pgx.Conn
	for _, d := range e.dst {
		shards = append(shards, conn(d))
	}
	var list []testkit.Table
	for _, table := range tables {
		for _, only := range []bool{true, false} {
			list = append(list, testkit.Table{Name: table, Key: keyOf[table], Only: only})
		}
	}
	var srcs []*pgx.Conn
	for _, s := range e.src {
		srcs = append(srcs, conn(s))
	}
	res, err := testkit.CompareShards(ctx, srcs, shards, list)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range res.Diffs {
		t.Error(d)
	}
	t.Logf("source and shards compared: %d rows", res.Rows)
}

// misplaced counts the rows of rel on shard k of n that PostgreSQL's hash
// partitioning of key puts on another shard.
func misplaced(t *testing.T, d node, rel, key string, n, k int) int64 {
	t.Helper()
	return misplacedAs(t, d, rel, key, "bigint", n, k)
}

// misplacedAs is misplaced for a key hashed as type typ (bigint, text or
// uuid).
func misplacedAs(t *testing.T, d node, rel, key, typ string, n, k int) int64 {
	t.Helper()
	ctx := context.Background()
	conn, err := d.inst.Connect(ctx, d.db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// (A temporary table, also on a shard a rollback made read-only.)
	if _, err := conn.Exec(ctx, `SET default_transaction_read_only = off`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TEMP TABLE hp (k `+typ+`) PARTITION BY HASH (k)`); err != nil {
		t.Fatal(err)
	}
	var out int64
	if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s WHERE NOT satisfies_hash_partition('pg_temp.hp'::regclass, %d, %d, %s::%s)`, rel, n, k, key, typ)).Scan(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func checksumOf(t *testing.T, n node, rel string) (int64, string) {
	t.Helper()
	f := strings.Split(n.one(t, fmt.Sprintf(`SELECT count(*), coalesce(sum(hashtext(x::text)::numeric), 0)::text FROM %s x`, rel)), " | ")
	var c int64
	fmt.Sscan(f[0], &c)
	return c, f[1]
}

// columnTypes lists table.column type for the given columns of every
// table of the fixture, as a node has them.
func columnTypes(t *testing.T, n node) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, row := range query(t, n.inst, n.db, `SELECT table_name || '.' || column_name, data_type FROM information_schema.columns
		WHERE table_schema = 'public' AND column_name IN ('payment_id', 'customer_id', 'kind', 'rental_id', 'visit_id')`) {
		f := strings.Split(row, " | ")
		out[f[0]] = f[1]
	}
	return out
}

// TestReshardPartitionTrees reshards the partition fixture with
// publish_via_partition_root false and true, streams inserts, updates that
// move rows between partitions (across levels), deletes and TRUNCATE, and
// compares source and shards with its own SQL.
func TestReshardPartitionTrees(t *testing.T) {
	for _, viaRoot := range []bool{false, true} {
		t.Run(fmt.Sprintf("publish_via_partition_root=%v", viaRoot), func(t *testing.T) {
			name := "ptree"
			if viaRoot {
				name = "ptreeroot"
			}
			// Small split threshold: payment is copied as several ranges
			// (ctid ranges over the whole tree when published via its root).
			e := newCopyEnv(t, name, 1, 2, "resharding_split_threshold = 32768")
			// Rules naming the roots only: a partition follows the rule of
			// the table above it, in the copy and in the stream.
			cfg, err := os.ReadFile(e.cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			var rules strings.Builder
			for _, root := range []string{"customer", "payment", "rental", "visit"} {
				fmt.Fprintf(&rules, "[[sharded_tables]]\ndatabase = \"dst\"\nname = %q\ncolumn = \"customer_id\"\n\n", root)
			}
			generic := "[[sharded_tables]]\ndatabase = \"dst\"\ncolumn = \"customer_id\"\n"
			if !strings.Contains(string(cfg), generic) {
				t.Fatal("the copy env's config changed: update this test")
			}
			if err := os.WriteFile(e.cfgPath, []byte(strings.Replace(string(cfg), generic, rules.String(), 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			e.load(t)
			src := e.src[0]
			src.exec(t, partitionSchema)
			src.exec(t, fmt.Sprintf(`CREATE PUBLICATION all_tables FOR ALL TABLES WITH (publish_via_partition_root = %v)`, viaRoot))
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			res, err := e.exec.Execute(ctx, commands.Reshard{Route: e.route()})
			if err != nil {
				t.Fatalf("RESHARD: %v", err)
			}
			id := res.Rows[0][0].(string)
			for {
				state, msg := e.taskState(t)
				if state == "streaming" {
					break
				}
				if state == "failed" || state == "stopped" {
					t.Fatalf("RESHARD %s %s: %s", id, state, msg)
				}
				time.Sleep(20 * time.Millisecond)
			}
			// Every table of a tree has the same types; generated keys
			// and the foreign keys to them are bigint, the smallint
			// discriminator stays smallint.
			want := columnTypes(t, src)
			for col := range want {
				want[col] = "bigint"
				if strings.HasSuffix(col, ".kind") {
					want[col] = "smallint"
				}
			}
			for k, d := range e.dst {
				got := columnTypes(t, d)
				for col, typ := range want {
					if got[col] != typ {
						t.Errorf("shard %d: %s is %s, want %s", k, col, got[col], typ)
					}
				}
				// FKs on leaves, on the root, on both: all there, valid.
				if n := d.one(t, `SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated`); n != "0" {
					t.Errorf("shard %d: %s foreign keys not validated", k, n)
				}
				if got, want := d.one(t, `SELECT count(*) FROM pg_constraint WHERE contype = 'f'`), src.one(t, `SELECT count(*) FROM pg_constraint WHERE contype = 'f'`); got != want {
					t.Errorf("shard %d: %s foreign keys, source %s", k, got, want)
				}
			}
			keys := map[string]string{}
			for _, table := range partitionTables {
				if table != "countries" {
					keys[table] = "customer_id"
				}
			}
			e.compareSourceAndShards(t, partitionTables, keys)
			units := "payment_2024_other"
			if viaRoot {
				units = "payment"
			}
			if n := e.dst[0].one(t, `SELECT count(*) FROM reshard.copy_units WHERE table_name = '`+units+`'`); n == "1" || n == "0" {
				t.Errorf("%s copied as %s units, want several ranges", units, n)
			}

			// The stream: inserts into every level, updates moving rows
			// across the first level (paid) and the second (kind), deletes,
			// and TRUNCATE.
			src.exec(t, `
INSERT INTO payment (customer_id, kind, paid, amount) SELECT 1 + g % 300, 1 + g % 3, DATE '2024-03-01' + g, 1 FROM generate_series(1, 500) g;
UPDATE payment SET paid = paid + 400 WHERE payment_id % 7 = 0;
UPDATE payment SET kind = 2 WHERE kind = 1 AND payment_id % 5 = 0;
UPDATE payment SET amount = amount + 1 WHERE payment_id % 3 = 0;
DELETE FROM payment WHERE payment_id % 11 = 0;
UPDATE rental SET at = at + 300 WHERE rental_id % 4 = 0;
DELETE FROM rental WHERE rental_id % 9 = 0;
INSERT INTO visit (customer_id, at) SELECT 1 + g % 300, DATE '2025-06-01' + g FROM generate_series(1, 100) g;`)
			e.waitCaughtUp(t, time.Minute)
			e.compareSourceAndShards(t, partitionTables, keys)
			// TRUNCATE: of a root always reaches the shards; of a single
			// partition only without publish_via_partition_root
			// (PostgreSQL does not publish it through the root).
			src.exec(t, `TRUNCATE visit`)
			if !viaRoot {
				src.exec(t, `TRUNCATE rental_old`)
			}
			e.waitCaughtUp(t, time.Minute)
			e.compareSourceAndShards(t, partitionTables, keys)
			for k, d := range e.dst {
				if n := d.one(t, `SELECT count(*) FROM visit`); n != "0" {
					t.Errorf("shard %d: TRUNCATE visit left %s rows", k, n)
				}
			}
			// VERIFY reads the trees too: every table matches with rows.
			vres, err := e.exec.Execute(ctx, commands.Verify{Route: e.route(), Foreground: true})
			if err != nil {
				t.Fatalf("VERIFY: %v (%v)", err, vres)
			}
			seen := 0
			for _, row := range vres.Rows {
				if row[3] != "match" {
					t.Errorf("VERIFY %v", row)
				}
				if row[2] == "payment" || row[2] == "payment_2025" {
					seen++
					if row[4].(int64) == 0 {
						t.Errorf("VERIFY compared no rows of %s: %v", row[2], row)
					}
				}
			}
			if seen != 1 {
				t.Errorf("VERIFY listed %d of payment / payment_2025 (want the published one only): %v", seen, vres.Rows)
			}
		})
	}
}
