// Package progress is the registry of what the engine is doing right now.
// The engine writes to it; the admin server's SHOW views and the CLI's
// progress display read the same snapshots.
package progress

import (
	"sync"
	"time"
)

// Statement states, as SHOW SCHEMA_SYNC reports them.
const (
	StatePending = "pending"
	StateRunning = "running"
	StateDone    = "done"
	StateSkipped = "skipped" // already present on the shard
	StateFailed  = "failed"
)

// SchemaStatement is one schema statement bound for one destination shard.
type SchemaStatement struct {
	// Database is the destination cluster.
	Database string
	// User is the role the statement runs as.
	User string
	// Shard is the destination shard number.
	Shard int
	// Phase is PRE, POST, CUTOVER or POST_CUTOVER.
	Phase string
	// Kind names the object: table, index, constraint, sequence, ...
	Kind string
	// Schema and Table name the relation the statement is about, if any.
	Schema, Table string
	// SQL is the statement text.
	SQL string

	state    string
	started  time.Time
	finished time.Time
	err      string
}

// SchemaRow is a point-in-time copy of a SchemaStatement.
type SchemaRow struct {
	SchemaStatement
	State     string
	StartedAt time.Time // zero until it runs
	Elapsed   time.Duration
	Error     string
}

// Registry holds the progress of every running operation.
type Registry struct {
	mu     sync.Mutex
	schema map[*SchemaStatement]struct{}
	order  []*SchemaStatement
	copies []*TableCopy
	slots  []*Slot
	verify []VerifyRow
	// inactive are reshard's slots no stream reads (SetInactiveSlots).
	inactive []InactiveSlot
	// ddl holds the statements the streams' DDL stages saw, by slot and
	// source id (SHOW DDL).
	ddl    map[ddlKey]*ddlEntry
	ddlSeq int64

	// Cumulative counts, for metrics: they outlive the rows above.
	retired    map[tableKey]CopyTotal
	statements map[StatementCount]int64
	errs       map[ErrorCount]int64
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{schema: map[*SchemaStatement]struct{}{}, retired: map[tableKey]CopyTotal{},
		statements: map[StatementCount]int64{}, errs: map[ErrorCount]int64{}}
}

// AddSchema registers statements as pending.
func (r *Registry) AddSchema(stmts ...*SchemaStatement) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range stmts {
		s.state = StatePending
		r.schema[s] = struct{}{}
		r.order = append(r.order, s)
	}
}

// Start marks a statement running.
func (r *Registry) Start(s *SchemaStatement) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.state = StateRunning
	s.started = time.Now()
}

// Finish marks a statement done, skipped or failed.
func (r *Registry) Finish(s *SchemaStatement, state string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.state = state
	s.finished = time.Now()
	if err != nil {
		s.err = err.Error()
	}
	r.statements[StatementCount{Database: s.Database, Shard: s.Shard, Phase: s.Phase, State: state}]++
	if state == StateFailed {
		r.countError(ComponentSchema, err)
	}
}

// StatementCount is a group of schema statements that ended the same way,
// and (in StatementCounts) how many did.
type StatementCount struct {
	// Database and Shard are the destination cluster and shard.
	Database string
	Shard    int
	// Phase is the schema sync phase; State is done, skipped or failed.
	Phase, State string
	// Count is how many statements (zero in map keys).
	Count int64
}

// StatementCounts returns how many schema statements ended, by
// destination, phase and outcome, since the registry was made.
func (r *Registry) StatementCounts() []StatementCount {
	return counted(r, r.statements, func(k StatementCount, n int64) StatementCount { k.Count = n; return k })
}

// RemoveSchema forgets statements (when their sync ends).
func (r *Registry) RemoveSchema(stmts []*SchemaStatement) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range stmts {
		delete(r.schema, s)
	}
	kept := r.order[:0]
	for _, s := range r.order {
		if _, ok := r.schema[s]; ok {
			kept = append(kept, s)
		}
	}
	r.order = kept
}

// Schema returns the statements that are pending, running or failed, in
// the order they were registered.
func (r *Registry) Schema() []SchemaRow {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var out []SchemaRow
	for _, s := range r.order {
		if s.state == StateDone || s.state == StateSkipped {
			continue
		}
		row := SchemaRow{SchemaStatement: *s, State: s.state, StartedAt: s.started, Error: s.err}
		row.SchemaStatement.state, row.SchemaStatement.err = "", ""
		switch {
		case s.started.IsZero():
		case s.finished.IsZero():
			row.Elapsed = now.Sub(s.started)
		default:
			row.Elapsed = s.finished.Sub(s.started)
		}
		out = append(out, row)
	}
	return out
}
