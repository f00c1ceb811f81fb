package tests

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/sync/verify"
	"github.com/reshard/reshard/tests/testkit"
)

// verifySchema has one table of every shape VERIFY keys differently, and
// columns of types hashed by their text: without a hash function (json,
// point), without an extended one (tsvector), or whose hash is an OID that
// differs on every database (enums, arrays of them; Pagila's film.rating).
const verifySchema = `
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE big (id bigint PRIMARY KEY, customer_id bigint, v text, at timestamptz);
CREATE TABLE byindex (code text NOT NULL, customer_id bigint, v int);
CREATE UNIQUE INDEX byindex_code ON byindex (code);
ALTER TABLE byindex REPLICA IDENTITY USING INDEX byindex_code;
CREATE TABLE keyless (customer_id bigint, v text);
ALTER TABLE keyless REPLICA IDENTITY FULL;
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE docs (id int PRIMARY KEY, customer_id bigint, doc json, p point, tags text[], m mood, ms mood[], ts tsvector);
CREATE TABLE pairs (a int, b text, customer_id bigint, PRIMARY KEY (a, b));
CREATE PUBLICATION all_tables FOR ALL TABLES;
`

// loadVerifyData fills source shard i of n (rows ≡ i mod n).
func loadVerifyData(t *testing.T, s node, i, n int) {
	t.Helper()
	s.exec(t, fmt.Sprintf(`
INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 300) g WHERE g %% %[1]d = %[2]d;
INSERT INTO big SELECT g, g %% 300, md5(g::text), timestamptz '2026-01-01' + g * interval '1 minute' FROM generate_series(1, 20000) g WHERE g %% %[1]d = %[2]d;
INSERT INTO byindex SELECT 'c' || g, g %% 300, g FROM generate_series(1, 2000) g WHERE g %% %[1]d = %[2]d;
INSERT INTO keyless SELECT g %% 300, 'k' || (g %% 50) FROM generate_series(1, 3000) g WHERE g %% %[1]d = %[2]d;
INSERT INTO docs SELECT g, g %% 300, json_build_object('g', g), point(g, -g), ARRAY['a', g::text],
  (ARRAY['sad', 'ok', 'happy'])[1 + g %% 3]::mood, ARRAY['ok', 'sad']::mood[], to_tsvector('simple', 'row ' || g) FROM generate_series(1, 500) g WHERE g %% %[1]d = %[2]d;
INSERT INTO pairs SELECT g %% 10, 'b' || g, g %% 300 FROM generate_series(1, 1000) g WHERE g %% %[1]d = %[2]d;
ANALYZE;`, n, i))
	s.exec(t, `INSERT INTO countries VALUES ('NL', 'Netherlands'), ('DE', 'Germany'), ('JP', 'Japan')`)
}

// shardOf finds the shard holding a row.
func (e *copyEnv) shardOf(t *testing.T, table, where string) node {
	t.Helper()
	for _, d := range e.dst {
		if d.one(t, fmt.Sprintf(`SELECT count(*) FROM %s WHERE %s`, table, where)) == "1" {
			return d
		}
	}
	t.Fatalf("no shard holds %s WHERE %s", table, where)
	return node{}
}

// tamper runs sql on a shard behind reshard's back (no triggers, no
// foreign-key checks), as a stray script with superuser rights could.
func tamper(t *testing.T, d node, sql string) {
	t.Helper()
	d.exec(t, "SET session_replication_role = replica; "+sql)
}

