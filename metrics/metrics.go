// Package metrics exposes reshard's progress to Prometheus: a collector
// that reads the progress registry and the task manager when scraped, and
// an HTTP server answering /metrics in the OpenMetrics format (or the
// Prometheus text format, as the scraper asks).
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/sync/task"
)

// Family describes one metric family reshard exports: the collector's
// descriptions are built from this list, and docs, examples and tests read it.
type Family struct {
	// Name is the family name as scraped (counters end in _total).
	Name string
	// Type is "counter" or "gauge".
	Type string
	// Help is the HELP text.
	Help string
	// Labels are the variable label names, in order.
	Labels []string
}

var (
	tableLabels = []string{"schema", "table"}
	slotLabels  = []string{"task", "slot"}
	// verifyLabels name one table of one VERIFY task.
	verifyLabels = []string{"task", "schema", "table"}
)

// families lists every reshard_ family, in the order Describe sends them.
var families = []Family{
	{"reshard_copy_rows_total", "counter", "Rows copied, per source table (every task, retried attempts included).", tableLabels},
	{"reshard_copy_bytes_total", "counter", "Bytes of COPY data read from the source, per source table (every task, retried attempts included).", tableLabels},
	{"reshard_copy_throughput_bytes_per_second", "gauge", "Copy speed of the table's running units: bytes each copied divided by how long it has run, summed.", tableLabels},
	{"reshard_copy_estimated_bytes", "gauge", "Expected size of the table's registered copy units (pg_relation_size on the source).", tableLabels},
	{"reshard_copy_units", "gauge", "Copy units of running copies, by state (pending, copying, done, failed).", []string{"state"}},
	{"reshard_replication_lag_bytes", "gauge", "Bytes of WAL the source has written past the slot's confirmed position.", slotLabels},
	{"reshard_replication_slot_retained_wal_bytes", "gauge", "Bytes of WAL the source retains for the slot (pg_current_wal_lsn() - restart_lsn).", slotLabels},
	{"reshard_replication_confirmed_lsn", "gauge", "Position (LSN, as a number) confirmed to the source: everything before it is applied on the destination.", slotLabels},
	{"reshard_replication_last_transaction_timestamp_seconds", "gauge", "Commit time of the last source transaction the stream received (Unix seconds).", slotLabels},
	{"reshard_replication_statements_applied_total", "counter", "Statements run on the destination by the stream, after merging row changes into multi-row statements.", slotLabels},
	{"reshard_inactive_slots", "gauge", "Replication slots of reshard's that no stream reads: each retains WAL on its server until it is used again or dropped.", nil},
	{"reshard_inactive_slot_retained_wal_bytes", "gauge", "Bytes of WAL an inactive slot of reshard's retains on its server (pg_current_wal_lsn() - restart_lsn).", slotLabels},
	{"reshard_replication_changes_applied_total", "counter", "Row changes (inserts, updates, deletes, truncates) the stream applied, per destination shard.", []string{"task", "slot", "shard"}},
	{"reshard_tasks", "gauge", "Tasks of this process, by kind and state.", []string{"kind", "state"}},
	{"reshard_task_state", "gauge", "1 for each task in its current state.", []string{"task", "kind", "source", "destination", "state"}},
	{"reshard_schema_statements_total", "counter", "Schema statements that ended, by destination cluster, shard, phase and outcome (done, skipped: already present, failed).", []string{"database", "shard", "phase", "outcome"}},
	{"reshard_verify_table_status", "gauge", "1 for each table a VERIFY task compared or is comparing, with its status (running, match, mismatch, error).", append(verifyLabels[:3:3], "status")},
	{"reshard_verify_rows", "gauge", "Rows VERIFY counted in the table, on the source and on the destination shards together (side).", append(verifyLabels[:3:3], "side")},
	{"reshard_verify_differences", "gauge", "Rows VERIFY found differing, by kind (missing on the destination, extra there, different, misplaced on the wrong shard).", append(verifyLabels[:3:3], "kind")},
	{"reshard_errors_total", "counter", "Errors, by component (copy: a copy unit failed; schema: a statement failed; stream: the stream was interrupted and reconnects; task: a task failed) and kind (SQLSTATE, timeout, connection, other; the task kind for component task).", []string{"component", "kind"}},
}

// Families returns every reshard_ family the collector exports.
func Families() []Family {
	out := make([]Family, len(families))
	for i, f := range families {
		out[i] = f
		out[i].Labels = append([]string(nil), f.Labels...)
	}
	return out
}

// Collector turns the progress registry and the task manager into metric
// families at scrape time. It holds no counters of its own.
type Collector struct {
	reg   *progress.Registry
	tasks *task.Manager
	descs map[string]desc
}

// desc is a family's description and value type.
type desc struct {
	d *prometheus.Desc
	t prometheus.ValueType
}

// NewCollector returns a collector reading reg and tasks.
func NewCollector(reg *progress.Registry, tasks *task.Manager) *Collector {
	c := &Collector{reg: reg, tasks: tasks, descs: make(map[string]desc, len(families))}
	for _, f := range families {
		t := prometheus.GaugeValue
		if f.Type == "counter" {
			t = prometheus.CounterValue
		}
		c.descs[f.Name] = desc{prometheus.NewDesc(f.Name, f.Help, f.Labels, nil), t}
	}
	return c
}

// Describe sends every family's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range families {
		ch <- c.descs[f.Name].d
	}
}

// metric builds one sample of the named family.
func (c *Collector) metric(name string, v float64, labels ...string) prometheus.Metric {
	d := c.descs[name]
	return prometheus.MustNewConstMetric(d.d, d.t, v, labels...)
}

