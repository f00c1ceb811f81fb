package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/tests/pgtest"
)

// Tables of shapes real schemas have (PostgREST's test schema has both):
// a column of a type with no binary input or output function (isn's
// isbn: the copy's units go again in text), and a table of no columns
// (CREATE TABLE t (), rows inserted with DEFAULT VALUES). Both copy, and
// their later rows stream; then the shards equal the source.
func TestCopyTypeWithoutBinaryAndTableWithoutColumns(t *testing.T) {
	e, _ := streamEnv(t, "cpshape", 2, `
		CREATE EXTENSION IF NOT EXISTS isn;
		CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
		CREATE TABLE books (id int PRIMARY KEY, customer_id bigint, code isbn, title text);
		CREATE TABLE no_columns ();
		ALTER TABLE no_columns REPLICA IDENTITY FULL;`, `
		INSERT INTO countries VALUES ('NL', 'Netherlands');
		INSERT INTO books SELECT g, g % 50, (d || CASE WHEN k = 10 THEN 'X' ELSE k::text END)::isbn, 'b' || g
		  FROM (SELECT g, d, (11 - (SELECT sum((11 - i) * substr(d, i, 1)::int) FROM generate_series(1, 9) i) % 11) % 11 AS k
		    FROM (SELECT g, '030' || lpad(g::text, 6, '0') AS d FROM generate_series(1, 300) g) b) c;
		INSERT INTO no_columns DEFAULT VALUES; INSERT INTO no_columns DEFAULT VALUES; INSERT INTO no_columns DEFAULT VALUES;`)
	src := e.src[0]
	src.exec(t, `INSERT INTO books VALUES (1001, 7, '0-306-40615-2', 'streamed');
		UPDATE books SET title = 'moved', customer_id = customer_id + 1 WHERE id % 5 = 0;
		INSERT INTO no_columns DEFAULT VALUES;`)
	e.waitCaughtUp(t, time.Minute)
	if state, msg := e.taskState(t); state != "streaming" {
		t.Fatalf("task: %s %s", state, msg)
	}
	verifyPlaced(t, e, "books")
	want := src.one(t, `SELECT count(*) FROM no_columns`)
	if want != "4" {
		t.Fatalf("source has %s rows of no_columns, want 4", want)
	}
	for k, d := range e.dst {
		if got := d.one(t, `SELECT count(*) FROM no_columns`); got != want {
			t.Errorf("shard %d has %s rows of no_columns (omni), the source %s", k, got, want)
		}
	}
}