// runVerify runs VERIFY through the engine with small chunks (so that the
// large table is split and a difference is bisected), and returns the
// rows by table.
func (e *copyEnv) runVerify(t *testing.T, task string, hold verify.Holder, log hclog.Logger) (*verify.Result, map[string]progress.VerifyRow) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	reg := progress.NewRegistry()
	j, err := job.New(job.Spec{Catalog: e.cat, Source: "src", Destination: "dst", Publication: "all_tables", Task: task, Registry: reg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	res, err := verify.Run(ctx, j, verify.Request{ChunkRows: 1000, LeafRows: 64, Parallel: 3, Hold: hold})
	if err != nil {
		t.Fatalf("VERIFY: %v", err)
	}
	out := map[string]progress.VerifyRow{}
	for _, r := range reg.Verify() {
		out[r.Table] = r
	}
	return res, out
}

// countingHolder stands for the stream of a route: it records the points
// it is asked to hold at and fails the first request as a stream that had
// passed its point would.
type countingHolder struct {
	calls, releases atomic.Int32
	points          [][]pglogrepl.LSN
}

func (h *countingHolder) Hold(ctx context.Context, take func(context.Context) ([]pglogrepl.LSN, error)) (func() time.Duration, error) {
	points, err := take(ctx)
	if err != nil {
		return nil, err
	}
	h.points = append(h.points, points)
	if h.calls.Add(1) == 1 {
		return nil, fmt.Errorf("stream of slot x: %w", verify.ErrPassed)
	}
	return func() time.Duration { h.releases.Add(1); return time.Millisecond }, nil
}

// TestVerifyKinds: every table shape matches after a copy; then rows
// changed behind reshard's back on the shards are found, counted by kind
// and named in the log, with one and with two source shards.
func TestVerifyKinds(t *testing.T) {
	for _, nSrc := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d_source_shards", nSrc), func(t *testing.T) { testVerifyKinds(t, nSrc) })
	}
}

