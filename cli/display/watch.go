package display

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/reshard/reshard/sync/progress"
)

// Event kinds, as the "event" field of a JSON line names them.
const (
	EventPhase        = "phase"         // the command entered a phase
	EventUnitStarted  = "unit_started"  // a copy unit began
	EventUnitFinished = "unit_finished" // a copy unit ended (state done or failed)
	EventTableDone    = "table_done"    // every unit of a table is done
	EventProgress     = "progress"      // copy totals, once per sample interval
	EventLag          = "lag"           // one stream's lag, once per sample interval
	EventVerified     = "table_verified"
	EventSchemaFailed = "statement_failed"
	EventError        = "error"  // the command failed
	EventResult       = "result" // the last line: the command's result and exit code
)

// Phases a command goes through.
const (
	PhasePrepare = "prepare" // checks, slots and snapshots before the copy
	PhaseCopy    = "copy"
	PhaseStream  = "stream"
)

var phaseRank = map[string]int{PhasePrepare: 1, PhaseCopy: 2, PhaseStream: 3}

// Event is one thing that happened, with its fields.
type Event struct {
	// Kind is one of the Event* constants.
	Kind string
	// At is when it was seen.
	At time.Time
	// Fields are the event's data, by JSON name.
	Fields map[string]any
}

// Sink receives what a Watcher sees.
type Sink interface {
	// Event reports one event.
	Event(ev Event)
	// Update reports the latest snapshot and the current phase.
	Update(snap Snapshot, phase string)
	// Close ends the output (the final snapshot has been given).
	Close()
}

// Watcher polls the registry, turns changes into events and hands both to
// a sink.
type Watcher struct {
	reg      *progress.Registry
	sink     Sink
	interval time.Duration
	sample   time.Duration

	mu         sync.Mutex
	base       string // the phase the command set
	phase      string // the phase last reported
	units      map[string]string
	tables     map[string]bool
	verified   map[string]string
	schemaFail int
	lastSample time.Time

	stop chan struct{}
	done chan struct{}
}

// NewWatcher returns a watcher of reg reporting to sink: the registry is
// read every interval, progress and lag samples are emitted every sample.
func NewWatcher(reg *progress.Registry, sink Sink, interval, sample time.Duration) *Watcher {
	return &Watcher{reg: reg, sink: sink, interval: interval, sample: sample,
		units: map[string]string{}, tables: map[string]bool{}, verified: map[string]string{},
		stop: make(chan struct{}), done: make(chan struct{})}
}

// Start polls until Stop or until ctx ends; phase is the phase the command
// begins in.
func (w *Watcher) Start(ctx context.Context, phase string) {
	w.SetPhase(phase)
	go func() {
		defer close(w.done)
		t := time.NewTicker(w.interval)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				w.poll(false)
			}
		}
	}()
}

// SetPhase sets the phase the command is in (copy and stream are also
// found from the registry: units being copied, streams running).
func (w *Watcher) SetPhase(phase string) {
	w.mu.Lock()
	w.base = phase
	w.mu.Unlock()
	w.poll(false)
}

// Stop takes a last snapshot, reports what changed, and closes the sink.
func (w *Watcher) Stop() {
	close(w.stop)
	<-w.done
	w.poll(true)
	w.sink.Close()
}

func (w *Watcher) emit(kind string, fields map[string]any) {
	w.sink.Event(Event{Kind: kind, At: time.Now(), Fields: fields})
}

