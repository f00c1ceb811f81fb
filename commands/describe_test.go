package commands

import (
	"context"
	"reflect"
	"testing"
)

// gdescQuery is what psql 15 sends for SHOW DATABASES \gdesc (two columns).
const gdescQuery = "SELECT name AS \"Column\", pg_catalog.format_type(tp, tpm) AS \"Type\"\n" +
	"FROM (VALUES ('name', '25'::pg_catalog.oid, -1),('it''s', '1184'::pg_catalog.oid, -1),('x', '1700'::pg_catalog.oid, 131078)) s(name, tp, tpm)"

func TestDescribeColumns(t *testing.T) {
	cmds, err := Parse(gdescQuery)
	if err != nil {
		t.Fatal(err)
	}
	want := DescribeColumns{
		Headers:   [2]string{"Column", "Type"},
		Columns:   []Column{{"name", TypeText}, {"it's", TypeTimestamptz}, {"x", 1700}},
		Modifiers: []int32{-1, -1, 131078},
	}
	if len(cmds) != 1 || !reflect.DeepEqual(cmds[0], want) {
		t.Fatalf("Parse = %#v, want %#v", cmds, want)
	}
	again, err := Parse(want.String())
	if err != nil || !reflect.DeepEqual(again, cmds) {
		t.Fatalf("String %q parses to %#v, %v", want.String(), again, err)
	}
	res, err := (&Executor{}).Execute(context.Background(), cmds[0])
	if err != nil {
		t.Fatal(err)
	}
	wantRows := [][]any{{"name", "text"}, {"it's", "timestamp with time zone"}, {"x", "???"}}
	if !reflect.DeepEqual(res.Rows, wantRows) || res.Columns[0].Name != "Column" || res.Columns[1].Name != "Type" || res.Tag != "SELECT 3" {
		t.Fatalf("result %+v", res)
	}

	// Other SELECTs are not taken for \gdesc: refused, or answered as
	// what they are (select.go).
	for _, q := range []string{
		"SELECT 1",
		"SELECT name, pg_catalog.format_type(tp, tpm) FROM (VALUES ('a', '25'::pg_catalog.oid, -1)) s(name, tp, tpm)",
		"SELECT name, pg_catalog.format_type(tp, tpm) FROM (VALUES ('a', '25'::pg_catalog.oid, -1)) s(name, tp, tpm) WHERE true",
		"SELECT name, pg_catalog.pg_sleep(tp) FROM (VALUES ('a', '25'::pg_catalog.oid, -1)) s(name, tp, tpm)",
		"SELECT name, format_type(tp, tpm) FROM (VALUES ('a', '25'::text, -1)) s(name, tp, tpm)",
		"SELECT name, format_type(tp, tpm) FROM pg_class s(name, tp, tpm)",
	} {
		cmds, err := Parse(q)
		if _, ok := err.(*Error); err != nil && !ok {
			t.Errorf("Parse(%q): %v", q, err)
		}
		if err == nil {
			if _, ok := cmds[0].(DescribeColumns); ok {
				t.Errorf("Parse(%q) taken for \\gdesc", q)
			}
		}
	}
}
