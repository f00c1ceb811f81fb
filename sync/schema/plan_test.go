package schema

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func loadPlan(t *testing.T) *Plan {
	t.Helper()
	b, err := os.ReadFile("testdata/realistic.dump.sql")
	if err != nil {
		t.Fatal(err)
	}
	p, err := BuildPlan(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlanWidensIntegerKeys(t *testing.T) {
	p := loadPlan(t)
	want := []string{
		"billing.invoices.order_id", "billing.invoices.user_id", "public.Weird Names; Inc.Id",
		"public.order_items.order_id", "public.order_items.product_id", "public.order_items.user_id",
		"public.orders.id", "public.orders.user_id", "public.products.id", "public.users.id",
	}
	if !reflect.DeepEqual(p.Widened, want) {
		t.Fatalf("widened %v\nwant    %v", p.Widened, want)
	}
	var users, seq, weird string
	for _, s := range p.Pre {
		switch {
		case strings.HasPrefix(s.SQL, "CREATE TABLE public.users"):
			users = s.SQL
		case strings.HasPrefix(s.SQL, "CREATE SEQUENCE public.orders_id_seq"):
			seq = s.SQL
		case strings.HasPrefix(s.SQL, `CREATE TABLE public."Weird Names; Inc"`):
			weird = s.SQL
		}
	}
	if !strings.Contains(users, "id bigint NOT NULL") {
		t.Errorf("users.id not widened:\n%s", users)
	}
	if !strings.Contains(seq, "AS bigint") || strings.Contains(seq, "AS integer") {
		t.Errorf("owned sequence not widened:\n%s", seq)
	}
	// Only the key is widened; other integer columns keep their type.
	if !strings.Contains(weird, `"Id" bigint NOT NULL`) || !strings.Contains(weird, "user_id integer NOT NULL") || !strings.Contains(weird, `"quote""d" integer`) {
		t.Errorf("Weird Names table:\n%s", weird)
	}
}

func TestPlanPhases(t *testing.T) {
	p := loadPlan(t)
	if len(p.Preamble) == 0 || !strings.Contains(strings.Join(p.Preamble, "\n"), "set_config('search_path', '', false)") {
		t.Fatalf("preamble %v", p.Preamble)
	}
	for _, s := range append(append([]*Statement{}, p.Pre...), p.Post...) {
		if strings.HasPrefix(s.SQL, `\`) || strings.Contains(s.SQL, "\\restrict") {
			t.Fatalf("psql meta-command kept: %q", s.SQL)
		}
	}
	for _, s := range p.Pre {
		if strings.HasPrefix(s.SQL, "CREATE INDEX") || strings.Contains(s.SQL, "FOREIGN KEY") || strings.HasPrefix(s.SQL, "CREATE TRIGGER") || strings.Contains(s.SQL, " UNIQUE ") {
			t.Errorf("PRE holds a POST statement: %s", s.SQL)
		}
	}
	kinds := map[string]int{}
	lastStage := StageIndexes
	for _, s := range p.Post {
		kinds[s.Kind]++
		if s.Stage < lastStage {
			t.Fatalf("POST not in stage order at %q", s.SQL)
		}
		lastStage = s.Stage
	}
	wantKinds := map[string]int{"unique index": 2, "unique constraint": 2, "index": 9, "index attach": 2, "trigger": 1,
		"foreign key": 6, "validate foreign key": 6, "replica identity": 1}
	if !reflect.DeepEqual(kinds, wantKinds) {
		t.Fatalf("POST kinds %v\nwant %v", kinds, wantKinds)
	}
	var pkAttach int
	for _, s := range p.Pre {
		if s.Kind == "index attach" {
			pkAttach++
		}
		if s.Kind == "primary key" && s.Exists == nil {
			t.Errorf("primary key without an existence check: %s", s.SQL)
		}
	}
	if pkAttach != 2 {
		t.Fatalf("primary-key index attaches in PRE: %d, want 2", pkAttach)
	}
	for _, s := range p.Post {
		if s.Kind == "foreign key" && !strings.HasSuffix(s.SQL, " NOT VALID") {
			t.Errorf("foreign key not added NOT VALID: %s", s.SQL)
		}
		if s.Kind == "unique constraint" && !strings.Contains(s.SQL, "UNIQUE USING INDEX") {
			t.Errorf("unique constraint not built from its index: %s", s.SQL)
		}
	}
	if !reflect.DeepEqual(p.Partitioned, []string{"billing.events"}) {
		t.Fatalf("partitioned %v", p.Partitioned)
	}
}

func TestPlanPartitionedAndEdgeCases(t *testing.T) {
	dump := `SET statement_timeout = 0;
CREATE TABLE public.m (id integer NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE public.m_1 (id integer NOT NULL, at date NOT NULL);
ALTER TABLE ONLY public.m ATTACH PARTITION public.m_1 FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');
ALTER TABLE ONLY public.m ADD CONSTRAINT m_pkey PRIMARY KEY (id, at);
ALTER TABLE ONLY public.m ADD CONSTRAINT m_u UNIQUE (at, id);
CREATE TABLE public.r (id integer NOT NULL, m_id integer, at date, arr integer[]);
ALTER TABLE ONLY public.r ADD CONSTRAINT r_fk FOREIGN KEY (m_id, at) REFERENCES public.m(id, at);
ALTER TABLE ONLY public.m ADD CONSTRAINT m_self FOREIGN KEY (id, at) REFERENCES public.m(id, at);
COMMENT ON INDEX public.m_pkey IS 'x';
`
	p, err := BuildPlan(dump)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"public.m.id", "public.m_1.id", "public.r.m_id"}
	if !reflect.DeepEqual(p.Widened, want) {
		t.Fatalf("widened %v, want %v", p.Widened, want)
	}
	for _, s := range p.Post {
		if strings.Contains(s.SQL, "m_u") && strings.Contains(s.SQL, "USING INDEX") {
			t.Errorf("unique constraint on a partitioned table rewritten to USING INDEX: %s", s.SQL)
		}
		if strings.Contains(s.SQL, "m_self") && strings.Contains(s.SQL, "NOT VALID") {
			t.Errorf("NOT VALID foreign key on a partitioned table: %s", s.SQL)
		}
		if strings.Contains(s.SQL, "r_fk") && s.Kind == "foreign key" && !strings.HasSuffix(s.SQL, "NOT VALID") {
			t.Errorf("plain table FK not NOT VALID: %s", s.SQL)
		}
		if strings.HasPrefix(s.SQL, "COMMENT ON INDEX") && s.Stage != StageConstraints {
			t.Errorf("comment on index not after indexes")
		}
	}
	for _, s := range p.Pre {
		if strings.HasPrefix(s.SQL, "CREATE TABLE public.r") && !strings.Contains(s.SQL, "arr integer[]") {
			t.Errorf("array column changed: %s", s.SQL)
		}
	}
}

func TestPlanRejectsGarbage(t *testing.T) {
	if _, err := BuildPlan("CREATE TABLE (;"); err == nil {
		t.Fatal("a broken dump was accepted")
	}
}