func testVerifyKinds(t *testing.T, nSrc int) {
	e := newCopyEnv(t, fmt.Sprintf("vk%d", nSrc), nSrc, 2, "")
	for i, s := range e.src {
		s.exec(t, verifySchema)
		loadVerifyData(t, s, i, nSrc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, phase := range []commands.Phase{commands.PhasePre} {
		if _, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: phase, Route: e.route()}); err != nil {
			t.Fatalf("SCHEMA_SYNC %s: %v", phase, err)
		}
	}
	e.copy(t, "")
	if _, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: commands.PhasePost, Route: e.route()}); err != nil {
		t.Fatalf("SCHEMA_SYNC POST: %v", err)
	}

	hold := &countingHolder{}
	res, rows := e.runVerify(t, "v1", hold, hclog.NewNullLogger())
	tables := []string{"customers", "big", "byindex", "keyless", "countries", "docs", "pairs"}
	for _, name := range tables {
		r := rows[name]
		if r.Status != verify.StatusMatch || r.SourceRows == 0 || r.RowsCompared != r.SourceRows {
			t.Fatalf("%s after the copy: %+v", name, r)
		}
		// Our own count of the source.
		var want int64
		for _, s := range e.src[:1+(nSrc-1)*boolInt(name != "countries")] {
			var n int64
			fmt.Sscan(s.one(t, "SELECT count(*) FROM "+name), &n)
			want += n
		}
		if r.SourceRows != want {
			t.Fatalf("%s: source_rows %d, the source holds %d", name, r.SourceRows, want)
		}
	}
	if c := rows["countries"]; c.DestinationRows != 2*c.SourceRows || len(c.ShardRows) != 2 || c.ShardRows[0] != 3 || c.ShardRows[1] != 3 {
		t.Fatalf("omni table: destination_rows %d, shard_rows %v", c.DestinationRows, c.ShardRows)
	}
	if res.Mismatched != 0 || res.Failed != 0 || !res.Held || hold.calls.Load() != 2 || hold.releases.Load() != 1 {
		t.Fatalf("result %+v, holder called %d times, released %d", res, hold.calls.Load(), hold.releases.Load())
	}
	if len(hold.points[1]) != nSrc || res.ConsistentLSN == "" || hold.points[0][0] == hold.points[1][0] {
		t.Fatalf("points held: %v (result %s): want one fresh LSN per source shard on the retry", hold.points, res.ConsistentLSN)
	}
	if strings.Count(res.ConsistentLSN, ",") != nSrc-1 || !strings.Contains(res.ConsistentLSN, hold.points[1][0].String()) {
		t.Fatalf("consistent_lsn %q, held at %v", res.ConsistentLSN, hold.points[1])
	}

	// Behind reshard's back, on the shards.
	tamper(t, e.shardOf(t, "big", "id = 777"), `DELETE FROM big WHERE id = 777`)
	tamper(t, e.shardOf(t, "big", "id = 1234"), `UPDATE big SET v = 'changed' WHERE id = 1234`)
	tamper(t, e.dst[0], `INSERT INTO big VALUES (999999, 0, 'extra', now())`)
	// Row 5000 moved to the wrong shard: there, but misplaced.
	home := e.shardOf(t, "big", "id = 5000")
	other := e.dst[0]
	if home == other {
		other = e.dst[1]
	}
	tamper(t, home, `DELETE FROM big WHERE id = 5000`)
	tamper(t, other, `INSERT INTO big SELECT 5000, 5000 % 300, md5('5000'), timestamptz '2026-01-01' + 5000 * interval '1 minute'`)
	tamper(t, e.shardOf(t, "byindex", "code = 'c10'"), `DELETE FROM byindex WHERE code = 'c10'`)
	tamper(t, e.dst[1], `UPDATE keyless SET v = 'changed' WHERE ctid = (SELECT min(ctid) FROM keyless)`)
	tamper(t, e.dst[1], `DELETE FROM countries WHERE code = 'JP'`)
	tamper(t, e.shardOf(t, "docs", "id = 42"), `UPDATE docs SET doc = '{"g": "changed"}' WHERE id = 42`)
	tamper(t, e.shardOf(t, "pairs", "a = 3 AND b = 'b3'"), `DELETE FROM pairs WHERE a = 3 AND b = 'b3'`)

	var logs testkit.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	res, rows = e.runVerify(t, "v2", nil, log)
	type want struct {
		missing, extra, different, misplaced int64
		keys                                 []string
	}
	expect := map[string]want{
		"customers": {},
		"big":       {1, 1, 1, 1, []string{`kind=missing count=1 keys=["777"]`, `kind=extra count=1 keys=["999999"]`, `kind=different count=1 keys=["1234"]`, `kind=misplaced count=1 keys=["5000 (on shard`}},
		"byindex":   {1, 0, 0, 0, []string{`kind=missing count=1 keys=["c10"]`}},
		"keyless":   {1, 1, 0, 0, []string{`,changed) (on the destination only)", "(`, `) (on the source only)"]`}},
		"countries": {1, 0, 0, 0, []string{`table=public.countries shard=1 kind=missing count=1 keys=["JP"]`}},
		"docs":      {0, 0, 1, 0, []string{`kind=different count=1 keys=["42"]`}},
		"pairs":     {1, 0, 0, 0, []string{`kind=missing count=1 keys=["(3,b3)"]`}},
	}
	for name, w := range expect {
		r := rows[name]
		status := verify.StatusMismatch
		if w.missing+w.extra+w.different+w.misplaced == 0 {
			status = verify.StatusMatch
		}
		if r.Status != status || r.Missing != w.missing || r.Extra != w.extra || r.Different != w.different || r.Misplaced != w.misplaced {
			t.Errorf("%s: %s missing %d extra %d different %d misplaced %d; want %s %+v", name, r.Status, r.Missing, r.Extra, r.Different, r.Misplaced, status, w)
		}
		for _, k := range w.keys {
			if !strings.Contains(logs.String(), k) {
				t.Errorf("%s: the log does not name %s:\n%s", name, k, logs.String())
			}
		}
	}
	if res.Mismatched != 6 || res.Held {
		t.Fatalf("result %+v", res)
	}
	if !strings.Contains(logs.String(), "no stream feeds the route") {
		t.Fatalf("the log does not say the destination was compared without a hold:\n%s", logs.String())
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestVerifyUnreadableTable: a table a shard cannot read is an error in its
// row, never a match, and the other tables are still compared.
func TestVerifyUnreadableTable(t *testing.T) {
	e := newCopyEnv(t, "vunread", 1, 2, "")
	e.src[0].exec(t, verifySchema)
	loadVerifyData(t, e.src[0], 0, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: commands.PhasePre, Route: e.route()}); err != nil {
		t.Fatal(err)
	}
	e.copy(t, "")
	// A shard lost a column of docs: reading its rows fails there.
	e.dst[1].exec(t, `ALTER TABLE docs RENAME TO docs_gone; CREATE VIEW docs AS SELECT id / (id - id) AS id, customer_id, doc, p, tags, m, ms, ts FROM docs_gone`)
	res, rows := e.runVerify(t, "v1", nil, hclog.NewNullLogger())
	if r := rows["docs"]; !strings.HasPrefix(r.Status, "error: ") || !strings.Contains(r.Status, "destination shard 1") {
		t.Fatalf("docs: %+v", r)
	}
	for _, name := range []string{"customers", "big", "byindex", "keyless", "countries", "pairs"} {
		if rows[name].Status != verify.StatusMatch {
			t.Fatalf("%s: %+v", name, rows[name])
		}
	}
	if res.Failed != 1 || res.Mismatched != 0 {
		t.Fatalf("result %+v", res)
	}
}

