package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/sync/task"
)

// populated returns a registry and a task manager with something in every
// family.
func populated(t *testing.T) (*progress.Registry, *task.Manager) {
	t.Helper()
	reg := progress.NewRegistry()
	tasks := task.NewManager()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	tk, _ := tasks.Start(task.Spec{Kind: "reshard", Source: "src", Destination: "dst", Publication: "pub", State: task.StateCopying}, func(ctx context.Context, t *task.Task) (task.Outcome, error) {
		<-release
		return task.Outcome{}, nil
	})
	failed, _ := tasks.Start(task.Spec{Kind: "copy_data", Source: "src", Destination: "dst", Publication: "pub", State: task.StateCopying}, func(ctx context.Context, t *task.Task) (task.Outcome, error) {
		return task.Outcome{}, errors.New("boom")
	})
	<-failed.Done()
	u := &progress.TableCopy{Task: tk.ID, Schema: "public", Table: "orders", EstimateBytes: 1000}
	reg.AddCopies(u)
	reg.StartCopy(u)
	u.Add(7, 700)
	time.Sleep(time.Millisecond) // a running unit has a non-zero elapsed time
	s := &progress.Slot{Task: tk.ID, Name: "reshard_1"}
	reg.AddSlot(s)
	s.Lag(4096)
	s.Retained(1 << 20)
	s.Transaction(time.Unix(1700000000, 0))
	s.Applied(2)
	s.AppliedChanges([]int{3, 1})
	s.Interrupted(&pgconn.PgError{Code: "57P01"})
	reg.SetInactiveSlots([]progress.InactiveSlot{{Task: failed.ID, Host: "10.0.0.1", Port: 5432, Database: "app", Name: "reshard_2", RetainedBytes: 3 << 20}})
	st := &progress.SchemaStatement{Database: "dst", Shard: 1, Phase: "PRE"}
	reg.AddSchema(st)
	reg.Finish(st, progress.StateDone, nil)
	reg.SetVerify(progress.VerifyRow{Task: "3", Schema: "public", Table: "orders", Status: "mismatch", SourceRows: 10, DestinationRows: 9, Missing: 1, Misplaced: 2})
	reg.SetVerify(progress.VerifyRow{Task: "3", Schema: "public", Table: "items", Status: "running"})
	reg.SetVerify(progress.VerifyRow{Task: "3", Schema: "public", Table: "notes", Status: "error: connection refused"})
	return reg, tasks
}

func TestCollectorFamiliesLint(t *testing.T) {
	reg, tasks := populated(t)
	c := NewCollector(reg, tasks)
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	want := `
# HELP reshard_copy_rows_total Rows copied, per source table (every task, retried attempts included).
# TYPE reshard_copy_rows_total counter
reshard_copy_rows_total{schema="public",table="orders"} 7
# HELP reshard_replication_changes_applied_total Row changes (inserts, updates, deletes, truncates) the stream applied, per destination shard.
# TYPE reshard_replication_changes_applied_total counter
reshard_replication_changes_applied_total{shard="0",slot="reshard_1",task="1"} 3
reshard_replication_changes_applied_total{shard="1",slot="reshard_1",task="1"} 1
# HELP reshard_errors_total Errors, by component (copy: a copy unit failed; schema: a statement failed; stream: the stream was interrupted and reconnects; task: a task failed) and kind (SQLSTATE, timeout, connection, other; the task kind for component task).
# TYPE reshard_errors_total counter
reshard_errors_total{component="stream",kind="57P01"} 1
reshard_errors_total{component="task",kind="copy_data"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "reshard_copy_rows_total", "reshard_replication_changes_applied_total", "reshard_errors_total"); err != nil {
		t.Fatal(err)
	}
	wantVerify := `
# HELP reshard_verify_differences Rows VERIFY found differing, by kind (missing on the destination, extra there, different, misplaced on the wrong shard).
# TYPE reshard_verify_differences gauge
reshard_verify_differences{kind="different",schema="public",table="orders",task="3"} 0
reshard_verify_differences{kind="extra",schema="public",table="orders",task="3"} 0
reshard_verify_differences{kind="misplaced",schema="public",table="orders",task="3"} 2
reshard_verify_differences{kind="missing",schema="public",table="orders",task="3"} 1
# HELP reshard_verify_rows Rows VERIFY counted in the table, on the source and on the destination shards together (side).
# TYPE reshard_verify_rows gauge
reshard_verify_rows{schema="public",side="destination",table="orders",task="3"} 9
reshard_verify_rows{schema="public",side="source",table="orders",task="3"} 10
# HELP reshard_verify_table_status 1 for each table a VERIFY task compared or is comparing, with its status (running, match, mismatch, error).
# TYPE reshard_verify_table_status gauge
reshard_verify_table_status{schema="public",status="error",table="notes",task="3"} 1
reshard_verify_table_status{schema="public",status="mismatch",table="orders",task="3"} 1
reshard_verify_table_status{schema="public",status="running",table="items",task="3"} 1
# HELP reshard_replication_slot_retained_wal_bytes Bytes of WAL the source retains for the slot (pg_current_wal_lsn() - restart_lsn).
# TYPE reshard_replication_slot_retained_wal_bytes gauge
reshard_replication_slot_retained_wal_bytes{slot="reshard_1",task="1"} 1.048576e+06
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(wantVerify), "reshard_verify_differences", "reshard_verify_rows", "reshard_verify_table_status", "reshard_replication_slot_retained_wal_bytes"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c, "reshard_task_state"); n != 2 {
		t.Fatalf("%d task_state series, want 2", n)
	}
	if n := testutil.CollectAndCount(c, "reshard_copy_throughput_bytes_per_second"); n != 1 {
		t.Fatalf("%d throughput series for one running unit, want 1", n)
	}
}