// poll reads the registry once. last forces the samples out.
func (w *Watcher) poll(last bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	snap := Take(w.reg)
	phase := w.base
	switch {
	case len(snap.Slots) > 0 && phaseRank[phase] > 0:
		// a copy that went on to stream (another command's streams, such
		// as the server's during cutover, leave its phase alone)
		phase = PhaseStream
	case snap.Total.Units > 0 && phase == PhasePrepare:
		phase = PhaseCopy
	}
	// prepare, copy, stream only move forward (the streams are gone once
	// the command ends).
	if r, ok := phaseRank[phase]; ok && r < phaseRank[w.phase] {
		phase = w.phase
	}
	// The copy totals are reported when the copy phase ends, too.
	copyEnded := w.phase == PhaseCopy && phase != PhaseCopy
	newPhase := func() {
		if phase != w.phase {
			w.phase = phase
			w.emit(EventPhase, map[string]any{"phase": phase})
		}
	}
	// A phase is reported before what happens in it, and the copy's last
	// units before the phase that follows it.
	if !copyEnded {
		newPhase()
	}
	w.units = w.unitEvents(w.reg.Copies())
	for _, t := range snap.Tables {
		if t.Complete() && !w.tables[t.Name()] {
			w.tables[t.Name()] = true
			w.emit(EventTableDone, map[string]any{"schema": t.Schema, "table": t.Table, "units": t.Units,
				"rows": t.Rows, "bytes": t.Bytes, "elapsed_ms": t.Elapsed.Milliseconds(), "bytes_per_second": int64(t.BytesPerSecond)})
		}
	}
	if copyEnded {
		newPhase()
	}
	for _, v := range snap.Verify {
		key := v.Schema + "." + v.Table
		if v.Status == "running" || w.verified[key] == v.Status {
			continue
		}
		w.verified[key] = v.Status
		w.emit(EventVerified, map[string]any{"schema": v.Schema, "table": v.Table, "status": v.Status,
			"source_rows": v.SourceRows, "destination_rows": v.DestinationRows, "missing": v.Missing,
			"extra": v.Extra, "different": v.Different, "misplaced": v.Misplaced, "rows_compared": v.RowsCompared,
			"elapsed_ms": v.Elapsed.Milliseconds(), "consistent_lsn": v.ConsistentLSN, "hold_ms": v.Hold.Milliseconds()})
	}
	if snap.SchemaFailed > w.schemaFail {
		w.schemaFail = snap.SchemaFailed
		for _, s := range w.reg.Schema() {
			if s.State == progress.StateFailed {
				w.emit(EventSchemaFailed, map[string]any{"database": s.Database, "shard": s.Shard, "phase": s.Phase,
					"kind": s.Kind, "sql": s.SQL, "error": s.Error})
			}
		}
	}
	if sample := snap.At.Sub(w.lastSample) >= w.sample; last || sample || copyEnded {
		if sample {
			w.lastSample = snap.At
		}
		if snap.Total.Units > 0 && (phase == PhaseCopy || last || copyEnded) {
			t := snap.Total
			w.emit(EventProgress, map[string]any{"tables": len(snap.Tables), "tables_done": len(w.tables),
				"units": t.Units, "units_done": t.Done, "rows": t.Rows, "bytes": t.Bytes, "estimate_bytes": t.EstimateBytes,
				"percent": round1(t.Percent), "bytes_per_second": int64(t.BytesPerSecond), "rows_per_second": int64(t.RowsPerSecond),
				"eta_seconds": round1(t.ETA.Seconds()), "elapsed_ms": t.Elapsed.Milliseconds()})
		}
		for _, s := range snap.Slots {
			if !sample && !last {
				break
			}
			f := map[string]any{"slot": s.Name, "host": s.Host, "port": s.Port, "database": s.Database,
				"lag_bytes": s.LagBytes, "confirmed_lsn": s.Confirmed.String(), "applied": s.Applied}
			if !s.LastTransaction.IsZero() {
				f["last_transaction"] = s.LastTransaction
			}
			if s.Error != "" {
				f["error"] = s.Error
			}
			w.emit(EventLag, f)
		}
	}
	w.sink.Update(snap, phase)
}

// unitEvents reports units that started or finished since the last poll
// and returns their states now. A unit that started and finished between
// two polls gets both events.
func (w *Watcher) unitEvents(rows []progress.CopyRow) map[string]string {
	now := make(map[string]string, len(rows))
	for _, c := range rows {
		key := fmt.Sprintf("%s\x00%s\x00%s\x00%d\x00%d", c.Task, c.Schema, c.Table, c.SourceShard, c.Unit)
		now[key] = c.State
		was := w.units[key]
		if was == c.State {
			continue
		}
		base := map[string]any{"schema": c.Schema, "table": c.Table, "source_shard": c.SourceShard,
			"unit": c.Unit, "units": c.Units, "estimate_bytes": c.EstimateBytes}
		// A unit seen running for the first time, or running again after a
		// failure, started.
		fresh := was == "" || was == progress.CopyPending
		if c.State != progress.CopyPending && (fresh || c.State == progress.CopyRunning) {
			w.emit(EventUnitStarted, base)
		}
		if c.State == progress.CopyDone || c.State == progress.CopyFailed {
			f := map[string]any{"state": c.State, "rows": c.Rows, "bytes": c.Bytes, "elapsed_ms": c.Elapsed.Milliseconds()}
			for k, v := range base {
				f[k] = v
			}
			if c.Error != "" {
				f["error"] = c.Error
			}
			w.emit(EventUnitFinished, f)
		}
	}
	return now
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }
