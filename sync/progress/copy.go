package progress

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Copy unit states, as SHOW TABLE_COPIES reports them.
const (
	CopyPending = "pending"
	CopyRunning = "copying"
	CopyDone    = "done"
	CopyFailed  = "failed"
)

// TableCopy is the progress of one copy unit: a whole table, or one range
// of a table split for parallel copy. Counters are updated while it runs.
type TableCopy struct {
	// Task is the id of the task copying it.
	Task string
	// Schema and Table name the source table.
	Schema, Table string
	// SourceShard is the source shard it is copied from.
	SourceShard int
	// Unit and Units number the unit within its table (1-based) when the
	// table is split.
	Unit, Units int
	// SQL is the COPY statement run on the source.
	SQL string
	// EstimateBytes is the expected size (from pg_relation_size).
	EstimateBytes int64
	// Format is the COPY format, "binary" or "text".
	Format string

	rows, bytes atomic.Int64
	mu          sync.Mutex
	// discardedRows and discardedBytes are what attempts retried from
	// scratch had copied: still copied, for the cumulative totals.
	discardedRows, discardedBytes int64
	state                         string
	node                          string
	started                       time.Time
	finished                      time.Time
	err                           string
}

// ReadFrom records the server the unit is read from ("primary
// 10.0.0.1:5432", "replica 10.0.0.2:5432"), once a worker has taken it.
func (c *TableCopy) ReadFrom(node string) {
	c.mu.Lock()
	c.node = node
	c.mu.Unlock()
}

// Add counts rows and bytes copied.
func (c *TableCopy) Add(rows, bytes int64) {
	c.rows.Add(rows)
	c.bytes.Add(bytes)
}

// Reset zeroes the counters (a unit retried from scratch). What they held
// still counts in the registry's cumulative totals.
func (c *TableCopy) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.discardedRows += c.rows.Swap(0)
	c.discardedBytes += c.bytes.Swap(0)
}

// copied returns everything the unit copied, discarded attempts included.
// The caller holds c.mu.
func (c *TableCopy) copied() (rows, bytes int64) {
	return c.discardedRows + c.rows.Load(), c.discardedBytes + c.bytes.Load()
}

// CopyRow is a point-in-time view of a TableCopy.
type CopyRow struct {
	Task, Schema, Table, SQL string
	SourceShard, Unit, Units int
	State                    string
	// Node is the server the unit is read from ("" until a worker takes
	// it); Format the COPY format.
	Node, Format  string
	Rows, Bytes   int64
	EstimateBytes int64
	StartedAt     time.Time
	Elapsed       time.Duration
	Error         string
}

// AddCopies registers pending copy units.
func (r *Registry) AddCopies(units ...*TableCopy) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range units {
		u.mu.Lock()
		u.state = CopyPending
		u.mu.Unlock()
		r.copies = append(r.copies, u)
	}
}

// SetSQL replaces the unit's SQL as SHOW TABLE_COPIES shows it (a unit
// copied again another way says so).
func (c *TableCopy) SetSQL(sql string) {
	c.mu.Lock()
	c.SQL = sql
	c.mu.Unlock()
}

// StartCopy marks a unit running.
func (r *Registry) StartCopy(u *TableCopy) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.state = CopyRunning
	u.started = time.Now()
	u.err = ""
}

// FinishCopy marks a unit done (err == nil) or failed.
func (r *Registry) FinishCopy(u *TableCopy, err error) {
	u.mu.Lock()
	u.finished = time.Now()
	u.state = CopyDone
	if err != nil {
		u.state = CopyFailed
		u.err = err.Error()
	}
	u.mu.Unlock()
	if err != nil {
		r.CountError(ComponentCopy, err)
	}
}

// RemoveCopies forgets every unit of a task (when the task ends). What the
// units copied stays in the cumulative totals.
func (r *Registry) RemoveCopies(task string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := r.copies[:0]
	for _, u := range r.copies {
		if u.Task != task {
			kept = append(kept, u)
			continue
		}
		u.mu.Lock()
		rows, bytes := u.copied()
		u.mu.Unlock()
		k := tableKey{u.Schema, u.Table}
		t := r.retired[k]
		t.Rows += rows
		t.Bytes += bytes
		r.retired[k] = t
	}
	r.copies = kept
}

type tableKey struct{ schema, table string }

// CopyTotal is what was copied of one table since the registry was made:
// every unit of every task, running or ended, retried attempts included.
type CopyTotal struct {
	Schema, Table string
	Rows, Bytes   int64
}

// CopyTotals returns the cumulative totals of every table ever copied,
// sorted by schema and table. They never decrease.
func (r *Registry) CopyTotals() []CopyTotal {
	r.mu.Lock()
	defer r.mu.Unlock()
	sum := make(map[tableKey]CopyTotal, len(r.retired))
	for k, t := range r.retired {
		sum[k] = t
	}
	for _, u := range r.copies {
		u.mu.Lock()
		rows, bytes := u.copied()
		u.mu.Unlock()
		k := tableKey{u.Schema, u.Table}
		t := sum[k]
		t.Rows += rows
		t.Bytes += bytes
		sum[k] = t
	}
	out := make([]CopyTotal, 0, len(sum))
	for k, t := range sum {
		t.Schema, t.Table = k.schema, k.table
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Schema != out[j].Schema {
			return out[i].Schema < out[j].Schema
		}
		return out[i].Table < out[j].Table
	})
	return out
}

// Copies returns every registered unit, finished ones included.
func (r *Registry) Copies() []CopyRow {
	r.mu.Lock()
	units := append([]*TableCopy(nil), r.copies...)
	r.mu.Unlock()
	now := time.Now()
	out := make([]CopyRow, 0, len(units))
	for _, u := range units {
		u.mu.Lock()
		row := CopyRow{Task: u.Task, Schema: u.Schema, Table: u.Table, SQL: u.SQL, SourceShard: u.SourceShard,
			Unit: u.Unit, Units: u.Units, State: u.state, Rows: u.rows.Load(), Bytes: u.bytes.Load(),
			EstimateBytes: u.EstimateBytes, StartedAt: u.started, Error: u.err, Node: u.node, Format: u.Format}
		switch {
		case u.started.IsZero():
		case u.finished.IsZero():
			row.Elapsed = now.Sub(u.started)
		default:
			row.Elapsed = u.finished.Sub(u.started)
		}
		u.mu.Unlock()
		out = append(out, row)
	}
	return out
}