// Collect reads the registry and the task manager and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.collectCopies(ch)
	c.collectSlots(ch)
	c.collectTasks(ch)
	c.collectVerify(ch)
	for _, s := range c.reg.StatementCounts() {
		ch <- c.metric("reshard_schema_statements_total", float64(s.Count), s.Database, strconv.Itoa(s.Shard), s.Phase, s.State)
	}
	for _, e := range c.reg.ErrorCounts() {
		ch <- c.metric("reshard_errors_total", float64(e.Count), e.Component, e.Kind)
	}
}

type tableName struct{ schema, table string }

func (c *Collector) collectCopies(ch chan<- prometheus.Metric) {
	for _, t := range c.reg.CopyTotals() {
		ch <- c.metric("reshard_copy_rows_total", float64(t.Rows), t.Schema, t.Table)
		ch <- c.metric("reshard_copy_bytes_total", float64(t.Bytes), t.Schema, t.Table)
	}
	speed := map[tableName]float64{}
	estimate := map[tableName]int64{}
	units := map[string]int{progress.CopyPending: 0, progress.CopyRunning: 0, progress.CopyDone: 0, progress.CopyFailed: 0}
	for _, u := range c.reg.Copies() {
		k := tableName{u.Schema, u.Table}
		units[u.State]++
		estimate[k] += u.EstimateBytes
		if u.State == progress.CopyRunning && u.Elapsed > 0 {
			speed[k] += float64(u.Bytes) / u.Elapsed.Seconds()
		}
	}
	for k, v := range speed {
		ch <- c.metric("reshard_copy_throughput_bytes_per_second", v, k.schema, k.table)
	}
	for k, v := range estimate {
		ch <- c.metric("reshard_copy_estimated_bytes", float64(v), k.schema, k.table)
	}
	for state, n := range units {
		ch <- c.metric("reshard_copy_units", float64(n), state)
	}
}

func (c *Collector) collectSlots(ch chan<- prometheus.Metric) {
	inactive := c.reg.InactiveSlots()
	ch <- c.metric("reshard_inactive_slots", float64(len(inactive)))
	for _, s := range inactive {
		ch <- c.metric("reshard_inactive_slot_retained_wal_bytes", float64(s.RetainedBytes), s.Task, s.Name)
	}
	for _, s := range c.reg.Slots() {
		ch <- c.metric("reshard_replication_lag_bytes", float64(s.LagBytes), s.Task, s.Name)
		ch <- c.metric("reshard_replication_slot_retained_wal_bytes", float64(s.RetainedBytes), s.Task, s.Name)
		ch <- c.metric("reshard_replication_confirmed_lsn", float64(s.Confirmed), s.Task, s.Name)
		if !s.LastTransaction.IsZero() {
			ch <- c.metric("reshard_replication_last_transaction_timestamp_seconds", float64(s.LastTransaction.UnixNano())/float64(time.Second), s.Task, s.Name)
		}
		ch <- c.metric("reshard_replication_statements_applied_total", float64(s.Applied), s.Task, s.Name)
		for k, n := range s.ShardChanges {
			ch <- c.metric("reshard_replication_changes_applied_total", float64(n), s.Task, s.Name, strconv.Itoa(k))
		}
	}
}

func (c *Collector) collectTasks(ch chan<- prometheus.Metric) {
	type kindState struct{ kind, state string }
	count := map[kindState]int{}
	failed := map[string]int{}
	for _, t := range c.tasks.List() {
		count[kindState{t.Kind, t.State}]++
		if t.State == task.StateFailed {
			failed[t.Kind]++
		}
		ch <- c.metric("reshard_task_state", 1, t.ID, t.Kind, t.Source, t.Destination, t.State)
	}
	for k, n := range count {
		ch <- c.metric("reshard_tasks", float64(n), k.kind, k.state)
	}
	// Tasks never leave failed and are never forgotten: the count only grows.
	for kind, n := range failed {
		ch <- c.metric("reshard_errors_total", float64(n), "task", kind)
	}
}

func (c *Collector) collectVerify(ch chan<- prometheus.Metric) {
	for _, v := range c.reg.Verify() {
		status := v.Status
		if strings.HasPrefix(status, "error") {
			// "error: <message>": the message is in the log and SHOW VERIFY.
			status = "error"
		}
		ch <- c.metric("reshard_verify_table_status", 1, v.Task, v.Schema, v.Table, status)
		if status == "running" || status == "error" {
			continue
		}
		ch <- c.metric("reshard_verify_rows", float64(v.SourceRows), v.Task, v.Schema, v.Table, "source")
		ch <- c.metric("reshard_verify_rows", float64(v.DestinationRows), v.Task, v.Schema, v.Table, "destination")
		for _, d := range []struct {
			kind string
			n    int64
		}{{"missing", v.Missing}, {"extra", v.Extra}, {"different", v.Different}, {"misplaced", v.Misplaced}} {
			ch <- c.metric("reshard_verify_differences", float64(d.n), v.Task, v.Schema, v.Table, d.kind)
		}
	}
}

// NewRegistry returns a Prometheus registry holding the collector and the
// Go runtime and process collectors. It is private to the caller: the
// client library's global default registry is not touched.
func NewRegistry(reg *progress.Registry, tasks *task.Manager) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(NewCollector(reg, tasks), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Handler answers scrapes of r, in the OpenMetrics format when the scraper
// accepts it.
func Handler(r *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(r, promhttp.HandlerOpts{EnableOpenMetrics: true, Registry: r})
}
