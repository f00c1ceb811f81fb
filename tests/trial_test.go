package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/tests/pgtest"
)

// TestRealSchemaTrial is the new user's trial on a public schema with its
// own data (scripts/realschema-trial.sh runs it; no other project's file is
// in this repository). The schema and data are loaded on the source with
// psql, RESHARD runs through the admin server into 2 shards to streaming,
// optional writes are streamed, and then my own SQL compares source and
// shards: per-table counts and row hashes, placement of every sharded row,
// and a catalog diff (columns with types, constraints, indexes, views,
// functions, triggers) in which the only differences allowed are the
// widened columns schema sync reports and the foreign keys POST reports as
// crossing shards. Figures go to the test log (and RESHARD_TRIAL_REPORT).
//
//	RESHARD_TRIAL_SQL     files to load, in order, separated by ':'
//	RESHARD_TRIAL_RULES   sharding rules: column or table.column, ','-separated,
//	                      each with :data_type after it unless bigint
//	                      (customer_id:varchar)
//	RESHARD_TRIAL_SCHEMAS schemas compared (default: every user schema)
//	RESHARD_TRIAL_WRITES  SQL file run on the source while streaming
//	RESHARD_TRIAL_LOAD    pgbench script run on the source (4 clients) from
//	                      before RESHARD until 2 s after it streams: the
//	                      copy's snapshot is taken and read under writes
//	RESHARD_TRIAL_REPORT  file the figures are written to
//	RESHARD_TRIAL_SHARD_VERSION the shards' major version (16, 17, 18; the
//	                      source stays on 15)
//	RESHARD_TRIAL_CUTOVER_WRITES SQL file run on each shard after CUTOVER
//	                      (inserts taking ids from the column defaults);
//	                      then rollback, writes on the source, CUTOVER
//	                      again and the file once more, each step compared
//	RESHARD_TRIAL_GENERAL lines added to the config's [general] section
//	                      (resharding_ddl = "replicate": DDL in the writes)
func TestRealSchemaTrial(t *testing.T) {
	files := os.Getenv("RESHARD_TRIAL_SQL")
	if files == "" {
		t.Skip("RESHARD_TRIAL_SQL not set: run scripts/realschema-trial.sh")
	}
	var rules []trialRule
	for _, r := range strings.Split(os.Getenv("RESHARD_TRIAL_RULES"), ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		rule := trialRule{dataType: "bigint"}
		if spec, typ, ok := strings.Cut(r, ":"); ok {
			r, rule.dataType = spec, typ
		}
		if table, col, ok := strings.Cut(r, "."); ok {
			rule.table, rule.column = table, col
		} else {
			rule.column = r
		}
		rules = append(rules, rule)
	}
	if len(rules) == 0 {
		t.Fatal("RESHARD_TRIAL_RULES names no sharding column")
	}
	e := newCopyEnv(t, "trial", 1, 2, os.Getenv("RESHARD_TRIAL_GENERAL"))
	if v := os.Getenv("RESHARD_TRIAL_SHARD_VERSION"); v != "" {
		// The shards on servers of another major version (16, 17, 18 from
		// the pinned npm packages), the source on the package's 15.
		var major int
		if _, err := fmt.Sscan(v, &major); err != nil {
			t.Fatalf("RESHARD_TRIAL_SHARD_VERSION %q: %v", v, err)
		}
		c := startVersion(t, major, 2, nil)
		e = newCopyEnvOn(t, "trial", cluster.Instances[0], c.Instances, 1, 2, os.Getenv("RESHARD_TRIAL_GENERAL"))
	}
	cfg, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := strings.Cut(string(cfg), "[[sharded_tables]]")
	var b strings.Builder
	b.WriteString(head)
	for _, r := range rules {
		fmt.Fprintf(&b, "[[sharded_tables]]\ndatabase = \"dst\"\n")
		if r.table != "" {
			fmt.Fprintf(&b, "name = %q\n", r.table)
		}
		fmt.Fprintf(&b, "column = %q\n", r.column)
		if r.dataType != "bigint" {
			fmt.Fprintf(&b, "data_type = %q\n", r.dataType)
		}
		b.WriteString("\n")
	}
	if err := os.WriteFile(e.cfgPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	e.load(t)
	src := e.src[0]
	fig := &trialFigures{loadChanges: -1}

	start := time.Now()
	for _, f := range filepath.SplitList(files) {
		psqlFile(t, src, f)
	}
	// My marker table (omni) tells when the stream has caught up.
	src.exec(t, `CREATE TABLE reshard_trial_marker (code text PRIMARY KEY); CREATE PUBLICATION all_tables FOR ALL TABLES`)
	fig.add("load on the source", time.Since(start))

	schemas := os.Getenv("RESHARD_TRIAL_SCHEMAS")
	tables := trialTables(t, src, schemas)
	fig.tables = len(tables)
	intColumns := query(t, src.inst, src.db, `SELECT n.nspname || '.' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE a.attnum > 0 AND NOT a.attisdropped AND a.atttypid IN ('int2'::regtype, 'int4'::regtype) AND c.relkind IN ('r', 'p') AND `+trialSchemaFilter(schemas))
	fig.intColumns = fmt.Sprint(len(intColumns))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	addr, _ := serveAdmin(t, e, hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: os.Stderr}))
	admin := connectNotices(t, ctx, addr)
	var load *trialLoad
	if f := os.Getenv("RESHARD_TRIAL_LOAD"); f != "" {
		load = startTrialLoad(t, src, f)
	}
	start = time.Now()
	var id string
	if err := admin.QueryRow(ctx, "RESHARD src dst all_tables").Scan(&id); err != nil {
		t.Fatalf("RESHARD: %v", err)
	}
	fig.add("preflight (RESHARD answered)", time.Since(start))
	fig.notices = admin.taken()
	// Seconds per phase, from the task's states.
	state, since := "", time.Now()
	for state != "streaming" {
		st, msg := e.taskState(t)
		if st != state {
			if state != "" {
				fig.add(state, time.Since(since))
			}
			state, since = st, time.Now()
		}
		if st == "failed" || st == "stopped" {
			t.Fatalf("RESHARD %s %s: %s", id, st, msg)
		}
		if ctx.Err() != nil {
			t.Fatalf("RESHARD did not reach streaming: %s %s", st, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fig.add("RESHARD to streaming", time.Since(start))
	if load != nil {
		time.Sleep(2 * time.Second)
		start = time.Now()
		fig.loadChanges = load.stop(t)
		e.trialCaughtUp(t, 5*time.Minute)
		fig.add("load stopped and caught up", time.Since(start))
	}
	if w := os.Getenv("RESHARD_TRIAL_WRITES"); w != "" {
		start = time.Now()
		psqlFile(t, src, w)
		e.trialCaughtUp(t, 5*time.Minute)
		fig.add("writes streamed and caught up", time.Since(start))
		// The writes may have created or dropped tables (DDL carried
		// with resharding_ddl = "replicate").
		tables = trialTables(t, src, schemas)
		fig.tables = len(tables)
	}

	// What schema sync says it did: statements per phase (a dry run
	// plans the same), widened columns with their reasons, cross-shard
	// foreign keys; and a rerun of PRE and POST, which must apply nothing.
	widened := map[string]string{}
	for _, p := range []commands.Phase{commands.PhasePre, commands.PhasePost} {
		res, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: p, Route: e.route(), DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range res.Rows {
			if r[0].(int64) != 0 {
				continue
			}
			sql := r[2].(string)
			if w, ok := strings.CutPrefix(sql, "-- widened to bigint: "); ok {
				col, why, _ := strings.Cut(w, " (")
				widened[col] = strings.TrimSuffix(why, ")")
				continue
			}
			n++
		}
		fig.statements = append(fig.statements, fmt.Sprintf("%s %d", p, n))
	}
	start = time.Now()
	for _, p := range []string{"PRE", "POST"} {
		rows, err := admin.Query(ctx, "SCHEMA_SYNC "+p+" src dst all_tables")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			v, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			// A shard pg_dump cannot dump (a newer major version) is told
			// by existence checks alone: the statements that have none run
			// again and count as applied, as its note says; nothing else
			// may be applied.
			var rerun int64
			if m := regexp.MustCompile(`(\d+) statements without one ran again and count as applied`).FindStringSubmatch(v[8].(string)); m != nil {
				rerun, _ = strconv.ParseInt(m[1], 10, 64)
			}
			applied := fmt.Sprint(v[4])
			if rerun > 0 {
				applied += fmt.Sprintf(" (%d without an existence check: the shard could not be dumped)", rerun)
			}
			fig.reruns = append(fig.reruns, fmt.Sprintf("%s shard %d: %d statements, %s applied, %d already present, %d failed", p, v[1], v[3], applied, v[5], v[6]))
			if v[4].(int64) != rerun || v[6].(int64) != 0 {
				t.Errorf("rerun of %s on shard %d applied %d and failed %d statements: nothing changed, so none should but the %d without an existence check (%v)", p, v[1], v[4], v[6], rerun, v[8])
			}
			if p == "POST" {
				for _, note := range strings.Split(v[8].(string), "; ") {
					if strings.HasPrefix(note, "foreign key ") {
						fig.crossing = append(fig.crossing, note)
					}
				}
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("SCHEMA_SYNC %s: %v", p, err)
		}
		rows.Close()
	}
	fig.add("rerun of PRE and POST", time.Since(start))

	// Data: counts, row hashes, placement.
	start = time.Now()
	fig.rows, fig.omni, fig.sharded = compareTrial(t, e, tables, rules, "")
	fig.add("my comparison of every table", time.Since(start))

	// Catalog diff, source against each shard. PostgreSQL itself does not
	// deparse every definition back to the same text (x IN ('a', 'b') on
	// varchar comes back with its casts moved): a definition that differs
	// from the source's as it differs after pg_dump -s | psql is counted
	// apart, against a reference database made that way.
	srcCat := trialCatalog(t, src, schemas)
	ref := node{src.inst, src.db + "_ref"}
	if err := ref.inst.CreateDatabase(ctx, ref.db); err != nil {
		t.Fatal(err)
	}
	dumpInto(t, src, ref)
	refCat := trialCatalog(t, ref, schemas)
	for k, d := range e.dst {
		dstCat := trialCatalog(t, d, schemas)
		seenWidened := map[string]bool{}
		for obj, def := range srcCat {
			got, ok := dstCat[obj]
			switch {
			case !ok:
				t.Errorf("shard %d lacks %s: %s", k, obj, def)
			case got == def:
			case strings.HasPrefix(obj, "column ") && widenedType(def, got) && widened[strings.TrimPrefix(obj, "column ")] != "":
				seenWidened[strings.TrimPrefix(obj, "column ")] = true
			case strings.HasPrefix(obj, "constraint ") && got == def+" NOT VALID" && crossingNamed(fig.crossing, obj, k):
			case refCat[obj] == got:
				if k == 0 {
					fig.roundtrip = append(fig.roundtrip, obj)
				}
			case strings.HasPrefix(obj, "view column ") && widenedType(def, got):
				// A view's column over a widened one is bigint too.
				if k == 0 {
					fig.viewColumns = append(fig.viewColumns, strings.TrimPrefix(obj, "view column "))
				}
			default:
				t.Errorf("shard %d: %s is %q, source %q", k, obj, got, def)
			}
		}
		for obj, def := range dstCat {
			if _, ok := srcCat[obj]; !ok {
				t.Errorf("shard %d has %s the source has not: %s", k, obj, def)
			}
		}
		for col := range widened {
			if !seenWidened[col] {
				t.Errorf("shard %d: %s reported widened but its type is the source's", k, col)
			}
		}
		if k == 0 {
			fig.catalog = len(srcCat)
		}
	}

	// VERIFY (the engine's, as the admin server runs it, in the foreground).
	start = time.Now()
	vres, err := e.exec.Execute(ctx, commands.Verify{Route: e.route(), Foreground: true})
	if err != nil {
		t.Errorf("VERIFY: %v", err)
	}
	statuses := map[string]int{}
	if vres != nil {
		for _, v := range vres.Rows {
			statuses[fmt.Sprint(v[3])]++
			if v[3] != "match" {
				t.Logf("VERIFY %v", v)
			}
		}
	}
	fig.add("VERIFY", time.Since(start))
	fig.verify = statuses
	if w := os.Getenv("RESHARD_TRIAL_CUTOVER_WRITES"); w != "" {
		e.trialCutover(t, ctx, admin, id, w, tables, rules, fig)
	}
	if _, err := admin.Exec(ctx, "STOP_TASK "+id); err != nil {
		t.Fatal(err)
	}

	cols := make([]string, 0, len(widened))
	for c, why := range widened {
		cols = append(cols, c+" ("+why+")")
	}
	sort.Strings(cols)
	fig.widened = cols
	for _, c := range intColumns {
		if col, _, _ := strings.Cut(c, " "); widened[col] == "" {
			fig.kept = append(fig.kept, c)
		}
	}
	report := fig.String()
	t.Log("\n" + report)
	if p := os.Getenv("RESHARD_TRIAL_REPORT"); p != "" {
		if err := os.WriteFile(p, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// compareTrial compares every table of the trial, source against shards,
// with my own SQL: counts and row hashes (an omni table on every shard, a
// sharded one against the union of the shards) and the placement of every
// sharded row. It returns the source's rows and how many tables are omni
// and sharded. when names the moment in the errors.
func compareTrial(t *testing.T, e *copyEnv, tables []trialTable, rules []trialRule, when string) (rows int64, omni, sharded int) {
	t.Helper()
	src := e.src[0]
	for _, tb := range tables {
		key, hashedAs := tb.shardKey(rules)
		srcCount, srcSum := checksumOf(t, src, tb.rel())
		rows += srcCount
		if key == "" {
			for k, d := range e.dst {
				if c, s := checksumOf(t, d, tb.rel()); c != srcCount || s != srcSum {
					t.Errorf("%somni %s on shard %d: %d rows (sum %s), source %d (sum %s)", when, tb.rel(), k, c, s, srcCount, srcSum)
				}
			}
			omni++
			continue
		}
		sharded++
		var total int64
		sum := "0"
		for k, d := range e.dst {
			c, s := checksumOf(t, d, tb.rel())
			total += c
			sum = d.one(t, fmt.Sprintf("SELECT (%s::numeric + %s::numeric)::text", sum, s))
			if n := misplacedAs(t, d, tb.rel(), quoteIdent(key), hashedAs, len(e.dst), k); n != 0 {
				t.Errorf("%s%s: %d rows on shard %d belong elsewhere", when, tb.rel(), n, k)
			}
		}
		if total != srcCount || sum != srcSum {
			t.Errorf("%s%s: shards hold %d rows (sum %s), source %d (sum %s)", when, tb.rel(), total, sum, srcCount, srcSum)
		}
	}
	return rows, omni, sharded
}

// trialCutover is the trial's cutover and rollback: CUTOVER; writes (the
// file) on every shard, taking ids from the column defaults (the
// shard-local generators); the old database follows by reverse
// replication and equals the shards; rollback (CUTOVER again); a write on
// the old database streams to the shards; a second CUTOVER and the writes
// once more. Each step is compared with compareTrial.
func (e *copyEnv) trialCutover(t *testing.T, ctx context.Context, admin *noticeConn, id, writes string, tables []trialTable, rules []trialRule, fig *trialFigures) {
	t.Helper()
	src := e.src[0]
	cutover := func(want string) {
		t.Helper()
		start := time.Now()
		var tid, state, slot string
		if err := admin.QueryRow(ctx, "CUTOVER "+id).Scan(&tid, &state, &slot); err != nil {
			t.Fatalf("CUTOVER: %v", err)
		}
		if state != want {
			t.Fatalf("CUTOVER answered %s, want %s", state, want)
		}
		fig.add("CUTOVER to "+want, time.Since(start))
	}
	// reverseCaughtUp waits until every shard's reverse stream has
	// confirmed the shard's WAL position taken now (everything written on
	// it before is in the old database), and a marker written on shard 0
	// (the omni table's changes stream back from shard 0) is there.
	reverseCaughtUp := func() {
		t.Helper()
		marker := fmt.Sprintf("R%d", time.Now().UnixNano())
		e.dst[0].exec(t, fmt.Sprintf(`INSERT INTO reshard_trial_marker VALUES ('%s')`, marker))
		for k := 1; k < len(e.dst); k++ {
			e.dst[k].exec(t, fmt.Sprintf(`SET session_replication_role = replica; INSERT INTO reshard_trial_marker VALUES ('%s')`, marker))
		}
		targets := make([]string, len(e.dst))
		for k, d := range e.dst {
			targets[k] = d.one(t, `SELECT pg_current_wal_lsn()::text`)
		}
		deadline := time.Now().Add(5 * time.Minute)
		for {
			done := src.one(t, fmt.Sprintf(`SELECT count(*) FROM reshard_trial_marker WHERE code = '%s'`, marker)) == "1"
			for k, d := range e.dst {
				q := fmt.Sprintf(`SELECT count(*) FROM pg_replication_slots WHERE database = current_database() AND slot_type = 'logical' AND confirmed_flush_lsn >= '%s'::pg_lsn`, targets[k])
				if d.one(t, q) == "0" {
					done = false
				}
			}
			if done {
				return
			}
			if st, msg := e.taskState(t); st != "reverse_streaming" || time.Now().After(deadline) {
				t.Fatalf("the reverse streams did not catch up: task %s %s", st, msg)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	shardWrites := func(round string) {
		t.Helper()
		start := time.Now()
		for _, d := range e.dst {
			psqlFile(t, d, writes)
		}
		reverseCaughtUp()
		fig.add("writes on every shard ("+round+") reached the old database", time.Since(start))
		compareTrial(t, e, tables, rules, "after the shards' writes ("+round+"): ")
	}

	cutover("reverse_streaming")
	if err := src.inst.Exec(ctx, src.db, `INSERT INTO reshard_trial_marker VALUES ('after cutover')`); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("the old database takes writes after CUTOVER: %v", err)
	}
	shardWrites("first cutover")
	cutover("streaming")
	for k, d := range e.dst {
		if err := d.inst.Exec(ctx, d.db, `INSERT INTO reshard_trial_marker VALUES ('after rollback')`); err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Fatalf("shard %d takes writes after the rollback: %v", k, err)
		}
	}
	e.trialCaughtUp(t, 5*time.Minute)
	compareTrial(t, e, tables, rules, "after the rollback: ")
	cutover("reverse_streaming")
	shardWrites("second cutover")
	fig.cutover = true
}

// trialRule is one sharding rule of the trial: a column, on every table
// that has it, or on the named table only.
// trialRule is one [[sharded_tables]] entry: a column (of every table that
// has it, or of one table) and its data_type.
type trialRule struct{ table, column, dataType string }

// trialTable is a table of the source with rows of its own (a leaf, or a
// plain table), with the partitioned roots above it and its columns.
type trialTable struct {
	schema, name string
	roots        []string
	columns      map[string]bool
}

func (tb trialTable) rel() string { return "ONLY " + quoteIdent(tb.schema) + "." + quoteIdent(tb.name) }

// shardKey returns the column the rules shard the table by, "" for an omni
// table: a rule naming it or a root above it wins over a column rule.
func (tb trialTable) shardKey(rules []trialRule) (column, hashedAs string) {
	for _, r := range rules {
		if r.table == "" {
			continue
		}
		for _, n := range append([]string{tb.name}, tb.roots...) {
			if r.table == n && tb.columns[r.column] {
				return r.column, keyHashType(r.dataType)
			}
		}
	}
	for _, r := range rules {
		if r.table == "" && tb.columns[r.column] {
			return r.column, keyHashType(r.dataType)
		}
	}
	return "", ""
}

// keyHashType is the type whose hash partitioning places a key of
// data_type dt: integers hash as bigint, varchar as text.
func keyHashType(dt string) string {
	switch dt {
	case "varchar", "text":
		return "text"
	case "uuid":
		return "uuid"
	}
	return "bigint"
}

func trialSchemaFilter(schemas string) string {
	if schemas == "" {
		return `n.nspname NOT IN ('pg_catalog', 'information_schema', 'reshard') AND n.nspname NOT LIKE 'pg\_%'`
	}
	return fmt.Sprintf(`n.nspname = ANY (string_to_array(%s, ','))`, quoteLiteral(schemas))
}

// trialTables lists the source's tables with rows of their own: ordinary
// tables (logged: the publication carries no other) in the schemas.
func trialTables(t *testing.T, n node, schemas string) []trialTable {
	t.Helper()
	var out []trialTable
	for _, row := range query(t, n.inst, n.db, `SELECT n.nspname, c.relname,
		  coalesce((WITH RECURSIVE up(r) AS (SELECT inhparent FROM pg_inherits WHERE inhrelid = c.oid UNION ALL SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.r)
		    SELECT string_agg(relname, ',') FROM up JOIN pg_class p ON p.oid = up.r), ''),
		  (SELECT string_agg(attname, ',') FROM pg_attribute WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND c.relname <> 'reshard_trial_marker' AND `+trialSchemaFilter(schemas)+` ORDER BY 1, 2`) {
		f := strings.Split(row, " | ")
		tb := trialTable{schema: f[0], name: f[1], columns: map[string]bool{}}
		if f[2] != "" {
			tb.roots = strings.Split(f[2], ",")
		}
		for _, c := range strings.Split(f[3], ",") {
			tb.columns[c] = true
		}
		out = append(out, tb)
	}
	return out
}

// trialCatalog describes a node's schema objects, one definition per
// object: columns with their types, nullability and defaults, constraints,
// indexes, views, functions, triggers, sequences, types.
func trialCatalog(t *testing.T, n node, schemas string) map[string]string {
	t.Helper()
	filter := trialSchemaFilter(schemas)
	out := map[string]string{}
	for _, q := range []string{
		`SELECT CASE WHEN c.relkind IN ('v', 'm') THEN 'view column ' ELSE 'column ' END || n.nspname || '.' || c.relname || '.' || a.attname, format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
		   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		   WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relname <> 'reshard_trial_marker' AND ` + filter,
		`SELECT 'constraint ' || n.nspname || '.' || c.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
		   FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname <> 'reshard_trial_marker' AND ` + filter,
		`SELECT 'index ' || n.nspname || '.' || i.relname, pg_get_indexdef(i.oid)
		   FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_namespace n ON n.oid = i.relnamespace WHERE i.relname <> 'reshard_trial_marker_pkey' AND ` + filter,
		`SELECT 'view ' || n.nspname || '.' || c.relname, md5(pg_get_viewdef(c.oid))
		   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND ` + filter,
		`SELECT 'function ' || n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', md5(pg_get_functiondef(p.oid))
		   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.prokind IN ('f', 'p') AND ` + filter,
		`SELECT 'trigger ' || n.nspname || '.' || c.relname || '.' || g.tgname, pg_get_triggerdef(g.oid)
		   FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT g.tgisinternal AND ` + filter,
		`SELECT 'sequence ' || n.nspname || '.' || c.relname, 'sequence' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S' AND ` + filter,
		`SELECT 'type ' || n.nspname || '.' || y.typname, y.typtype::text FROM pg_type y JOIN pg_namespace n ON n.oid = y.typnamespace
		   WHERE y.typtype IN ('e', 'd', 'c', 'r') AND (y.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = y.typrelid) = 'c') AND ` + filter,
	} {
		for _, row := range query(t, n.inst, n.db, q) {
			obj, def, _ := strings.Cut(row, " | ")
			out[obj] = def
		}
	}
	return out
}

// widenedType tells that a shard's column definition is the source's with
// its integer type made bigint.
func widenedType(src, dst string) bool {
	for _, from := range []string{"integer", "smallint"} {
		if rest, ok := strings.CutPrefix(src, from); ok && dst == "bigint"+rest {
			return true
		}
	}
	return false
}

// crossingNamed tells that POST reported the constraint (object
// "constraint schema.table.name") as crossing shards on shard k.
func crossingNamed(notes []string, obj string, k int) bool {
	parts := strings.Split(strings.TrimPrefix(obj, "constraint "), ".")
	name, table := parts[len(parts)-1], strings.Join(parts[:len(parts)-1], ".")
	for _, n := range notes {
		if strings.HasPrefix(n, fmt.Sprintf("foreign key %s on %s ", name, table)) && strings.Contains(n, fmt.Sprintf("on shard %d:", k)) {
			return true
		}
	}
	return false
}

// trialCaughtUp writes a marker on the source and waits for every shard.
func (e *copyEnv) trialCaughtUp(t *testing.T, timeout time.Duration) {
	t.Helper()
	marker := fmt.Sprintf("M%d", time.Now().UnixNano())
	e.src[0].exec(t, fmt.Sprintf(`INSERT INTO reshard_trial_marker VALUES ('%s')`, marker))
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for _, d := range e.dst {
			if d.one(t, fmt.Sprintf(`SELECT count(*) FROM reshard_trial_marker WHERE code = '%s'`, marker)) != "1" {
				ok = false
			}
		}
		if ok {
			return
		}
		if st, msg := e.taskState(t); st != "streaming" || time.Now().After(deadline) {
			t.Fatalf("the stream did not catch up: task %s %s", st, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// psqlFile runs a SQL file on a node with psql, stopping at its first error.
func psqlFile(t *testing.T, n node, file string) {
	t.Helper()
	cmd := exec.Command(psqlPath(t), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", n.inst.Host, "-p", fmt.Sprint(n.inst.Port), "-U", pgtest.User, "-d", n.db, "-f", file)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+pgtest.Password, "PGSSLMODE=disable")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("psql -f %s: %v\n%s", file, err, out)
	}
}

// trialLoad is pgbench running a script on the source.
type trialLoad struct {
	cmd    *exec.Cmd
	out    bytes.Buffer
	n      node
	before int64
}

// loadChangesSQL sums the rows inserted, updated and deleted in every user
// table of the database (as the statistics tell, a little late).
const loadChangesSQL = `SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint FROM pg_stat_user_tables`

// startTrialLoad starts pgbench with script file on n: 4 clients, until
// stopped.
func startTrialLoad(t *testing.T, n node, file string) *trialLoad {
	t.Helper()
	l := &trialLoad{n: n}
	l.before = trialScalar(t, n, loadChangesSQL)
	l.cmd = exec.Command(filepath.Join(cluster.BinDir, "pgbench"), "-n", "-c", "4", "-T", "3600", "-f", file,
		"-h", n.inst.Host, "-p", fmt.Sprint(n.inst.Port), "-U", pgtest.User, n.db)
	l.cmd.Env = append(os.Environ(), "PGPASSWORD="+pgtest.Password, "PGSSLMODE=disable")
	l.cmd.Stdout, l.cmd.Stderr = &l.out, &l.out
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l.cmd.ProcessState == nil {
			l.cmd.Process.Kill()
			l.cmd.Wait()
		}
	})
	return l
}

// stop ends pgbench and returns the rows it changed; a client that failed
// fails the test.
func (l *trialLoad) stop(t *testing.T) int64 {
	t.Helper()
	l.cmd.Process.Signal(os.Interrupt)
	l.cmd.Wait()
	if out := l.out.String(); strings.Contains(out, "aborted") || strings.Contains(out, "ERROR") {
		t.Fatalf("the load failed:\n%s", out)
	}
	time.Sleep(time.Second) // the statistics are flushed within a second
	return trialScalar(t, l.n, loadChangesSQL) - l.before
}

// trialScalar runs sql (one bigint) on n.
func trialScalar(t *testing.T, n node, sql string) int64 {
	t.Helper()
	c, err := n.inst.Connect(context.Background(), n.db)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var v int64
	if err := c.QueryRow(context.Background(), sql).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// dumpInto restores the schema of one node into another with pg_dump -s
// and psql, as an operator would by hand.
func dumpInto(t *testing.T, from, to node) {
	t.Helper()
	dump := exec.Command("pg_dump", "-s", "-h", from.inst.Host, "-p", fmt.Sprint(from.inst.Port), "-U", pgtest.User, from.db)
	dump.Env = append(os.Environ(), "PGPASSWORD="+pgtest.Password, "PGSSLMODE=disable")
	sql, err := dump.Output()
	if err != nil {
		t.Fatalf("pg_dump -s %s: %v", from.db, err)
	}
	restore := exec.Command(psqlPath(t), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", to.inst.Host, "-p", fmt.Sprint(to.inst.Port), "-U", pgtest.User, "-d", to.db)
	restore.Env = dump.Env
	restore.Stdin = strings.NewReader(string(sql))
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("psql into %s: %v\n%s", to.db, err, out)
	}
}

// trialFigures are what the trial measured.
type trialFigures struct {
	tables, sharded, omni, catalog int
	rows                           int64
	phases                         []string
	statements, reruns, crossing   []string
	widened, notices, viewColumns  []string
	roundtrip                      []string
	intColumns                     string
	kept                           []string
	verify                         map[string]int
	cutover                        bool  // CUTOVER, rollback and CUTOVER again compared equal
	loadChanges                    int64 // rows the RESHARD_TRIAL_LOAD changed (-1: none ran)
}

func (f *trialFigures) add(phase string, d time.Duration) {
	f.phases = append(f.phases, fmt.Sprintf("%s: %.1f s", phase, d.Seconds()))
}

func (f *trialFigures) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tables (ordinary, logged): %d (%d sharded, %d omni), %d source rows compared (counts, row hashes, placement)\n", f.tables, f.sharded, f.omni, f.rows)
	fmt.Fprintf(&b, "catalog objects compared per shard: %d\n", f.catalog)
	fmt.Fprintf(&b, "statements per shard: %s\n", strings.Join(f.statements, ", "))
	if f.loadChanges >= 0 {
		fmt.Fprintf(&b, "rows the load changed on the source while the copy ran and streamed: %d\n", f.loadChanges)
	}
	fmt.Fprintf(&b, "seconds:\n  %s\n", strings.Join(f.phases, "\n  "))
	fmt.Fprintf(&b, "reruns:\n  %s\n", strings.Join(f.reruns, "\n  "))
	fmt.Fprintf(&b, "widened columns (%d of %s integer and smallint table columns):\n  %s\n", len(f.widened), f.intColumns, strings.Join(f.widened, "\n  "))
	fmt.Fprintf(&b, "integer and smallint table columns kept (%d): %s\n", len(f.kept), strings.Join(f.kept, ", "))
	sort.Strings(f.viewColumns)
	fmt.Fprintf(&b, "view columns bigint because they select a widened column (%d): %s\n", len(f.viewColumns), strings.Join(f.viewColumns, ", "))
	fmt.Fprintf(&b, "definitions that differ from the source as after pg_dump -s | psql (%d): %s\n", len(f.roundtrip), strings.Join(f.roundtrip, ", "))
	fmt.Fprintf(&b, "foreign keys crossing shards (%d):\n  %s\n", len(f.crossing), strings.Join(f.crossing, "\n  "))
	fmt.Fprintf(&b, "preflight notices (%d):\n  %s\n", len(f.notices), strings.Join(f.notices, "\n  "))
	fmt.Fprintf(&b, "VERIFY: %v\n", f.verify)
	if f.cutover {
		fmt.Fprintf(&b, "CUTOVER, writes on every shard with ids from the defaults, rollback, a write on the old database, CUTOVER again and the writes again: every table equal at each step (counts, row hashes, placement)\n")
	}
	return b.String()
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