// TestVerifyMappedPlacement: a table placed by list mappings has its
// placement checked by the sharding function (not PostgreSQL's hash): a
// row moved to the wrong shard is misplaced, and named.
func TestVerifyMappedPlacement(t *testing.T) {
	e := newCopyEnv(t, "vmap", 1, 2, "")
	cfg, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = append(cfg, []byte(`
[[sharded_tables]]
database = "dst"
name = "tenants"
column = "region"
data_type = "varchar"

[[sharded_tables.mapping]]
shard = 0
values = ["eu", "ap"]

[[sharded_tables.mapping]]
shard = 1
values = ["us"]
`)...)
	if err := os.WriteFile(e.cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	e.load(t)
	src := e.src[0]
	src.exec(t, `CREATE TABLE tenants (id int PRIMARY KEY, region text NOT NULL, v text);
		INSERT INTO tenants SELECT g, (ARRAY['eu', 'us', 'ap'])[1 + g % 3], 'v' || g FROM generate_series(1, 300) g;
		CREATE PUBLICATION all_tables FOR ALL TABLES`)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: commands.PhasePre, Route: e.route()}); err != nil {
		t.Fatal(err)
	}
	e.copy(t, "")
	_, rows := e.runVerify(t, "v1", nil, hclog.NewNullLogger())
	if r := rows["tenants"]; r.Status != verify.StatusMatch || r.SourceRows != 300 || r.ShardRows[0] != 200 || r.ShardRows[1] != 100 {
		t.Fatalf("tenants after the copy: %+v", r)
	}
	// id 3 is in "eu" (shard 0): moved to shard 1.
	tamper(t, e.dst[0], `DELETE FROM tenants WHERE id = 3`)
	tamper(t, e.dst[1], `INSERT INTO tenants VALUES (3, 'eu', 'v3')`)
	var logs testkit.Buffer
	_, rows = e.runVerify(t, "v2", nil, hclog.New(&hclog.LoggerOptions{Output: &logs}))
	if r := rows["tenants"]; r.Status != verify.StatusMismatch || r.Misplaced != 1 || r.Missing+r.Extra+r.Different != 0 {
		t.Fatalf("tenants with a row on the wrong shard: %+v", r)
	}
	if want := `kind=misplaced count=1 keys=["3 (on shard 1)"]`; !strings.Contains(logs.String(), want) {
		t.Fatalf("the log does not name the misplaced row (%s):\n%s", want, logs.String())
	}
}

// verifyRowsAgree tells whether a SHOW VERIFY row's counts agree: the
// shards together hold the source's rows (a sharded table), or every shard
// holds all of them (an omni table, whose destination_rows counts every
// shard's copy; shard_rows lists each).
func verifyRowsAgree(r []any) bool {
	src := fmt.Sprint(r[4])
	if fmt.Sprint(r[5]) == src {
		return true
	}
	for _, n := range strings.Split(fmt.Sprint(r[14]), ",") {
		if n != src {
			return false
		}
	}
	return true
}

// TestVerifyNamesStoppedMigration: VERIFY of a route whose migration was
// stopped finds the changes made since (no stream applies them) and says
// why: its error names the task, its state and that no stream feeds the
// destination.
func TestVerifyNamesStoppedMigration(t *testing.T) {
	e, src := sourceEnv(t, "vstop", 300, "")
	id := e.reshardStreaming(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.exec.Execute(ctx, commands.StopTask{Task: id}); err != nil {
		t.Fatal(err)
	}
	src.exec(t, `UPDATE customers SET name = name || ' (after the stop)' WHERE id <= 10`)
	_, err := e.exec.Execute(ctx, commands.Verify{Route: e.route(), Foreground: true})
	want := fmt.Sprintf("task %s (reshard) of this route is stopped, so no stream applies the source's changes", id)
	if err == nil || !strings.Contains(err.Error(), "1 of") || !strings.Contains(err.Error(), want) {
		t.Fatalf("VERIFY after STOP_TASK and a write: %v; want it to say %q", err, want)
	}
	t.Logf("VERIFY: %v", err)
}
