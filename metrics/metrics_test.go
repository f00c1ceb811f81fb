package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus/testutil"

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
	tk := tasks.Start("reshard", "src", "dst", "pub", task.StateCopying, func(ctx context.Context, t *task.Task) (task.Outcome, error) {
		<-release
		return task.Outcome{}, nil
	})
	failed := tasks.Start("copy_data", "src", "dst", "pub", task.StateCopying, func(ctx context.Context, t *task.Task) (task.Outcome, error) {
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
	s.Transaction(time.Unix(1700000000, 0))
	s.Applied(2)
	s.AppliedChanges([]int{3, 1})
	s.Interrupted(&pgconn.PgError{Code: "57P01"})
	st := &progress.SchemaStatement{Database: "dst", Shard: 1, Phase: "PRE"}
	reg.AddSchema(st)
	reg.Finish(st, progress.StateDone, nil)
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
