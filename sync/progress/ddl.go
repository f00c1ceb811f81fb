package progress

import (
	"sort"
	"strconv"
	"strings"
	"time"
)

// DDL statement states, as SHOW DDL reports them.
const (
	DDLCaptured = "captured" // recorded on the source, not reached by the stream yet
	DDLWaiting  = "waiting"  // waiting for the other source shards to reach it
	DDLApplying = "applying"
	DDLApplied  = "applied"
	DDLMatched  = "matched" // a source shard other than 0: shard 0's statement was applied
	DDLSkipped  = "skipped" // nothing to run on the shards
	DDLFailed   = "failed"
)

// DDLStatement is one statement the source's event triggers captured, as a
// stream sees it.
type DDLStatement struct {
	// Task and Slot name the stream; SourceShard the source shard it was
	// captured on, ID its id there.
	Task, Slot  string
	SourceShard int
	ID          int64
	// CapturedAt is when it ran on the source; Tag its command tag;
	// Statement its text.
	CapturedAt time.Time
	Tag        string
	Statement  string
}

// DDLRow is a point-in-time view of a captured statement.
type DDLRow struct {
	DDLStatement
	State string
	// Applied lists the destination shards that have it, Pending those
	// that do not yet.
	Applied, Pending []int
	// SQL is what ran on the shards (schema sync's rules applied), one
	// statement a line.
	SQL       string
	AppliedAt time.Time
	Note      string
	Error     string
}

type ddlKey struct {
	slot string
	id   int64
}

// ddlEntry is a registry row and its state.
type ddlEntry struct {
	row DDLRow
	seq int64
}

// maxDDLRows bounds the statements kept per slot.
const maxDDLRows = 1000

// SetDDL records (or updates) a captured statement's state. shards is the
// number of destination shards; applied the shards that have it.
func (r *Registry) SetDDL(s DDLStatement, state string, applied []int, shards int, sql, note string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ddl == nil {
		r.ddl = map[ddlKey]*ddlEntry{}
	}
	k := ddlKey{s.Slot, s.ID}
	e, ok := r.ddl[k]
	if !ok {
		r.ddlSeq++
		e = &ddlEntry{seq: r.ddlSeq}
		r.ddl[k] = e
		r.trimDDL(s.Slot)
	}
	if s.Statement == "" {
		s.Statement = e.row.Statement
	}
	if s.Tag == "" {
		s.Tag = e.row.Tag
	}
	if s.CapturedAt.IsZero() {
		s.CapturedAt = e.row.CapturedAt
	}
	row := DDLRow{DDLStatement: s, State: state, SQL: sql, Note: note, AppliedAt: e.row.AppliedAt}
	if sql == "" {
		row.SQL = e.row.SQL
	}
	if ok && state == DDLCaptured && e.row.State != DDLCaptured {
		return // the stream is ahead of the poll
	}
	has := map[int]bool{}
	for _, k := range applied {
		has[k] = true
	}
	for k := 0; k < shards; k++ {
		if has[k] {
			row.Applied = append(row.Applied, k)
		} else {
			row.Pending = append(row.Pending, k)
		}
	}
	if (state == DDLApplied || state == DDLMatched || state == DDLSkipped) && row.AppliedAt.IsZero() {
		row.AppliedAt = time.Now()
	}
	if err != nil {
		row.Error = err.Error()
		r.countError(ComponentStream, err)
	}
	e.row = row
}

// trimDDL forgets a slot's oldest statements past maxDDLRows.
func (r *Registry) trimDDL(slot string) {
	var keys []ddlKey
	for k := range r.ddl {
		if k.slot == slot {
			keys = append(keys, k)
		}
	}
	if len(keys) <= maxDDLRows {
		return
	}
	sort.Slice(keys, func(a, b int) bool { return r.ddl[keys[a]].seq < r.ddl[keys[b]].seq })
	for _, k := range keys[:len(keys)-maxDDLRows] {
		delete(r.ddl, k)
	}
}

// DDL returns the captured statements, by task, slot and id.
func (r *Registry) DDL() []DDLRow {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]DDLRow, 0, len(r.ddl))
	for _, e := range r.ddl {
		out = append(out, e.row)
	}
	sort.Slice(out, func(a, b int) bool {
		x, y := out[a], out[b]
		if x.Task != y.Task {
			return x.Task < y.Task
		}
		if x.Slot != y.Slot {
			return x.Slot < y.Slot
		}
		return x.ID < y.ID
	})
	return out
}

// RemoveDDL forgets a task's statements (when it ends).
func (r *Registry) RemoveDDL(task string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, e := range r.ddl {
		if e.row.Task == task {
			delete(r.ddl, k)
		}
	}
}

// ShardList renders shard numbers as "0,1,2".
func ShardList(shards []int) string {
	parts := make([]string, len(shards))
	for i, k := range shards {
		parts[i] = strconv.Itoa(k)
	}
	return strings.Join(parts, ",")
}
