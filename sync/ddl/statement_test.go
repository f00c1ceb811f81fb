package ddl

import (
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

func TestStatementFindsTheNthDDLCommand(t *testing.T) {
	query := "CREATE TABLE a (id serial PRIMARY KEY, x int); CREATE INDEX ON a (x);\nINSERT INTO a (x) VALUES (1);\n  ALTER TABLE a ADD COLUMN y text DEFAULT 'q;'"
	cases := []struct {
		nth  int
		tag  string
		want string
	}{
		{1, "CREATE TABLE", "CREATE TABLE a (id serial PRIMARY KEY, x int)"},
		{2, "CREATE INDEX", "CREATE INDEX ON a (x)"},
		{3, "ALTER TABLE", "ALTER TABLE a ADD COLUMN y text DEFAULT 'q;'"},
		// A count thrown off: the only statement with the tag.
		{7, "ALTER TABLE", "ALTER TABLE a ADD COLUMN y text DEFAULT 'q;'"},
	}
	for _, c := range cases {
		st, inside, err := (&Captured{Query: query, Nth: c.nth, Tag: c.tag}).Statement()
		if err != nil || inside || st.SQL != c.want {
			t.Errorf("nth %d %s: %q inside=%v err=%v, want %q", c.nth, c.tag, st.SQL, inside, err, c.want)
		}
		if err == nil && query[st.Offset:st.Offset+len(st.SQL)] != st.SQL {
			t.Errorf("nth %d: offset %d does not locate %q", c.nth, st.Offset, st.SQL)
		}
	}
	// Two statements with the tag and a count that fits neither: refused.
	if _, _, err := (&Captured{Query: "ALTER TABLE a ADD b int; ALTER TABLE a ADD c int", Nth: 5, Tag: "ALTER TABLE"}).Statement(); err == nil {
		t.Error("an ambiguous row was matched to a statement")
	}
}

func TestStatementInsideCode(t *testing.T) {
	st, inside, err := (&Captured{Query: "DO $$BEGIN CREATE TABLE b (id int); END$$", Nth: 1, Tag: "CREATE TABLE"}).Statement()
	if err != nil || !inside || st.Node.GetDoStmt() == nil {
		t.Fatalf("DO block: %v %v %v", st.SQL, inside, err)
	}
	// An extension's script: every command names CREATE EXTENSION.
	st, inside, err = (&Captured{Query: "CREATE EXTENSION pgcrypto", Nth: 4, Tag: "CREATE FUNCTION"}).Statement()
	if err != nil || inside || TagOf(st.Node) != "CREATE EXTENSION" {
		t.Fatalf("extension: %v %v %v", st.SQL, inside, err)
	}
	// DDL next to a DO block: which one ran cannot be told.
	if _, _, err := (&Captured{Query: "CREATE TABLE x (); DO $$BEGIN CREATE TABLE y (); END$$", Nth: 2, Tag: "CREATE TABLE"}).Statement(); err == nil {
		t.Error("DDL mixed with a DO block was matched")
	}
}

func TestTagOf(t *testing.T) {
	for sql, want := range map[string]string{
		"CREATE TABLE t (a int)":                                                "CREATE TABLE",
		"ALTER TABLE t ADD COLUMN b int":                                        "ALTER TABLE",
		"ALTER TABLE t RENAME COLUMN b TO c":                                    "ALTER TABLE",
		"ALTER INDEX i RENAME TO j":                                             "ALTER INDEX",
		"DROP TABLE t":                                                          "DROP TABLE",
		"DROP INDEX CONCURRENTLY i":                                             "DROP INDEX",
		"CREATE INDEX CONCURRENTLY i ON t (a)":                                  "CREATE INDEX",
		"ALTER TYPE mood ADD VALUE 'x'":                                         "ALTER TYPE",
		"CREATE TYPE mood AS ENUM ('a')":                                        "CREATE TYPE",
		"COMMENT ON TABLE t IS 'x'":                                             "COMMENT",
		"CREATE MATERIALIZED VIEW m AS SELECT 1":                                "CREATE MATERIALIZED VIEW",
		"CREATE TABLE c AS SELECT 1":                                            "CREATE TABLE AS",
		"SELECT 1 INTO n":                                                       "SELECT INTO",
		"ALTER TABLE t SET SCHEMA s":                                            "ALTER TABLE",
		"REVOKE SELECT ON t FROM public":                                        "REVOKE",
		"ALTER PUBLICATION p ADD TABLE t":                                       "ALTER PUBLICATION",
		"ALTER MATERIALIZED VIEW m RENAME TO n":                                 "ALTER MATERIALIZED VIEW",
		"CREATE OR REPLACE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql": "CREATE FUNCTION",
	} {
		tree, err := pg_query.Parse(sql)
		if err != nil {
			t.Fatal(err)
		}
		if got := TagOf(tree.Stmts[0].Stmt); got != want {
			t.Errorf("%s: tag %q, want %q", sql, got, want)
		}
	}
}

func TestDecode(t *testing.T) {
	row := map[string]string{"id": "42", "command_tag": "ALTER TABLE", "statement": "ALTER TABLE t ADD c int", "nth": "2",
		"search_path": `"$user", public`, "username": "app",
		"objects": `[{"type": "table", "schema": "public", "identity": "public.t", "tag": "ALTER TABLE"}]`}
	c, err := Decode(func(col string) (string, bool) { v, ok := row[col]; return v, !ok })
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != 42 || c.Nth != 2 || c.User != "app" || len(c.Objects) != 1 || c.Objects[0].Identity != "public.t" {
		t.Fatalf("decoded %+v", c)
	}
	row["objects"] = "[not json"
	if _, err := Decode(func(col string) (string, bool) { v, ok := row[col]; return v, !ok }); err == nil {
		t.Error("bad objects decoded")
	}
	delete(row, "id")
	if _, err := Decode(func(col string) (string, bool) { v, ok := row[col]; return v, !ok }); err == nil {
		t.Error("a row without an id decoded")
	}
}

func TestApplyEditsWidensIntegerTypes(t *testing.T) {
	sql := "CREATE TABLE r (id serial PRIMARY KEY, customer_id INTEGER, n int, s smallserial)"
	locs := []edit{{strings.Index(sql, "serial"), "bigserial"}, {strings.Index(sql, "INTEGER"), "bigint"}, {strings.Index(sql, "smallserial"), "bigserial"}}
	got := applyEdits(sql, locs)
	if want := "CREATE TABLE r (id bigserial PRIMARY KEY, customer_id bigint, n int, s bigserial)"; got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	// An offset that is not at an integer type name changes nothing.
	if got := applyEdits(sql, []edit{{strings.Index(sql, "PRIMARY"), "bigint"}}); got != sql {
		t.Fatalf("edited a non-type: %s", got)
	}
}

func TestWritesRows(t *testing.T) {
	parse := func(sql string) *pg_query.DoStmt {
		tree, err := pg_query.Parse(sql)
		if err != nil {
			t.Fatal(err)
		}
		return tree.Stmts[0].Stmt.GetDoStmt()
	}
	if w, _ := writesRows(parse(`DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'x') THEN CREATE TYPE x AS ENUM ('a'); END IF; END$$`)); w {
		t.Error("a DDL-only DO block writes rows")
	}
	for _, body := range []string{"INSERT INTO t VALUES (1)", "UPDATE t SET a = 1", "EXECUTE 'DROP TABLE t'", "PERFORM f()"} {
		if w, word := writesRows(parse("DO $$BEGIN CREATE TABLE t (a int); " + body + "; END$$")); !w || word == "" {
			t.Errorf("%s: not seen as writing rows", body)
		}
	}
}

func TestConstantDefaults(t *testing.T) {
	for expr, want := range map[string]bool{
		"'basic'": true, "3": true, "'a'::text": true, "-1": true, "ARRAY[1, 2]": true,
		"now()": false, "CURRENT_TIMESTAMP": false, "random()": false, "nextval('s')": false, "gen_random_uuid()": false,
	} {
		tree, err := pg_query.Parse("SELECT " + expr)
		if err != nil {
			t.Fatal(err)
		}
		val := tree.Stmts[0].Stmt.GetSelectStmt().TargetList[0].GetResTarget().Val
		if got := constant(val); got != want {
			t.Errorf("%s: constant %v, want %v", expr, got, want)
		}
	}
}

func TestSplitIdentity(t *testing.T) {
	for in, want := range map[string]string{
		`public.orders`:        "public|orders",
		`"My Schema"."a.b"`:    "My Schema|a.b",
		`public."say ""hi"""`:  `public|say "hi"`,
		`public.ix_orders_idx`: "public|ix_orders_idx",
	} {
		if got := strings.Join(SplitIdentity(in), "|"); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

// FuzzStatement: whatever text a source records as a statement, finding
// it fails cleanly or returns a statement located in the query.
func FuzzStatement(f *testing.F) {
	f.Add("CREATE TABLE a (id int); ALTER TABLE a ADD b int", 2, "ALTER TABLE")
	f.Add("DO $$BEGIN CREATE TABLE b (); END$$", 1, "CREATE TABLE")
	f.Add("select 1; ;;; create index on t(a)", 1, "CREATE INDEX")
	f.Add("ALTER TABLE \"x\"\"y\" RENAME COLUMN a TO \"b;c\"", 0, "")
	f.Fuzz(func(t *testing.T, query string, nth int, tag string) {
		st, _, err := (&Captured{Query: query, Nth: nth, Tag: tag}).Statement()
		if err != nil {
			return
		}
		if st.Offset < 0 || st.Offset+len(st.SQL) > len(query) || query[st.Offset:st.Offset+len(st.SQL)] != st.SQL {
			t.Fatalf("statement %q not at offset %d of %q", st.SQL, st.Offset, query)
		}
	})
}