func TestHandlerNegotiatesOpenMetrics(t *testing.T) {
	reg, tasks := populated(t)
	srv := httptest.NewServer(Handler(NewRegistry(reg, tasks)))
	defer srv.Close()
	get := func(accept string) (string, string) {
		req, _ := http.NewRequest("GET", srv.URL, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.Header.Get("Content-Type"), string(body)
	}
	ct, body := get("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
	if !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Fatalf("content type %q", ct)
	}
	if !strings.HasSuffix(body, "# EOF\n") || !strings.Contains(body, "# TYPE reshard_copy_rows counter\n") ||
		!strings.Contains(body, "\ngo_goroutines ") {
		t.Fatalf("not an OpenMetrics exposition with reshard and Go families:\n%s", body)
	}
	ct, body = get("")
	if !strings.HasPrefix(ct, "text/plain") || strings.Contains(body, "# EOF") {
		t.Fatalf("without OpenMetrics in Accept: %q\n%s", ct, body)
	}
}

// TestFamilies: the collector describes and, with something in every
// family, collects exactly the listed families, each with its type and
// labels; and docs/metrics.md documents each one.
func TestFamilies(t *testing.T) {
	reg, tasks := populated(t)
	r := prometheus.NewPedanticRegistry()
	r.MustRegister(NewCollector(reg, tasks))
	got, err := r.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]*dto.MetricFamily{}
	for _, f := range got {
		seen[f.GetName()] = f
	}
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range Families() {
		g := seen[f.Name]
		if g == nil {
			t.Errorf("%s: listed but not collected", f.Name)
			continue
		}
		delete(seen, f.Name)
		if want := map[string]dto.MetricType{"counter": dto.MetricType_COUNTER, "gauge": dto.MetricType_GAUGE}[f.Type]; g.GetType() != want {
			t.Errorf("%s: collected as %s, listed as %s", f.Name, g.GetType(), f.Type)
		}
		var names []string
		for _, l := range g.Metric[0].Label {
			names = append(names, l.GetName())
		}
		want := append([]string(nil), f.Labels...)
		sort.Strings(want)
		if strings.Join(names, ",") != strings.Join(want, ",") {
			t.Errorf("%s: labels %v, listed %v", f.Name, names, f.Labels)
		}
		if !strings.Contains(string(doc), "| `"+f.Name+"` | "+f.Type+" |") {
			t.Errorf("docs/metrics.md has no table row for %s (%s)", f.Name, f.Type)
		}
	}
	for name := range seen {
		t.Errorf("%s: collected but not listed in Families", name)
	}
}