// An extension's configuration table that holds rows of the extension's
// own (pg_extension_config_dump with a condition, as PostGIS's
// spatial_ref_sys): CREATE EXTENSION in SCHEMA_SYNC PRE fills it on the
// shards, so the copy takes only the rows matching the condition (the
// database's own, which pg_dump carries), the preflight checks only those
// empty, a resumed copy clears only those, and ABORT_TASK WITH DATA leaves
// the extension's rows. Its later changes stream, those of the extension's
// rows too. Before, the preflight
// refused the table as "not empty" on every shard.
func TestCopyExtensionConfigurationTable(t *testing.T) {
	ext := fmt.Sprintf("reshard_cfgtest_%d", os.Getpid())
	remove, err := pgtest.InstallExtension(cluster.BinDir, ext, "relocatable = true\nsuperuser = true\n", `
		CREATE TABLE ref_systems (srid int PRIMARY KEY, name text NOT NULL);
		INSERT INTO ref_systems SELECT g, 'standard ' || g FROM generate_series(1, 100) g;
		SELECT pg_catalog.pg_extension_config_dump('ref_systems', 'WHERE(srid > 100)');
		CREATE TABLE ext_log (id int PRIMARY KEY, note text);
		SELECT pg_catalog.pg_extension_config_dump('ext_log', '');`)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	// Update scripts to 1.1 and back, for a shard at another version.
	dir, err := pgtest.ExtensionDir(cluster.BinDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{ext + "--1.0--1.1.sql", ext + "--1.1--1.0.sql"} {
		path := filepath.Join(dir, f)
		if err := os.WriteFile(path, []byte("SELECT 1;\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(path) })
	}
	e, id := streamEnv(t, "cpext", 2, `
		CREATE EXTENSION `+ext+`;
		CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
		CREATE TABLE customers (id bigint PRIMARY KEY, name text);`, `
		INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 200) g;
		INSERT INTO ref_systems SELECT g, 'own ' || g FROM generate_series(101, 140) g;
		INSERT INTO ext_log VALUES (1, 'own'), (2, 'own');`)
	src := e.src[0]
	src.exec(t, `INSERT INTO ref_systems VALUES (141, 'streamed'), (142, 'streamed');
		UPDATE ref_systems SET name = 'own, changed' WHERE srid = 120;
		DELETE FROM ref_systems WHERE srid = 130;
		UPDATE ref_systems SET name = 'standard, changed' WHERE srid = 7;
		INSERT INTO ext_log VALUES (3, 'streamed');`)
	e.waitCaughtUp(t, time.Minute)
	if state, msg := e.taskState(t); state != "streaming" {
		t.Fatalf("task: %s %s", state, msg)
	}
	same := func(when string) {
		t.Helper()
		for _, table := range []string{"ref_systems", "ext_log"} {
			q := `SELECT count(*) || ' ' || coalesce(sum(hashtext(r::text)), 0) FROM ` + table + ` r`
			want := src.one(t, q)
			for k, d := range e.dst {
				if got := d.one(t, q); got != want {
					t.Errorf("%s: shard %d has %s (count, hash) of %s, the source %s", when, k, got, table, want)
				}
			}
		}
	}
	same("streaming")
	if got := src.one(t, `SELECT count(*) FROM ref_systems`); got != "141" {
		t.Fatalf("source has %s rows of ref_systems, want 141 (100 of the extension's, 41 own)", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	verifyMatches(t, ctx, e, 4)

	// ABORT_TASK WITH DATA empties the shards of the copy's rows: the
	// extension's own stay. (Its changed row is changed back first: a
	// copy leaves the extension's rows as the shards have them, as a
	// pg_dump restored onto them would.)
	src.exec(t, `UPDATE ref_systems SET name = 'standard 7' WHERE srid = 7`)
	e.waitCaughtUp(t, time.Minute)
	if _, err := e.exec.Execute(ctx, commands.AbortTask{Task: id, WithData: true}); err != nil {
		t.Fatalf("ABORT_TASK WITH DATA: %v", err)
	}
	for k, d := range e.dst {
		if got := d.one(t, `SELECT (SELECT count(*) FROM ref_systems WHERE srid <= 100) || ' ' || (SELECT count(*) FROM ref_systems WHERE srid > 100) || ' ' || (SELECT count(*) FROM ext_log)`); got != "100 0 0" {
			t.Errorf("shard %d after ABORT_TASK WITH DATA: extension's, own ref_systems rows, ext_log rows = %s, want 100 0 0", k, got)
		}
	}
	// A fresh copy is refused while a shard has the extension at another
	// version than the source (the rows it ships there may differ, and are
	// not copied), and while a shard has rows of the database's own in the
	// table (the message names the condition); then it passes the
	// preflight and ends equal.
	copyOnly := func() (*commands.Result, error) {
		return e.exec.Execute(ctx, commands.CopyData{Route: e.route(), Slot: "cpext_again", Foreground: true, SyncOnly: true})
	}
	e.dst[1].exec(t, `ALTER EXTENSION `+ext+` UPDATE TO '1.1'`)
	_, err = copyOnly()
	if err == nil || !strings.Contains(err.Error(), "extension "+ext+" is version 1.1 on") || !strings.Contains(err.Error(), "but 1.0 on the source") {
		t.Fatalf("COPY_DATA with the extension at 1.1 on shard 1: %v", err)
	}
	e.dst[1].exec(t, `ALTER EXTENSION `+ext+` UPDATE TO '1.0'`)
	e.dst[1].exec(t, `INSERT INTO ref_systems VALUES (777, 'left on a shard')`)
	_, err = copyOnly()
	if err == nil || !strings.Contains(err.Error(), "public.ref_systems WHERE (srid > 100)") || strings.Contains(err.Error(), "cpext_dst0") {
		t.Fatalf("COPY_DATA with a row of the database's own in ref_systems on shard 1: %v", err)
	}
	e.dst[1].exec(t, `DELETE FROM ref_systems WHERE srid = 777`)
	copied := func() bool {
		t.Helper()
		res, err := copyOnly()
		if err != nil {
			t.Fatalf("COPY_DATA after the abort: %v", err)
		}
		return res.Rows[0][2].(bool)
	}
	copied()
	same("copied again")
	// Resumed with the table's unit unfinished (as after a crash in the
	// middle of it: some of its rows on the shards), the copy clears only
	// the rows of the database's own before it copies the unit again.
	e.dst[0].exec(t, `UPDATE reshard.copy_units SET done = false, watermark_lsn = NULL, rows = NULL, bytes = NULL, finished_at = NULL
		WHERE slot = 'cpext_again' AND table_name = 'ref_systems'`)
	for _, d := range e.dst {
		d.exec(t, `INSERT INTO ref_systems VALUES (999, 'half copied')`)
	}
	if !copied() {
		t.Fatal("the second COPY_DATA with the slot did not resume the copy")
	}
	same("resumed")
}

// A character(n) sharding column (data_type varchar): its values carry
// trailing blanks that PostgreSQL drops from its text (and its hash), so
// rows are placed, copied and streamed by the key without them, where
// PostgreSQL's hash partitioning of the key as text (and VERIFY) finds
// them. Before, the preflight refused the column's type.
func TestCopyAndStreamCharacterKey(t *testing.T) {
	e, _ := streamEnvWith(t, "cpchar", 2, `
		CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
		CREATE TABLE accounts (acct char(5) PRIMARY KEY, name text, balance int);
		CREATE TABLE account_notes (id int PRIMARY KEY, acct character(5), note text);`, `
		INSERT INTO accounts SELECT chr(65 + g % 26) || g, 'n' || g, g FROM generate_series(1, 300) g;
		INSERT INTO accounts VALUES ('ALFKI', 'five', 5), ('x', 'one', 1), (' lead', 'leading blank', 0);
		INSERT INTO account_notes SELECT g, (SELECT acct FROM accounts ORDER BY acct OFFSET g % 303 LIMIT 1), 'note ' || g FROM generate_series(1, 600) g;`,
		func(e *copyEnv) func() {
			f, err := os.OpenFile(e.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprint(f, "\n[[sharded_tables]]\ndatabase = \"dst\"\ncolumn = \"acct\"\ndata_type = \"varchar\"\n")
			f.Close()
			e.load(t)
			return func() {}
		}, nil)
	src := e.src[0]
	src.exec(t, `INSERT INTO accounts VALUES ('NEW1', 'streamed', 1), ('Z', 'streamed', 2);
		UPDATE accounts SET acct = 'Q' WHERE acct = 'B1';
		UPDATE account_notes SET acct = 'ALFKI' WHERE id % 7 = 0;
		UPDATE account_notes SET acct = 'Z', note = 'moved' WHERE id % 11 = 0;
		DELETE FROM account_notes WHERE id % 13 = 0;
		DELETE FROM accounts WHERE acct = 'C2';`)
	e.waitCaughtUp(t, time.Minute)
	if state, msg := e.taskState(t); state != "streaming" {
		t.Fatalf("task: %s %s", state, msg)
	}
	for _, table := range []string{"accounts", "account_notes"} {
		q := `SELECT count(*) || ' ' || coalesce(sum(hashtext(r::text)::numeric), 0) FROM ` + table + ` r`
		var n, sum float64
		for k, d := range e.dst {
			d.exec(t, `CREATE SCHEMA IF NOT EXISTS chk; CREATE TABLE IF NOT EXISTS chk.hp_text (k text) PARTITION BY HASH (k)`)
			if bad := d.one(t, fmt.Sprintf(`SELECT count(*) FROM %s WHERE NOT satisfies_hash_partition('chk.hp_text'::regclass, 2, %d, acct::text)`, table, k)); bad != "0" {
				t.Errorf("%s: %s rows on shard %d belong to the other shard", table, bad, k)
			}
			var c, s float64
			fmt.Sscan(strings.Replace(d.one(t, q), " ", "\n", 1), &c, &s)
			if c == 0 {
				t.Errorf("%s: shard %d holds no row", table, k)
			}
			n, sum = n+c, sum+s
		}
		if got, want := fmt.Sprintf("%.0f %.0f", n, sum), src.one(t, q); got != want {
			t.Errorf("%s: the shards hold %s (count, hash), the source %s", table, got, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	verifyMatches(t, ctx, e, 3)
}
