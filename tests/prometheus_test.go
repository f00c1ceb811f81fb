package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/sync/task"
	"github.com/reshard/reshard/tests/testkit"
)

// promServer is a Prometheus server (Debian's package) on a free loopback
// port, with its own configuration and data under the test's temp dir.
type promServer struct {
	api  string
	proc *testkit.Process
}

// startPrometheus runs Prometheus scraping target (host:port) every second
// and evaluating examples/prometheus/reshard-rules.yml every second, each
// alert's `for` shortened to forDuration (the thresholds and expressions
// are the file's own). It returns once Prometheus has scraped the target.
func startPrometheus(t *testing.T, ctx context.Context, target, forDuration string) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: scripts/deps.sh installs Debian's prometheus package")
	}
	dir := t.TempDir()
	rules, err := os.ReadFile("../examples/prometheus/reshard-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(rules, &doc); err != nil {
		t.Fatal(err)
	}
	shortenFor(&doc, forDuration)
	rules, err = yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	rulesPath := filepath.Join(dir, "reshard-rules.yml")
	cfgPath := filepath.Join(dir, "prometheus.yml")
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: reshard
    static_configs:
      - targets: [%q]
`, rulesPath, target)
	for path, body := range map[string][]byte{rulesPath: rules, cfgPath: []byte(cfg)} {
		if err := os.WriteFile(path, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := &promServer{api: "http://" + addr + "/api/v1/"}
	p.proc = testkit.Start(t, bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	t.Cleanup(func() {
		if err := p.proc.Stop(30 * time.Second); err != nil {
			t.Logf("prometheus: %v\n%s", err, p.proc.Output())
		}
	})
	ready := func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	for {
		if ready() {
			if v, ok := p.value(t, `up{job="reshard"}`); ok && v == 1 {
				return p
			}
		}
		if done, err := p.proc.Exited(); done {
			t.Fatalf("prometheus exited: %v\n%s", err, p.proc.Output())
		}
		if ctx.Err() != nil {
			t.Fatalf("prometheus never scraped %s:\n%s", target, p.proc.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// shortenFor sets every alert's `for` in a rule file to d.
func shortenFor(n *yaml.Node, d string) {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "for" {
				n.Content[i+1].Value = d
			}
		}
	}
	for _, c := range n.Content {
		shortenFor(c, d)
	}
}

// sample is one series of an instant vector.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s sample) float(t *testing.T) float64 {
	t.Helper()
	str, _ := s.Value[1].(string)
	v, err := strconv.ParseFloat(str, 64)
	if err != nil {
		t.Fatalf("sample %v: %v", s, err)
	}
	return v
}

// get calls the HTTP API and decodes its data.
func (p *promServer) get(t *testing.T, path string, params url.Values, data any) {
	t.Helper()
	resp, err := http.Get(p.api + path + "?" + params.Encode())
	if err != nil {
		t.Fatalf("prometheus API %s: %v", path, err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("prometheus API %s: %v", path, err)
	}
	if body.Status != "success" {
		t.Fatalf("prometheus API %s %v: %s", path, params, body.Error)
	}
	if err := json.Unmarshal(body.Data, data); err != nil {
		t.Fatalf("prometheus API %s: %v", path, err)
	}
}

// query evaluates an instant query now.
func (p *promServer) query(t *testing.T, q string) []sample {
	t.Helper()
	var data struct {
		ResultType string   `json:"resultType"`
		Result     []sample `json:"result"`
	}
	p.get(t, "query", url.Values{"query": {q}}, &data)
	if data.ResultType != "vector" {
		t.Fatalf("%s: a %s, not a vector", q, data.ResultType)
	}
	return data.Result
}

// samples are the raw samples a range selector q holds (one series).
func (p *promServer) samples(t *testing.T, q string) []float64 {
	t.Helper()
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Values [][2]any `json:"values"`
		} `json:"result"`
	}
	p.get(t, "query", url.Values{"query": {q}}, &data)
	if data.ResultType != "matrix" || len(data.Result) != 1 {
		t.Fatalf("%s: %s of %d series, want a matrix of one", q, data.ResultType, len(data.Result))
	}
	var out []float64
	for _, v := range data.Result[0].Values {
		out = append(out, sample{Value: v}.float(t))
	}
	return out
}

// value is the value of a query that gives one series.
func (p *promServer) value(t *testing.T, q string) (float64, bool) {
	t.Helper()
	r := p.query(t, q)
	if len(r) != 1 {
		return 0, false
	}
	return r[0].float(t), true
}

// alert is one entry of /api/v1/alerts.
type alert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
}

func (p *promServer) alerts(t *testing.T) []alert {
	t.Helper()
	var data struct {
		Alerts []alert `json:"alerts"`
	}
	p.get(t, "alerts", nil, &data)
	return data.Alerts
}

// TestPrometheusScrapesReshard runs a real Prometheus server with the
// example rules against reshard's /metrics during a RESHARD: the copy's
// series grow in Prometheus while the copy runs, the stream's series and
// recording rules appear once it streams, and stopping the stream fires
// ReshardTaskStopped for that task (and nothing fires before).
func TestPrometheusScrapesReshard(t *testing.T) {
	const rows = 20000
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	me := startMetricsEnv(t, ctx, "prom", rows)
	prom := startPrometheus(t, ctx, me.addr, "2s")
	began := time.Now()

	res, err := me.exec.Execute(ctx, commands.Reshard{Route: me.route})
	if err != nil {
		t.Fatalf("RESHARD: %v", err)
	}
	id := res.Rows[0][0].(string)
	tk, _ := me.exec.Tasks.Get(id)
	defer func() {
		sctx, c := context.WithTimeout(context.Background(), time.Minute)
		defer c()
		_ = me.exec.Tasks.Stop(sctx, id)
	}()
	for tk.Row().State != task.StateStreaming {
		if s := tk.Row().State; s == task.StateFailed || s == task.StateStopped || s == task.StateDone || ctx.Err() != nil {
			t.Fatalf("RESHARD ended %s before streaming: %s", s, tk.Row().Error)
		}
		time.Sleep(100 * time.Millisecond)
	}
	copySeconds := time.Since(began).Seconds()

	// The copy as Prometheus recorded it: rows copied grew across several
	// scrapes to the table's rows, and the throughput gauge was seen.
	table := `{job="reshard",schema="public",table="customers"}`
	window := fmt.Sprintf("[%ds]", int(copySeconds)+5)
	for {
		if v, ok := prom.value(t, "reshard_copy_rows_total"+table); ok && v == rows {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("Prometheus never saw all %d rows copied: %v", rows, prom.query(t, "reshard_copy_rows_total"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The samples Prometheus stored: some scraped mid-copy, never falling.
	stored := prom.samples(t, "reshard_copy_rows_total"+table+window)
	var during []float64
	last := 0.0
	for _, v := range stored {
		if v < last {
			t.Fatalf("reshard_copy_rows_total went down in Prometheus: %v", stored)
		}
		if v > 0 && v < rows && v != last {
			during = append(during, v)
		}
		last = v
	}
	peak, _ := prom.value(t, "max_over_time(reshard_copy_throughput_bytes_per_second"+table+window+")")
	t.Logf("copy took %.1fs: Prometheus stored %d samples, mid-copy values %v, peak throughput %.0f B/s",
		copySeconds, len(stored), during, peak)
	if len(during) < 2 {
		t.Fatalf("Prometheus did not scrape the copy in progress: rows copied %v", stored)
	}
	if peak <= 0 {
		t.Fatal("Prometheus never saw a positive reshard_copy_throughput_bytes_per_second for customers")
	}
	if v, ok := prom.value(t, "table:reshard_copy_progress:ratio"+table); !ok || v <= 0 || v > 1 {
		t.Fatalf("recording rule table:reshard_copy_progress:ratio = %v (%v)", v, ok)
	}

	// The stream: changes reach Prometheus per shard; lag and retained WAL
	// per slot; the per-shard rate recorded by the rules.
	src := me.src[0]
	src.exec(t, `INSERT INTO customers SELECT g, 'new' || g, 'p' FROM generate_series(20001, 20500) g`)
	src.exec(t, `UPDATE customers SET name = 'updated' WHERE id <= 100`)
	src.exec(t, `DELETE FROM customers WHERE id BETWEEN 101 AND 150`)
	const applied = 500 + 100 + 50
	slot := fmt.Sprintf(`{job="reshard",task=%q}`, id)
	for {
		v, ok := prom.value(t, "sum(reshard_replication_changes_applied_total"+slot+")")
		if ok && v == applied {
			break
		}
		if ctx.Err() != nil || tk.Row().State != task.StateStreaming {
			t.Fatalf("Prometheus saw %v changes applied (%v), want %d; task %s %s", v, ok, applied, tk.Row().State, tk.Row().Error)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := prom.query(t, "reshard_replication_changes_applied_total"+slot); len(r) != len(me.dst) {
		t.Fatalf("changes applied: %d series, want one per shard (%d): %v", len(r), len(me.dst), r)
	}
	for _, q := range []string{"reshard_replication_lag_bytes" + slot, "reshard_replication_confirmed_lsn" + slot} {
		if _, ok := prom.value(t, q); !ok {
			t.Fatalf("%s: %v, want one series", q, prom.query(t, q))
		}
	}
	if v, ok := prom.value(t, "reshard_replication_slot_retained_wal_bytes"+slot); !ok || v <= 0 {
		t.Fatalf("reshard_replication_slot_retained_wal_bytes = %v (%v): the slot retains some WAL", v, ok)
	}
	// A counter's first sample adds nothing to a rate: more changes, now
	// that Prometheus holds the series, show in the recorded rate.
	src.exec(t, `UPDATE customers SET name = 'again' WHERE id <= 200`)
	for deadline := time.Now().Add(time.Minute); ; {
		if r := prom.query(t, `shard:reshard_replication_changes_applied:rate1m{task="`+id+`"} > 0`); len(r) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recording rule shard:reshard_replication_changes_applied:rate1m never had a positive rate: %v",
				prom.query(t, `shard:reshard_replication_changes_applied:rate1m`))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, a := range prom.alerts(t) {
		t.Errorf("alert %s is %s while the task streams: %v", a.Labels["alertname"], a.State, a.Labels)
	}

	// Stop the stream: ReshardTaskStopped fires for the task.
	if _, err := me.exec.Execute(ctx, commands.StopTask{Task: id}); err != nil {
		t.Fatalf("STOP_TASK: %v", err)
	}
	stopped := time.Now()
	var pending bool
	for {
		var firing *alert
		for _, a := range prom.alerts(t) {
			if a.Labels["alertname"] != "ReshardTaskStopped" || a.Labels["task"] != id {
				t.Fatalf("unexpected alert %s (%s): %v", a.Labels["alertname"], a.State, a.Labels)
			}
			pending = pending || a.State == "pending"
			if a.State == "firing" {
				firing = &a
			}
		}
		if firing != nil {
			want := map[string]string{"severity": "warning", "kind": "reshard", "source": "src", "destination": "dst", "state": "stopped", "job": "reshard"}
			for k, v := range want {
				if firing.Labels[k] != v {
					t.Fatalf("ReshardTaskStopped label %s = %q, want %q: %v", k, firing.Labels[k], v, firing.Labels)
				}
			}
			if s := firing.Annotations["summary"]; s != "reshard task "+id+" (reshard src to dst) is stopped" {
				t.Fatalf("summary %q", s)
			}
			t.Logf("ReshardTaskStopped firing %s after STOP_TASK (pending seen first: %v)", time.Since(stopped).Round(100*time.Millisecond), pending)
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("ReshardTaskStopped never fired: %v", prom.alerts(t))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The stream's series are gone from the scrape with it.
	time.Sleep(1500 * time.Millisecond)
	if r := prom.query(t, "reshard_replication_lag_bytes"+slot); len(r) != 0 {
		t.Fatalf("the stopped stream still has lag series: %v", r)
	}
}
