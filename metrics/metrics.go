// Package metrics exposes reshard's progress to Prometheus: a collector
// that reads the progress registry and the task manager when scraped, and
// an HTTP server answering /metrics in the OpenMetrics format (or the
// Prometheus text format, as the scraper asks).
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/sync/task"
)

// Collector turns the progress registry and the task manager into metric
// families at scrape time. It holds no counters of its own.
type Collector struct {
	reg   *progress.Registry
	tasks *task.Manager

	copyRows, copyBytes, copyThroughput, copyEstimate, copyUnits *prometheus.Desc
	lag, confirmed, lastTx, statements, changes                  *prometheus.Desc
	tasksByState, taskState, schemaStatements, errs              *prometheus.Desc
}

// NewCollector returns a collector reading reg and tasks.
func NewCollector(reg *progress.Registry, tasks *task.Manager) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("reshard_"+name, help, labels, nil)
	}
	table := []string{"schema", "table"}
	slot := []string{"task", "slot"}
	return &Collector{
		reg: reg, tasks: tasks,
		copyRows:         d("copy_rows_total", "Rows copied, per source table (every task, retried attempts included).", table...),
		copyBytes:        d("copy_bytes_total", "Bytes of COPY data read from the source, per source table (every task, retried attempts included).", table...),
		copyThroughput:   d("copy_throughput_bytes_per_second", "Copy speed of the table's running units: bytes each copied divided by how long it has run, summed.", table...),
		copyEstimate:     d("copy_estimated_bytes", "Expected size of the table's registered copy units (pg_relation_size on the source).", table...),
		copyUnits:        d("copy_units", "Copy units of running copies, by state (pending, copying, done, failed).", "state"),
		lag:              d("replication_lag_bytes", "Bytes of WAL the source has written past the slot's confirmed position.", slot...),
		confirmed:        d("replication_confirmed_lsn", "Position (LSN, as a number) confirmed to the source: everything before it is applied on the destination.", slot...),
		lastTx:           d("replication_last_transaction_timestamp_seconds", "Commit time of the last source transaction the stream received (Unix seconds).", slot...),
		statements:       d("replication_statements_applied_total", "Statements run on the destination by the stream, after merging row changes into multi-row statements.", slot...),
		changes:          d("replication_changes_applied_total", "Row changes (inserts, updates, deletes, truncates) the stream applied, per destination shard.", "task", "slot", "shard"),
		tasksByState:     d("tasks", "Tasks of this process, by kind and state.", "kind", "state"),
		taskState:        d("task_state", "1 for each task in its current state.", "task", "kind", "source", "destination", "state"),
		schemaStatements: d("schema_statements_total", "Schema statements that ended, by destination cluster, shard, phase and outcome (done, skipped: already present, failed).", "database", "shard", "phase", "outcome"),
		errs:             d("errors_total", "Errors, by component (copy: a copy unit failed; schema: a statement failed; stream: the stream was interrupted and reconnects; task: a task failed) and kind (SQLSTATE, timeout, connection, other; the task kind for component task).", "component", "kind"),
	}
}

// Describe sends every family's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.copyRows, c.copyBytes, c.copyThroughput, c.copyEstimate, c.copyUnits,
		c.lag, c.confirmed, c.lastTx, c.statements, c.changes, c.tasksByState, c.taskState, c.schemaStatements, c.errs} {
		ch <- d
	}
}

// Collect reads the registry and the task manager and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.collectCopies(ch)
	c.collectSlots(ch)
	c.collectTasks(ch)
	for _, s := range c.reg.StatementCounts() {
		ch <- prometheus.MustNewConstMetric(c.schemaStatements, prometheus.CounterValue, float64(s.Count), s.Database, strconv.Itoa(s.Shard), s.Phase, s.State)
	}
	for _, e := range c.reg.ErrorCounts() {
		ch <- prometheus.MustNewConstMetric(c.errs, prometheus.CounterValue, float64(e.Count), e.Component, e.Kind)
	}
}

type tableName struct{ schema, table string }

func (c *Collector) collectCopies(ch chan<- prometheus.Metric) {
	for _, t := range c.reg.CopyTotals() {
		ch <- prometheus.MustNewConstMetric(c.copyRows, prometheus.CounterValue, float64(t.Rows), t.Schema, t.Table)
		ch <- prometheus.MustNewConstMetric(c.copyBytes, prometheus.CounterValue, float64(t.Bytes), t.Schema, t.Table)
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
		ch <- prometheus.MustNewConstMetric(c.copyThroughput, prometheus.GaugeValue, v, k.schema, k.table)
	}
	for k, v := range estimate {
		ch <- prometheus.MustNewConstMetric(c.copyEstimate, prometheus.GaugeValue, float64(v), k.schema, k.table)
	}
	for state, n := range units {
		ch <- prometheus.MustNewConstMetric(c.copyUnits, prometheus.GaugeValue, float64(n), state)
	}
}

func (c *Collector) collectSlots(ch chan<- prometheus.Metric) {
	for _, s := range c.reg.Slots() {
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(s.LagBytes), s.Task, s.Name)
		ch <- prometheus.MustNewConstMetric(c.confirmed, prometheus.GaugeValue, float64(s.Confirmed), s.Task, s.Name)
		if !s.LastTransaction.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.lastTx, prometheus.GaugeValue, float64(s.LastTransaction.UnixNano())/float64(time.Second), s.Task, s.Name)
		}
		ch <- prometheus.MustNewConstMetric(c.statements, prometheus.CounterValue, float64(s.Applied), s.Task, s.Name)
		for k, n := range s.ShardChanges {
			ch <- prometheus.MustNewConstMetric(c.changes, prometheus.CounterValue, float64(n), s.Task, s.Name, strconv.Itoa(k))
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
		ch <- prometheus.MustNewConstMetric(c.taskState, prometheus.GaugeValue, 1, t.ID, t.Kind, t.Source, t.Destination, t.State)
	}
	for k, n := range count {
		ch <- prometheus.MustNewConstMetric(c.tasksByState, prometheus.GaugeValue, float64(n), k.kind, k.state)
	}
	// Tasks never leave failed and are never forgotten: the count only grows.
	for kind, n := range failed {
		ch <- prometheus.MustNewConstMetric(c.errs, prometheus.CounterValue, float64(n), "task", kind)
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
