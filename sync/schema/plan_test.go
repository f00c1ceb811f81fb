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
	if got := widenedNames(p); !reflect.DeepEqual(got, want) {
		t.Fatalf("widened %v\nwant    %v", got, want)
	}
	reasons := map[string]string{}
	for _, w := range p.Widened {
		reasons[w.Column] = w.Reason
	}
	for col, want := range map[string]string{
		"public.users.id":             "primary key, serial (sequence public.users_id_seq)",
		"public.products.id":          "primary key, identity",
		"public.order_items.order_id": "foreign key order_items_order_id_fkey references public.orders.id",
	} {
		if reasons[col] != want {
			t.Errorf("%s widened because %q, want %q", col, reasons[col], want)
		}
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

func widenedNames(p *Plan) []string {
	out := []string{}
	for _, w := range p.Widened {
		out = append(out, w.Column)
	}
	return out
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
CREATE SEQUENCE public.m_id_seq AS integer START WITH 1;
ALTER TABLE public.m ALTER COLUMN id SET DEFAULT nextval('public.m_id_seq'::regclass);
`
	p, err := BuildPlan(dump)
	if err != nil {
		t.Fatal(err)
	}
	// m.id takes its values from a sequence (a default not owned by it),
	// so m.id, its partition's id and the column referencing it widen;
	// the sequence's AS integer too.
	want := []string{"public.m.id", "public.m_1.id", "public.r.m_id"}
	if got := widenedNames(p); !reflect.DeepEqual(got, want) {
		t.Fatalf("widened %v, want %v", got, want)
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
		if strings.HasPrefix(s.SQL, "CREATE SEQUENCE public.m_id_seq") && !strings.Contains(s.SQL, "AS bigint") {
			t.Errorf("sequence of a widened default not widened: %s", s.SQL)
		}
	}
}

// planOf builds a plan and returns it with its widened columns by name.
func planOf(t *testing.T, dump string) (*Plan, map[string]string) {
	t.Helper()
	p, err := BuildPlan(dump)
	if err != nil {
		t.Fatal(err)
	}
	w := map[string]string{}
	for _, x := range p.Widened {
		w[x.Column] = x.Reason
	}
	return p, w
}

// preSQL returns the PRE statement that starts with prefix.
func preSQL(t *testing.T, p *Plan, prefix string) string {
	t.Helper()
	for _, s := range p.Pre {
		if strings.HasPrefix(s.SQL, prefix) {
			return s.SQL
		}
	}
	t.Fatalf("no PRE statement starts with %q", prefix)
	return ""
}

// A partition tree is one unit: foreign keys declared only on some
// partitions (Pagila's payment), only on the root, or on both widen the
// column in the root and in every partition at every depth, the default
// partition included, so ATTACH PARTITION finds the same types.
func TestPlanPartitionTreeIsOneUnit(t *testing.T) {
	head := `CREATE TABLE public.customer (customer_id integer NOT NULL, name text);
CREATE SEQUENCE public.customer_customer_id_seq AS integer START WITH 1;
ALTER SEQUENCE public.customer_customer_id_seq OWNED BY public.customer.customer_id;
ALTER TABLE ONLY public.customer ALTER COLUMN customer_id SET DEFAULT nextval('public.customer_customer_id_seq'::regclass);
ALTER TABLE ONLY public.customer ADD CONSTRAINT customer_pkey PRIMARY KEY (customer_id);
CREATE SEQUENCE public.payment_payment_id_seq AS integer START WITH 1;
CREATE TABLE public.payment (payment_id integer DEFAULT nextval('public.payment_payment_id_seq'::regclass) NOT NULL, customer_id integer NOT NULL, kind smallint NOT NULL, paid date NOT NULL) PARTITION BY RANGE (paid);
CREATE TABLE public.payment_2022 (payment_id integer DEFAULT nextval('public.payment_payment_id_seq'::regclass) NOT NULL, customer_id integer NOT NULL, kind smallint NOT NULL, paid date NOT NULL) PARTITION BY LIST (kind);
CREATE TABLE public.payment_2022_k1 (payment_id integer DEFAULT nextval('public.payment_payment_id_seq'::regclass) NOT NULL, customer_id integer NOT NULL, kind smallint NOT NULL, paid date NOT NULL);
CREATE TABLE public.payment_2022_other (payment_id integer NOT NULL, customer_id integer NOT NULL, kind smallint NOT NULL, paid date NOT NULL);
CREATE TABLE public.payment_default (payment_id integer NOT NULL, customer_id integer NOT NULL, kind smallint NOT NULL, paid date NOT NULL);
ALTER TABLE ONLY public.payment ATTACH PARTITION public.payment_2022 FOR VALUES FROM ('2022-01-01') TO ('2023-01-01');
ALTER TABLE ONLY public.payment_2022 ATTACH PARTITION public.payment_2022_k1 FOR VALUES IN ('1');
ALTER TABLE ONLY public.payment_2022 ATTACH PARTITION public.payment_2022_other DEFAULT;
ALTER TABLE ONLY public.payment ATTACH PARTITION public.payment_default DEFAULT;
ALTER TABLE ONLY public.payment ADD CONSTRAINT payment_pkey PRIMARY KEY (paid, payment_id, kind);
`
	for name, fks := range map[string]string{
		"leaves only": `ALTER TABLE public.payment_2022_k1 ADD CONSTRAINT p1_customer_fkey FOREIGN KEY (customer_id) REFERENCES public.customer(customer_id);`,
		"root only":   `ALTER TABLE public.payment ADD CONSTRAINT payment_customer_fkey FOREIGN KEY (customer_id) REFERENCES public.customer(customer_id);`,
		"both": `ALTER TABLE public.payment ADD CONSTRAINT payment_customer_fkey FOREIGN KEY (customer_id) REFERENCES public.customer(customer_id);
ALTER TABLE public.payment_default ADD CONSTRAINT pd_customer_fkey FOREIGN KEY (customer_id) REFERENCES public.customer(customer_id);`,
	} {
		t.Run(name, func(t *testing.T) {
			p, w := planOf(t, head+fks)
			for _, table := range []string{"payment", "payment_2022", "payment_2022_k1", "payment_2022_other", "payment_default"} {
				for _, col := range []string{"payment_id", "customer_id"} {
					if _, ok := w["public."+table+"."+col]; !ok {
						t.Errorf("public.%s.%s not widened (widened: %v)", table, col, widenedNames(p))
					}
				}
				if why, ok := w["public."+table+".kind"]; ok {
					t.Errorf("public.%s.kind, a smallint discriminator in the key, widened: %s", table, why)
				}
				sql := preSQL(t, p, "CREATE TABLE public."+table+" ")
				if !strings.Contains(sql, "payment_id bigint") || !strings.Contains(sql, "customer_id bigint") || !strings.Contains(sql, "kind smallint") {
					t.Errorf("%s", sql)
				}
			}
			if sql := preSQL(t, p, "CREATE SEQUENCE public.payment_payment_id_seq"); !strings.Contains(sql, "AS bigint") {
				t.Errorf("payment's sequence not widened: %s", sql)
			}
			if !strings.Contains(w["public.payment_2022_other.payment_id"], "same partition tree") {
				t.Errorf("reason for a partition without its own default: %q", w["public.payment_2022_other.payment_id"])
			}
		})
	}
}

// Only generated keys widen: GitLab's smallint discriminators inside
// composite primary keys and integer ordinals keep their types; a natural
// integer key (no sequence) keeps its type, and so do columns referencing
// it; widening follows foreign keys transitively.
func TestPlanWidensGeneratedKeysOnly(t *testing.T) {
	p, w := planOf(t, `
CREATE TABLE public.ci_runners (id integer NOT NULL, runner_type smallint NOT NULL, name text);
ALTER TABLE public.ci_runners ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (SEQUENCE NAME public.ci_runners_id_seq START WITH 1);
ALTER TABLE ONLY public.ci_runners ADD CONSTRAINT ci_runners_pkey PRIMARY KEY (id, runner_type);
CREATE TABLE public.cache_entries (key text NOT NULL, status smallint NOT NULL, size integer);
ALTER TABLE ONLY public.cache_entries ADD CONSTRAINT cache_entries_pkey PRIMARY KEY (key, status);
CREATE TABLE public.diffs (id integer NOT NULL);
CREATE SEQUENCE public.diffs_id_seq AS integer;
ALTER SEQUENCE public.diffs_id_seq OWNED BY public.diffs.id;
ALTER TABLE ONLY public.diffs ALTER COLUMN id SET DEFAULT nextval('public.diffs_id_seq'::regclass);
ALTER TABLE ONLY public.diffs ADD CONSTRAINT diffs_pkey PRIMARY KEY (id);
CREATE TABLE public.diff_files (diff_id integer NOT NULL, relative_order integer NOT NULL, path text);
ALTER TABLE ONLY public.diff_files ADD CONSTRAINT diff_files_pkey PRIMARY KEY (diff_id, relative_order);
ALTER TABLE ONLY public.diff_files ADD CONSTRAINT diff_files_diff_fkey FOREIGN KEY (diff_id) REFERENCES public.diffs(id);
CREATE TABLE public.file_notes (diff_id integer NOT NULL, relative_order integer NOT NULL, note text);
ALTER TABLE ONLY public.file_notes ADD CONSTRAINT file_notes_fkey FOREIGN KEY (diff_id, relative_order) REFERENCES public.diff_files(diff_id, relative_order);
CREATE TABLE public.codes (code integer NOT NULL, label text);
ALTER TABLE ONLY public.codes ADD CONSTRAINT codes_pkey PRIMARY KEY (code);
CREATE TABLE public.uses (id bigint NOT NULL, code integer REFERENCES public.codes(code), runner_id integer, runner_type smallint);
ALTER TABLE ONLY public.uses ADD CONSTRAINT uses_runner_fkey FOREIGN KEY (runner_id, runner_type) REFERENCES public.ci_runners(id, runner_type);
`)
	want := []string{"public.ci_runners.id", "public.diff_files.diff_id", "public.diffs.id", "public.file_notes.diff_id", "public.uses.runner_id"}
	if got := widenedNames(p); !reflect.DeepEqual(got, want) {
		t.Fatalf("widened %v\nwant    %v", got, want)
	}
	if why := w["public.file_notes.diff_id"]; why != "foreign key file_notes_fkey references public.diff_files.diff_id" {
		t.Errorf("transitive reason %q", why)
	}
	if sql := preSQL(t, p, "CREATE TABLE public.ci_runners"); !strings.Contains(sql, "runner_type smallint") || !strings.Contains(sql, "id bigint") {
		t.Errorf("%s", sql)
	}
	if sql := preSQL(t, p, "CREATE TABLE public.diff_files"); !strings.Contains(sql, "relative_order integer") {
		t.Errorf("ordinal widened: %s", sql)
	}
	if sql := preSQL(t, p, "CREATE TABLE public.uses"); !strings.Contains(sql, "code integer") || !strings.Contains(sql, "runner_type smallint") {
		t.Errorf("natural key reference or discriminator widened: %s", sql)
	}
}

func TestSplitQualified(t *testing.T) {
	for in, want := range map[string][]string{
		`public.users_id_seq`:              {"public", "users_id_seq"},
		`public."Weird Names; Inc_Id_seq"`: {"public", "Weird Names; Inc_Id_seq"},
		`"a""b".Seq`:                       {`a"b`, "seq"},
		`seq`:                              {"seq"},
	} {
		if got := splitQualified(in); !reflect.DeepEqual(got, want) {
			t.Errorf("splitQualified(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPlanRejectsGarbage(t *testing.T) {
	if _, err := BuildPlan("CREATE TABLE (;"); err == nil {
		t.Fatal("a broken dump was accepted")
	}
}

// foreignKeysAs applies resharding_foreign_keys to POST: not_valid drops
// the validations, skip drops the keys and the comments on them; a key
// on a partitioned table counts the rows that break it across the tree.
func TestForeignKeysAs(t *testing.T) {
	p, _ := planOf(t, `CREATE TABLE public.a (id integer NOT NULL);
ALTER TABLE ONLY public.a ADD CONSTRAINT a_pkey PRIMARY KEY (id);
CREATE TABLE public.b (id integer NOT NULL, a_id integer, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE public.c (id integer NOT NULL, a_id integer, a2 integer);
ALTER TABLE public.b ADD CONSTRAINT b_a_fkey FOREIGN KEY (a_id) REFERENCES public.a(id);
ALTER TABLE ONLY public.c ADD CONSTRAINT c_a_fkey FOREIGN KEY (a_id, a2) REFERENCES public.a(id, id);
COMMENT ON CONSTRAINT c_a_fkey ON public.c IS 'the a';
COMMENT ON TABLE public.c IS 'kept';
CREATE INDEX c_a ON public.c (a_id);
`)
	kinds := func(stmts []*Statement) map[string]int {
		out := map[string]int{}
		for _, s := range stmts {
			out[s.Kind]++
		}
		return out
	}
	if got, n := foreignKeysAs(p.Post, "validate"); n != 0 || !reflect.DeepEqual(kinds(got), kinds(p.Post)) {
		t.Errorf("validate changed POST: %v", kinds(got))
	}
	got, n := foreignKeysAs(p.Post, "not_valid")
	if k := kinds(got); n != 0 || k["validate foreign key"] != 0 || k["foreign key"] != 2 || k["comment"] != 1 {
		t.Errorf("not_valid: %v, %d dropped", k, n)
	}
	got, n = foreignKeysAs(p.Post, "skip")
	if k := kinds(got); n != 2 || k["foreign key"] != 0 || k["validate foreign key"] != 0 || k["comment"] != 0 || k["index"] != 1 {
		t.Errorf("skip: %v, %d dropped", k, n)
	}
	for _, s := range append(p.Pre, got...) {
		if strings.Contains(s.SQL, "'the a'") {
			t.Errorf("skip kept the comment on the dropped key: %s", s.SQL)
		}
	}
	for _, s := range p.Post {
		if s.fk == nil {
			continue
		}
		switch s.fk.name {
		case "b_a_fkey":
			if want := `SELECT count(*) FROM "public"."b" x WHERE x."a_id" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "public"."a" r WHERE r."id" = x."a_id")`; s.fk.orphansSQL() != want {
				t.Errorf("orphans of a partitioned table's key:\n%s\nwant\n%s", s.fk.orphansSQL(), want)
			}
		case "c_a_fkey":
			if !strings.HasPrefix(s.fk.orphansSQL(), `SELECT count(*) FROM ONLY "public"."c" x WHERE x."a_id" IS NOT NULL AND x."a2" IS NOT NULL`) {
				t.Errorf("orphans of a composite key: %s", s.fk.orphansSQL())
			}
		}
	}
}

// TestPlanRerunChecks: the statements a rerun cannot tell from the dump of
// a shard it could not dump are checked against the shard's catalogs: a
// column default by its deparsed expression, OWNED BY by the sequence's
// dependency, OWNER TO by the owner.
func TestPlanRerunChecks(t *testing.T) {
	p, err := BuildPlan(`CREATE TABLE public.a (id integer NOT NULL);
CREATE SEQUENCE public.a_id_seq AS integer START WITH 1;
ALTER SEQUENCE public.a_id_seq OWNED BY public.a.id;
ALTER TABLE ONLY public.a ALTER COLUMN id SET DEFAULT nextval('public.a_id_seq'::regclass);
ALTER TABLE public.a OWNER TO app;
ALTER SEQUENCE public.a_id_seq OWNED BY NONE;
`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]any{
		"ALTER SEQUENCE public.a_id_seq OWNED BY public.a.id":                                        {`"public"."a_id_seq"`, `"public"."a"`, "id"},
		"ALTER TABLE ONLY public.a ALTER COLUMN id SET DEFAULT nextval('public.a_id_seq'::regclass)": {`"public"."a"`, "id", "nextval('public.a_id_seq'::regclass)"},
		"ALTER TABLE public.a OWNER TO app":                                                          {`"public"."a"`, "app"},
		"ALTER SEQUENCE public.a_id_seq OWNED BY NONE":                                               nil,
	}
	seen := 0
	for _, st := range p.Pre {
		args, ok := want[strings.TrimSuffix(st.SQL, ";")]
		if !ok {
			continue
		}
		seen++
		switch {
		case args == nil && st.Exists != nil:
			t.Errorf("%s: a check it cannot have: %v", st.SQL, st.Exists.Args)
		case args != nil && (st.Exists == nil || !reflect.DeepEqual(st.Exists.Args, args)):
			t.Errorf("%s: check %+v, want args %v", st.SQL, st.Exists, args)
		}
	}
	if seen != len(want) {
		t.Fatalf("saw %d of %d statements in PRE: %v", seen, len(want), sqlOf(p.Pre))
	}
}
