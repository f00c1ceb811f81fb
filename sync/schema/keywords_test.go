package schema

import (
	"strings"
	"testing"
)

const olderDumpBody = `SET check_function_bodies = false;
CREATE SCHEMA "تست";
CREATE FUNCTION "تست".f(json json DEFAULT '{}'::json, merge_action text, t json_table) RETURNS json
    LANGUAGE sql
    AS $$select json_object('{a,1}'::text[])$$;
CREATE TABLE public.docs (id integer NOT NULL, json json, note text DEFAULT 'json json');
`

// A PostgreSQL 15 dump writes words that became keywords in 16 and 17
// bare; they are quoted where they are words, never inside literals or
// function bodies, and the dump parses.
func TestSplitDumpQuotesNewerKeywords(t *testing.T) {
	dump := "-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)\n" + olderDumpBody
	stmts, err := splitDump(dump)
	if err != nil {
		t.Fatal(err)
	}
	all := ""
	for _, s := range stmts {
		all += s.sql + "\n"
	}
	for _, want := range []string{`f("json" "json" DEFAULT '{}'::"json", "merge_action" text, t "json_table") RETURNS "json"`,
		`$$select json_object('{a,1}'::text[])$$`, `"json" "json", note text DEFAULT 'json json'`} {
		if !strings.Contains(all, want) {
			t.Errorf("the statements do not have %s:\n%s", want, all)
		}
	}
	// PostgreSQL 16 had json as an unreserved keyword (IS JSON): only the
	// occurrences the parser rejects are quoted.
	dump16 := "-- Dumped from database version 16.4\n" + strings.ReplaceAll(strings.ReplaceAll(olderDumpBody, "merge_action", `"merge_action"`), "json_table", `"json_table"`) +
		"CREATE VIEW public.v AS SELECT (note IS JSON) AS ok FROM public.docs;\n"
	stmts, err = splitDump(dump16)
	if err != nil {
		t.Fatal(err)
	}
	all = ""
	for _, s := range stmts {
		all += s.sql + "\n"
	}
	for _, want := range []string{`f("json" "json" DEFAULT`, `(note IS JSON)`, `json json, note text DEFAULT 'json json'`} {
		if !strings.Contains(all, want) {
			t.Errorf("the 16 statements do not have %s:\n%s", want, all)
		}
	}
	// A 17 dump is parsed as it is: the same text fails there, as it would
	// on a 17 server.
	if _, err := splitDump("-- Dumped from database version 17.2\n" + olderDumpBody); err == nil {
		t.Error("a 17 dump with bare json parameters parsed")
	}
}
