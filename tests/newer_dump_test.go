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
)

// fakePgDump writes an executable that answers --version as pg_dump of
// version says, prints dump when asked for database db (the source), and
// an empty dump for any other (the shards, which schema sync dumps to see
// what they hold): the plain output of a pg_dump this machine does not
// have (Debian ships 15), for SCHEMA_SYNC to read through [replication]
// pg_dump_path.
func fakePgDump(t *testing.T, version, db, dump string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dump.sql"), []byte(dump), 0o644); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
if [ "$1" = "--version" ]; then echo 'pg_dump (PostgreSQL) %s'; exit 0; fi
for a in "$@"; do if [ "$a" = %q ]; then cat %q; exit 0; fi; done
echo '-- PostgreSQL database dump'
`, version, db, filepath.Join(dir, "dump.sql"))
	path := filepath.Join(dir, "pg_dump")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// usePgDump sets [replication] pg_dump_path in the env's config.
func (e *copyEnv) usePgDump(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(e.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[replication]\npg_dump_path = %q\n", path)
	f.Close()
	e.load(t)
}

// TestSchemaSyncNewerPgDump runs SCHEMA_SYNC PRE and POST with the plain
// output of pg_dump 17 (\restrict / \unrestrict, SET transaction_timeout,
// an identity column, views over JSON_TABLE and JSON_VALUE, a function
// whose SQL-standard body is a MERGE ... RETURNING): onto PostgreSQL 17
// shards, whose objects then work; and, the same dump's tables, onto
// PostgreSQL 15 shards, which do not know transaction_timeout.
func TestSchemaSyncNewerPgDump(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../sync/schema/testdata/pg17.dump.sql")
	if err != nil {
		t.Fatal(err)
	}
	dump := string(b)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sync := func(t *testing.T, e *copyEnv, phases ...commands.Phase) {
		t.Helper()
		for _, p := range phases {
			if _, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: p, Route: e.route()}); err != nil {
				t.Fatalf("SCHEMA_SYNC %s: %v", p, err)
			}
		}
	}
	t.Run("onto 17", func(t *testing.T) {
		c := startVersion(t, 17, 2, nil)
		e := newCopyEnvOn(t, "nd17", c.Instances[0], c.Instances[1:], 1, 2, "")
		e.src[0].exec(t, `CREATE PUBLICATION all_tables FOR ALL TABLES`)
		e.usePgDump(t, fakePgDump(t, "17.10", e.src[0].db, dump))
		sync(t, e, commands.PhasePre, commands.PhasePost)
		for k, d := range e.dst {
			d.exec(t, `INSERT INTO docs (customer_id, body) VALUES (1, '{"title": "t", "items": [{"sku": "a", "qty": 2, "parts": ["p1", "p2"]}]}');
				SELECT * FROM restock('a', 3); SELECT * FROM restock('a', 1)`)
			if got := d.one(t, `SELECT string_agg(sku || ':' || qty || ':' || part, ',' ORDER BY part) FROM doc_items`); got != "a:2:p1,a:2:p2" {
				t.Fatalf("shard %d: the JSON_TABLE view gives %q", k, got)
			}
			if got := d.one(t, `SELECT title || ' ' || archived FROM doc_summary`); got != "t false" {
				t.Fatalf("shard %d: the JSON_VALUE view gives %q", k, got)
			}
			if got := d.one(t, `SELECT qty FROM stock WHERE sku = 'a'`); got != "4" {
				t.Fatalf("shard %d: restock (MERGE ... RETURNING) left qty %s", k, got)
			}
			if got := d.one(t, `SELECT count(*) FROM pg_indexes WHERE indexname = 'docs_customer_id_idx'`); got != "1" {
				t.Fatalf("shard %d: POST did not build docs_customer_id_idx", k)
			}
		}
	})
	t.Run("onto 15", func(t *testing.T) {
		// The dump up to its views, then its end: tables, identity, keys.
		head := dump[:strings.Index(dump, "--\n-- Name: doc_items; Type: VIEW")]
		tail := dump[strings.Index(dump, "--\n-- Name: stock; Type: TABLE"):strings.Index(dump, "--\n-- Name: restock(text, integer)")] +
			dump[strings.Index(dump, "--\n-- Name: docs docs_pkey; Type: CONSTRAINT"):]
		e := newCopyEnv(t, "nd15", 1, 2, "")
		e.src[0].exec(t, `CREATE PUBLICATION all_tables FOR ALL TABLES`)
		e.usePgDump(t, fakePgDump(t, "17.10", e.src[0].db, head+tail))
		sync(t, e, commands.PhasePre, commands.PhasePost)
		for k, d := range e.dst {
			if got := d.one(t, `SELECT count(*) FROM pg_tables WHERE tablename IN ('docs', 'stock')`); got != "2" {
				t.Fatalf("shard %d: %s of docs and stock", k, got)
			}
			if got := d.one(t, `SELECT attidentity::text FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attname = 'id'`); got != "a" {
				t.Fatalf("shard %d: docs.id identity %q", k, got)
			}
		}
	})
}
