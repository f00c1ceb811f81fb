package schema

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestPlanNewerPgDump plans the plain output of pg_dump 17 and 18 (their
// header, \restrict / \unrestrict, SET transaction_timeout, identity
// columns, and statements PostgreSQL 17's grammar added: JSON_TABLE and
// the SQL/JSON query functions in views, MERGE ... RETURNING in a
// SQL-standard function body). The fixtures hold what those servers'
// pg_get_viewdef and pg_get_functiondef print, in pg_dump's layout.
// PostgreSQL 16's grammar (pg_query_go v5) rejects these statements.
func TestPlanNewerPgDump(t *testing.T) {
	for _, f := range []string{"testdata/pg17.dump.sql", "testdata/pg18.dump.sql"} {
		t.Run(f, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			p, err := BuildPlan(string(b))
			if err != nil {
				t.Fatalf("plan %s: %v", f, err)
			}
			if pre := strings.Join(p.Preamble, "\n"); !strings.Contains(pre, "SET transaction_timeout = 0") {
				t.Fatalf("preamble lacks SET transaction_timeout: %v", p.Preamble)
			}
			kinds := map[string]string{}
			for _, s := range append(append([]*Statement{}, p.Pre...), p.Post...) {
				if strings.Contains(s.SQL, `\restrict`) || strings.Contains(s.SQL, `\unrestrict`) {
					t.Fatalf("psql meta-command kept: %q", s.SQL)
				}
				kinds[firstLine(s.SQL)] = string(s.Phase) + " " + s.Kind
			}
			for stmt, want := range map[string]string{
				"CREATE VIEW public.doc_items AS":   "pre",
				"CREATE VIEW public.doc_summary AS": "pre",
				"CREATE FUNCTION public.restock(p_sku text, p_qty integer) RETURNS TABLE(action text, sku text)": "pre",
				"CREATE TABLE public.docs (": "pre",
				"CREATE INDEX docs_customer_id_idx ON public.docs USING btree (customer_id)": "post",
			} {
				got, ok := kinds[stmt]
				if !ok || !strings.HasPrefix(strings.ToLower(got), want) {
					t.Errorf("%q: planned %q, want phase %s (plan: %v)", stmt, got, want, kinds)
				}
			}
			var view string
			for _, s := range p.Pre {
				if strings.HasPrefix(s.SQL, "CREATE VIEW public.doc_items") {
					view = s.SQL
				}
			}
			if !strings.Contains(view, "NESTED PATH '$.\"parts\"[*]' AS json_table_path_1") {
				t.Fatalf("the JSON_TABLE view was not kept whole: %s", view)
			}
		})
	}
}

// TestPlanPG18OnlySyntax: statements only PostgreSQL 18's grammar knows
// (virtual generated columns, NOT ENFORCED constraints, WITHOUT OVERLAPS
// keys, NOT NULL ... NOT VALID), which pg_query's newest grammar (17) does
// not parse, fail the plan with an error that names the statement.
func TestPlanPG18OnlySyntax(t *testing.T) {
	for stmt, near := range map[string]string{
		"CREATE TABLE public.prices (\n    id bigint,\n    gross numeric GENERATED ALWAYS AS ((id * 1.2)) VIRTUAL\n);":    "VIRTUAL",
		"ALTER TABLE public.prices\n    ADD CONSTRAINT net_positive CHECK ((net > (0)::numeric)) NOT ENFORCED;":           "ENFORCED",
		"ALTER TABLE ONLY public.bookings\n    ADD CONSTRAINT bookings_pkey PRIMARY KEY (room, during WITHOUT OVERLAPS);": "WITHOUT",
	} {
		dump := "SET statement_timeout = 0;\n\nCREATE TABLE public.ok (id int);\n\n" + stmt + "\n\nCREATE TABLE public.after (id int);\n"
		_, err := BuildPlan(dump)
		if err == nil {
			t.Fatalf("%s: planned", stmt)
		}
		// The statement starts on line 5; the error is on the line of near.
		line := fmt.Sprintf("at line %d,", 5+strings.Count(stmt[:strings.Index(stmt, near)], "\n"))
		for _, w := range []string{firstLine(stmt), near, line} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q lacks %q", err, w)
			}
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
