// Package display turns the engine's progress registry (sync/progress, the
// same registry the admin server's SHOW views read) into what the CLI shows:
// live progress bars on a terminal, or one JSON object per event for
// scripts.
package display

import (
	"math"
	"sort"
	"time"

	"github.com/reshard/reshard/sync/progress"
)

// Table is the progress of one table's copy, summed over its units (a
// table split into ranges, or copied from several source shards, has
// several).
type Table struct {
	// Schema and Table name the source table.
	Schema, Table string
	// Units, Done, Running and Failed count the table's copy units.
	Units, Done, Running, Failed int
	// Rows and Bytes copied so far; EstimateBytes is the expected size.
	Rows, Bytes, EstimateBytes int64
	// Elapsed is the wall time from the first unit's start to the last
	// unit's end (or now).
	Elapsed time.Duration
	// BytesPerSecond and RowsPerSecond are the throughput over Elapsed.
	BytesPerSecond, RowsPerSecond float64
	// Percent is Bytes against EstimateBytes, 100 once every unit is done
	// and at most 99.9 before (the estimate is the size on disk).
	Percent float64
	// ETA is the time left at the current throughput (0 if unknown).
	ETA time.Duration
}

// Name is the schema-qualified table name.
func (t Table) Name() string { return t.Schema + "." + t.Table }

// Complete tells whether every unit of the table is done.
func (t Table) Complete() bool { return t.Units > 0 && t.Done == t.Units }

// Snapshot is the engine's progress at one moment.
type Snapshot struct {
	// At is when it was taken.
	At time.Time
	// Tables are the tables being copied, in the order they first appeared.
	Tables []Table
	// Total sums every table.
	Total Table
	// Slots are the running streams.
	Slots []progress.SlotRow
	// Verify are the tables verified so far.
	Verify []progress.VerifyRow
	// SchemaOpen counts schema statements pending or running; SchemaFailed
	// those that failed.
	SchemaOpen, SchemaFailed int
}

// span accumulates the wall-clock extent of a set of units.
type span struct {
	start, end time.Time
}

func (s *span) add(c progress.CopyRow) {
	if c.StartedAt.IsZero() {
		return
	}
	if s.start.IsZero() || c.StartedAt.Before(s.start) {
		s.start = c.StartedAt
	}
	if end := c.StartedAt.Add(c.Elapsed); end.After(s.end) {
		s.end = end
	}
}

// finish fills the derived fields of t from its counters and span.
func (t *Table) finish(s span) {
	if !s.start.IsZero() {
		t.Elapsed = s.end.Sub(s.start)
	}
	if secs := t.Elapsed.Seconds(); secs > 0 {
		t.BytesPerSecond = float64(t.Bytes) / secs
		t.RowsPerSecond = float64(t.Rows) / secs
	}
	switch {
	case t.Complete():
		t.Percent = 100
	case t.EstimateBytes > 0:
		t.Percent = math.Min(99.9, 100*float64(t.Bytes)/float64(t.EstimateBytes))
	}
	if !t.Complete() && t.BytesPerSecond > 0 && t.EstimateBytes > t.Bytes {
		t.ETA = time.Duration(float64(t.EstimateBytes-t.Bytes) / t.BytesPerSecond * float64(time.Second))
	}
}

// Take reads the registry.
func Take(reg *progress.Registry) Snapshot {
	snap := Snapshot{At: time.Now(), Slots: reg.Slots(), Verify: reg.Verify()}
	for _, s := range reg.Schema() {
		if s.State == progress.StateFailed {
			snap.SchemaFailed++
		} else {
			snap.SchemaOpen++
		}
	}
	index := map[string]int{}
	spans := []span{}
	var total span
	snap.Total.Schema, snap.Total.Table = "", "total"
	for _, c := range reg.Copies() {
		key := c.Schema + "." + c.Table
		i, ok := index[key]
		if !ok {
			i = len(snap.Tables)
			index[key] = i
			snap.Tables = append(snap.Tables, Table{Schema: c.Schema, Table: c.Table})
			spans = append(spans, span{})
		}
		t := &snap.Tables[i]
		for _, tt := range []*Table{t, &snap.Total} {
			tt.Units++
			tt.Rows += c.Rows
			tt.Bytes += c.Bytes
			tt.EstimateBytes += c.EstimateBytes
			switch c.State {
			case progress.CopyDone:
				tt.Done++
			case progress.CopyRunning:
				tt.Running++
			case progress.CopyFailed:
				tt.Failed++
			}
		}
		spans[i].add(c)
		total.add(c)
	}
	for i := range snap.Tables {
		snap.Tables[i].finish(spans[i])
	}
	snap.Total.finish(total)
	// Tables are copied side by side: the copy lasts at least as long as
	// its slowest table.
	for _, t := range snap.Tables {
		if !snap.Total.Complete() && t.ETA > snap.Total.ETA {
			snap.Total.ETA = t.ETA
		}
	}
	sort.SliceStable(snap.Slots, func(i, j int) bool { return snap.Slots[i].Name < snap.Slots[j].Name })
	return snap
}
