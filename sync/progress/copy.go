package progress

import (
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

	rows, bytes atomic.Int64
	mu          sync.Mutex
	state       string
	started     time.Time
	finished    time.Time
	err         string
}

// Add counts rows and bytes copied.
func (c *TableCopy) Add(rows, bytes int64) {
	c.rows.Add(rows)
	c.bytes.Add(bytes)
}

// Reset zeroes the counters (a unit retried from scratch).
func (c *TableCopy) Reset() {
	c.rows.Store(0)
	c.bytes.Store(0)
}

// CopyRow is a point-in-time view of a TableCopy.
type CopyRow struct {
	Task, Schema, Table, SQL string
	SourceShard, Unit, Units int
	State                    string
	Rows, Bytes              int64
	EstimateBytes            int64
	StartedAt                time.Time
	Elapsed                  time.Duration
	Error                    string
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
	defer u.mu.Unlock()
	u.finished = time.Now()
	if err != nil {
		u.state = CopyFailed
		u.err = err.Error()
		return
	}
	u.state = CopyDone
}

// RemoveCopies forgets every unit of a task (when the task ends).
func (r *Registry) RemoveCopies(task string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := r.copies[:0]
	for _, u := range r.copies {
		if u.Task != task {
			kept = append(kept, u)
		}
	}
	r.copies = kept
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
			EstimateBytes: u.EstimateBytes, StartedAt: u.started, Error: u.err}
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
