package tests

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/metrics"
	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/sync/task"
	"github.com/reshard/reshard/tests/pgtest"
)

// scrape is one parsed exposition.
type scrape map[string]*dto.MetricFamily

// sum adds the values of family's series whose labels include want.
func (s scrape) sum(family string, want map[string]string) (float64, int) {
	f := s[family]
	if f == nil {
		return 0, 0
	}
	var total float64
	n := 0
	for _, m := range f.Metric {
		if !hasLabels(m, want) {
			continue
		}
		n++
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		}
	}
	return total, n
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.Label {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func labelNames(m *dto.Metric) string {
	var names []string
	for _, l := range m.Label {
		names = append(names, l.GetName())
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

// get fetches /metrics with an Accept header ("" for the client's default).
func get(t *testing.T, url, accept string) (string, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v\n%s", url, resp.Status, err, body)
	}
	return resp.Header.Get("Content-Type"), string(body)
}

// scrapeText fetches /metrics in the Prometheus text format and parses it.
func scrapeText(t *testing.T, url string) scrape {
	t.Helper()
	ct, body := get(t, url, "text/plain;version=0.0.4")
	if !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("content type %q", ct)
	}
	for _, secret := range []string{pgtest.Password, adminPassword} {
		if strings.Contains(body, secret) {
			t.Fatalf("a password appears in /metrics")
		}
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	return fams
}

// metricsEnv is a source with a customers table of rows rows, two
// destination shards whose inserts are slowed by a trigger (so that a
// copy takes seconds), and reshard's /metrics served as reshard serve
// serves it with [general] openmetrics_port.
type metricsEnv struct {
	*copyEnv
	route commands.Route
	// url is the /metrics URL; addr its host:port.
	url, addr string
}

func startMetricsEnv(t *testing.T, ctx context.Context, name string, rows int) *metricsEnv {
	t.Helper()
	e := newCopyEnv(t, name, 1, 2, fmt.Sprintf("openmetrics_port = %d", freePort(t)))
	e.src[0].exec(t, fmt.Sprintf(`
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, pad text);
INSERT INTO customers SELECT g, 'c' || g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 20) i) FROM generate_series(1, %d) g;
CREATE INDEX ON customers (name);
CREATE PUBLICATION metrics_pub FOR TABLE customers;`, rows))
	route := commands.Route{Source: "src", Destination: "dst", Publication: "metrics_pub"}
	if _, err := e.exec.Execute(ctx, commands.SchemaSync{Phase: commands.PhasePre, Route: route}); err != nil {
		t.Fatalf("SCHEMA_SYNC PRE: %v", err)
	}
	// Each row inserted on a destination shard sleeps a little, also under
	// session_replication_role = replica (ENABLE ALWAYS).
	for _, d := range e.dst {
		d.exec(t, `CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM pg_sleep(0.0002); RETURN NEW; END$$;
CREATE TRIGGER slow BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION slow();
ALTER TABLE customers ENABLE ALWAYS TRIGGER slow;`)
	}

	// What reshard serve does with [general] openmetrics_port.
	g := e.cat.Config.General
	ms, err := metrics.Listen(g.Host, g.OpenMetricsPort, metrics.NewRegistry(e.exec.Registry, e.exec.Tasks), nil)
	if err != nil {
		t.Fatal(err)
	}
	mctx, stopMetrics := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ms.Serve(mctx) }()
	t.Cleanup(func() {
		stopMetrics()
		if err := <-served; err != nil {
			t.Errorf("metrics server: %v", err)
		}
	})
	return &metricsEnv{copyEnv: e, route: route, addr: ms.Addr(), url: "http://" + ms.Addr() + "/metrics"}
}

// TestOpenMetricsDuringReshard scrapes /metrics while RESHARD copies a
// table (slowed on the destination by a trigger, so the copy takes
// seconds) and then streams writes.
func TestOpenMetricsDuringReshard(t *testing.T) {
	const rows = 20000
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	me := startMetricsEnv(t, ctx, "met", rows)
	e, route, url, src := me.copyEnv, me.route, me.url, me.src[0]

	res, err := e.exec.Execute(ctx, commands.Reshard{Route: route})
	if err != nil {
		t.Fatalf("RESHARD: %v", err)
	}
	id := res.Rows[0][0].(string)
	tk, _ := e.exec.Tasks.Get(id)
	defer func() {
		sctx, c := context.WithTimeout(context.Background(), time.Minute)
		defer c()
		_ = e.exec.Tasks.Stop(sctx, id)
	}()
	state := func() string { return tk.Row().State }

	table := map[string]string{"schema": "public", "table": "customers"}
	// Scrape while the copy runs: the copied counters must move.
	var during []scrape
	sawThroughput := false
	for {
		before := state()
		s := scrapeText(t, url)
		after := state()
		if after == task.StateFailed || after == task.StateStopped || after == task.StateDone {
			t.Fatalf("RESHARD ended %s: %s", after, tk.Row().Error)
		}
		if before == task.StateCopying && after == task.StateCopying {
			during = append(during, s)
			if v, n := s.sum("reshard_copy_throughput_bytes_per_second", table); n == 1 && v > 0 {
				sawThroughput = true
			}
		}
		if after == task.StateStreaming {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("RESHARD did not reach streaming: %s", after)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var lastRows, lastBytes float64
	var seen []float64
	moved := 0
	for i, s := range during {
		r, _ := s.sum("reshard_copy_rows_total", table)
		b, _ := s.sum("reshard_copy_bytes_total", table)
		if r < lastRows || b < lastBytes {
			t.Fatalf("scrape %d: copied counters went down: rows %v → %v, bytes %v → %v", i, lastRows, r, lastBytes, b)
		}
		if i > 0 && r > lastRows && b > lastBytes && lastRows > 0 {
			moved++
		}
		if r != lastRows {
			seen = append(seen, r)
		}
		lastRows, lastBytes = r, b
	}
	t.Logf("%d scrapes during the copy saw rows copied %v: grew between %d pairs of them", len(during), seen, moved)
	if moved == 0 {
		t.Fatalf("the copied counters never grew between two scrapes during the copy (%d scrapes)", len(during))
	}
	if !sawThroughput {
		t.Fatal("no positive reshard_copy_throughput_bytes_per_second for customers during the copy")
	}

	s := scrapeText(t, url)
	for _, fam := range []string{"reshard_copy_rows_total", "reshard_copy_bytes_total"} {
		f := s[fam]
		if f == nil || f.GetType() != dto.MetricType_COUNTER || len(f.Metric) != 1 || labelNames(f.Metric[0]) != "schema,table" || !hasLabels(f.Metric[0], table) {
			t.Fatalf("%s: %v", fam, f)
		}
	}
	if r, _ := s.sum("reshard_copy_rows_total", table); r != rows {
		t.Fatalf("reshard_copy_rows_total %v after the copy, want %d", r, rows)
	}
	if b, _ := s.sum("reshard_copy_bytes_total", table); b < rows*640 {
		t.Fatalf("reshard_copy_bytes_total %v after the copy: less than the padding alone (%d)", b, rows*640)
	}
	for k := range e.dst {
		for _, phase := range []string{"PRE", "POST"} {
			if v, n := s.sum("reshard_schema_statements_total", map[string]string{"database": "dst", "shard": strconv.Itoa(k), "phase": phase}); n == 0 || v == 0 {
				t.Fatalf("no %s schema statements counted for shard %d", phase, k)
			}
		}
	}
	if v, _ := s.sum("reshard_schema_statements_total", map[string]string{"phase": "PRE", "outcome": "done"}); v == 0 {
		t.Fatal("SCHEMA_SYNC PRE's statements are not counted as done")
	}

	// Writes while streaming: inserts, updates and deletes, each row on
	// the shard its id hashes to.
	// shardOf tells which destination shard holds a row.
	shardOf := func(id int) int {
		for k, d := range e.dst {
			if d.one(t, fmt.Sprintf(`SELECT count(*) FROM customers WHERE id = %d`, id)) == "1" {
				return k
			}
		}
		return -1
	}
	deleted := make([]int64, len(e.dst))
	for k, d := range e.dst {
		deleted[k], _ = strconv.ParseInt(d.one(t, `SELECT count(*) FROM customers WHERE id BETWEEN 101 AND 150`), 10, 64)
	}
	// A row whose key changes: it moves to the shard of its new key (a
	// DELETE there and an INSERT here when the shards differ).
	movedFrom := shardOf(200)
	newID := 30001
	for sharding.ShardOfHash(sharding.HashInt(int64(newID)), len(e.dst)) == movedFrom {
		newID++
	}
	src.exec(t, `INSERT INTO customers SELECT g, 'new' || g, 'p' FROM generate_series(20001, 20300) g`)
	for i := 1; i <= 100; i += 10 {
		src.exec(t, fmt.Sprintf(`UPDATE customers SET name = 'updated' WHERE id BETWEEN %d AND %d`, i, i+9))
	}
	src.exec(t, `DELETE FROM customers WHERE id BETWEEN 101 AND 150`)
	src.exec(t, fmt.Sprintf(`UPDATE customers SET id = %d WHERE id = 200`, newID))
	for {
		var total, updated int64
		for _, d := range e.dst {
			n, _ := strconv.ParseInt(d.one(t, `SELECT count(*) FROM customers`), 10, 64)
			u, _ := strconv.ParseInt(d.one(t, `SELECT count(*) FROM customers WHERE name = 'updated'`), 10, 64)
			total, updated = total+n, updated+u
		}
		if total == rows+300-50 && updated == 100 && shardOf(newID) >= 0 {
			break
		}
		if ctx.Err() != nil || state() != task.StateStreaming {
			t.Fatalf("stream did not apply the writes: %d rows, %d updated; task %s %s", total, updated, state(), tk.Row().Error)
		}
		time.Sleep(100 * time.Millisecond)
	}
	movedTo := shardOf(newID)
	changes := 300 + 100 + 50 + 2
	if movedTo == movedFrom {
		t.Fatalf("row %d landed on shard %d, like row 200: it did not move", newID, movedTo)
	}
	slots := e.exec.Registry.Slots()
	if len(slots) != 1 {
		t.Fatalf("%d streams running, want 1", len(slots))
	}
	slot := map[string]string{"task": id, "slot": slots[0].Name}
	// The counter is recorded right after the destination commits: wait
	// for it to reach the number of changes, then check it per shard.
	for {
		s = scrapeText(t, url)
		if v, _ := s.sum("reshard_replication_changes_applied_total", slot); v >= float64(changes) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for k, d := range e.dst {
		n := func(where string) int64 {
			v, _ := strconv.ParseInt(d.one(t, `SELECT count(*) FROM customers WHERE `+where), 10, 64)
			return v
		}
		want := n("id BETWEEN 20001 AND 20300") + n("id <= 100") + deleted[k]
		if k == movedFrom || k == movedTo {
			want++
		}
		shard := map[string]string{"task": id, "slot": slots[0].Name, "shard": strconv.Itoa(k)}
		if v, series := s.sum("reshard_replication_changes_applied_total", shard); series != 1 || int64(v) != want {
			t.Errorf("shard %d: reshard_replication_changes_applied_total %v (%d series), want %d (row 200 moved from shard %d to %d)", k, v, series, want, movedFrom, movedTo)
		}
		t.Logf("shard %d: %d changes applied (row 200 moved from shard %d to %d)", k, want, movedFrom, movedTo)
	}
	if f := s["reshard_replication_changes_applied_total"]; f.GetType() != dto.MetricType_COUNTER || labelNames(f.Metric[0]) != "shard,slot,task" {
		t.Fatalf("reshard_replication_changes_applied_total: %v", f)
	}
	if lag, n := s.sum("reshard_replication_lag_bytes", slot); n != 1 || lag < 0 || lag > 64<<20 {
		t.Fatalf("reshard_replication_lag_bytes %v (%d series): want one series between 0 and 64 MiB", lag, n)
	}
	if v, n := s.sum("reshard_replication_confirmed_lsn", slot); n != 1 || v <= 0 {
		t.Fatalf("reshard_replication_confirmed_lsn %v (%d series)", v, n)
	}
	if at, n := s.sum("reshard_replication_last_transaction_timestamp_seconds", slot); n != 1 || time.Since(time.Unix(int64(at), 0)) > time.Hour {
		t.Fatalf("reshard_replication_last_transaction_timestamp_seconds %v (%d series)", at, n)
	}
	if v, n := s.sum("reshard_task_state", map[string]string{"task": id, "kind": "reshard", "source": "src", "destination": "dst", "state": "streaming"}); n != 1 || v != 1 {
		t.Fatalf("reshard_task_state for task %s: %v (%d series)", id, v, n)
	}
	if v, _ := s.sum("reshard_tasks", map[string]string{"kind": "reshard", "state": "streaming"}); v != 1 {
		t.Fatalf("reshard_tasks{kind=reshard,state=streaming} = %v", v)
	}
	for _, fam := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if s[fam] == nil {
			t.Fatalf("%s missing", fam)
		}
	}

	// The same families in the OpenMetrics format, as Prometheus asks.
	ct, body := get(t, url, "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5")
	if !strings.HasPrefix(ct, "application/openmetrics-text") || !strings.HasSuffix(body, "# EOF\n") {
		t.Fatalf("not OpenMetrics: %q\n%s", ct, body)
	}
	for _, line := range []string{"# TYPE reshard_copy_rows counter", "# TYPE reshard_replication_changes_applied counter", "# TYPE reshard_replication_lag_bytes gauge",
		`reshard_copy_rows_total{schema="public",table="customers"} 20000.0`} {
		if !strings.Contains(body, line+"\n") {
			t.Fatalf("OpenMetrics exposition lacks %q:\n%s", line, body)
		}
	}
}
