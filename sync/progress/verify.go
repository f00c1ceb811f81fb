package progress

import "time"

// VerifyRow is one table of a VERIFY, as SHOW VERIFY lists it: its
// progress while running, its result once finished.
type VerifyRow struct {
	Task, Schema, Table, Status string
	// Source, Destination and Publication name the route verified.
	Source, Destination, Publication string
	// SourceRows are the rows on the source (every source shard for a
	// sharded table, shard 0 for an omni table); DestinationRows the rows
	// on every destination shard together, and ShardRows each shard's.
	SourceRows, DestinationRows int64
	ShardRows                   []int64
	Missing, Extra, Different   int64
	Misplaced                   int64
	// RowsCompared are the source rows compared so far, RowsEstimate the
	// rows the source's statistics expect in all.
	RowsCompared, RowsEstimate int64
	// Started is when the VERIFY began comparing; Elapsed is set once the
	// table is finished.
	Started time.Time
	Elapsed time.Duration
	// ConsistentLSN is the point compared at (one LSN per shard of the side
	// the streams read from); Held tells that the streams feeding the route
	// were held there while the snapshots were taken, Hold how long they
	// held back changes they had received (zero when none arrived meanwhile).
	ConsistentLSN string
	Held          bool
	Hold          time.Duration
}

// Finished reports whether the table's comparison has ended.
func (v VerifyRow) Finished() bool { return v.Status != "" && v.Status != "running" }

// SetVerify records (or replaces) a table's verify row.
func (r *Registry) SetVerify(v VerifyRow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v.ShardRows = append([]int64(nil), v.ShardRows...)
	for i, x := range r.verify {
		if x.Task == v.Task && x.Schema == v.Schema && x.Table == v.Table {
			r.verify[i] = v
			return
		}
	}
	r.verify = append(r.verify, v)
}

// StartVerify forgets the rows of earlier VERIFYs of the same route
// (source, destination, publication) than task: finished results stay
// listed until the next VERIFY of their route.
func (r *Registry) StartVerify(task, source, destination, publication string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := r.verify[:0]
	for _, x := range r.verify {
		if x.Task == task || x.Source != source || x.Destination != destination || x.Publication != publication {
			kept = append(kept, x)
		}
	}
	clear(r.verify[len(kept):])
	r.verify = kept
}

// Verify returns every verify row.
func (r *Registry) Verify() []VerifyRow {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]VerifyRow, len(r.verify))
	for i, v := range r.verify {
		v.ShardRows = append([]int64(nil), v.ShardRows...)
		out[i] = v
	}
	return out
}
