package display

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/reshard/reshard/sync/progress"
)

// Bar priorities: the header on top, then the tables in the order they
// appeared, the totals, the streams and the verified tables.
const (
	prioHeader = 0
	prioTable  = 1 << 10
	prioTotal  = 1 << 20
	prioSlot   = 1 << 21
	prioVerify = 1 << 22
	prioStatus = 1 << 23
)

// Terminal draws live progress with mpb: a header (command, phase, totals,
// ETA), one bar per table (bytes against the estimate, percent, rows,
// throughput, ETA), a totals bar, and one line per stream with its lag.
// Log lines written through the Writer it was given print above the bars.
type Terminal struct {
	command string
	p       *mpb.Progress
	logs    *Writer
	prevLog io.Writer
	started time.Time

	mu     sync.Mutex
	snap   Snapshot
	phase  string
	tables map[string]*mpb.Bar
	slots  map[string]*mpb.Bar
	verify map[string]*mpb.Bar
	fixed  []*mpb.Bar // header and totals
	// lastSlot is each stream as last seen, shown once it has stopped.
	lastSlot map[string]progress.SlotRow
	total    *mpb.Bar
}

// NewTerminal starts drawing on out (a terminal) for command; logs, if not
// nil, is switched to print above the bars until Close.
func NewTerminal(out io.Writer, command string, logs *Writer) *Terminal {
	t := &Terminal{command: command, logs: logs, started: time.Now(),
		tables: map[string]*mpb.Bar{}, slots: map[string]*mpb.Bar{}, verify: map[string]*mpb.Bar{},
		lastSlot: map[string]progress.SlotRow{}}
	t.p = mpb.New(mpb.WithOutput(out), mpb.WithWidth(30), mpb.WithRefreshRate(200*time.Millisecond), mpb.WithAutoRefresh())
	if logs != nil {
		t.prevLog = logs.Swap(aboveBars{t})
	}
	t.fixed = append(t.fixed, t.line(prioHeader, t.header))
	return t
}

// Status adds a line under the bars, drawn by text at every refresh, for
// what a command shows beside the engine's progress (the demo's writer).
// Call it before the first Update; text must not block.
func (t *Terminal) Status(text func() string) {
	t.fixed = append(t.fixed, t.line(prioStatus+len(t.fixed), text))
}

// line adds a text-only line drawn by text.
func (t *Terminal) line(prio int, text func() string) *mpb.Bar {
	return t.p.New(0, mpb.NopStyle(), mpb.BarPriority(prio), mpb.BarFillerTrim(),
		mpb.PrependDecorators(decor.Any(func(decor.Statistics) string {
			t.mu.Lock()
			defer t.mu.Unlock()
			return text()
		})))
}

// bar adds a progress bar for the table named name (or the totals).
func (t *Terminal) bar(prio int, label string, get func() Table) *mpb.Bar {
	text := func(f func(Table) string) decor.Decorator {
		return decor.Any(func(decor.Statistics) string {
			t.mu.Lock()
			defer t.mu.Unlock()
			return f(get())
		}, decor.WCSyncSpace)
	}
	return t.p.New(0, mpb.BarStyle().Lbound("[").Filler("=").Tip(">").Padding("-").Rbound("]"), mpb.BarPriority(prio),
		mpb.PrependDecorators(decor.Name(label, decor.WCSyncWidthR)),
		mpb.AppendDecorators(
			text(func(x Table) string { return fmt.Sprintf("%5.1f%%", x.Percent) }),
			text(func(x Table) string { return count(x.Rows) + " rows" }),
			text(func(x Table) string { return size(x.Bytes) }),
			text(func(x Table) string { return size(int64(x.BytesPerSecond)) + "/s" }),
			text(func(x Table) string { return count(int64(x.RowsPerSecond)) + " rows/s" }),
			text(status),
		))
}

func status(x Table) string {
	switch {
	case x.Complete():
		if x.Elapsed < time.Second {
			return "done in " + x.Elapsed.Round(time.Millisecond).String()
		}
		return "done in " + x.Elapsed.Round(100*time.Millisecond).String()
	case x.Failed > 0:
		return fmt.Sprintf("%d failed", x.Failed)
	case x.ETA > 0:
		return "ETA " + x.ETA.Round(time.Second).String()
	case x.Running > 0:
		return "copying"
	}
	return "pending"
}

func (t *Terminal) header() string {
	parts := []string{"reshard " + t.command, t.phase}
	s := t.snap
	if s.Total.Units > 0 {
		done := 0
		for _, x := range s.Tables {
			if x.Complete() {
				done++
			}
		}
		parts = append(parts, fmt.Sprintf("%d/%d tables", done, len(s.Tables)))
		if s.Total.ETA > 0 {
			parts = append(parts, "ETA "+s.Total.ETA.Round(time.Second).String())
		}
	}
	if s.SchemaOpen+s.SchemaFailed > 0 {
		parts = append(parts, fmt.Sprintf("%d schema statements to run, %d failed", s.SchemaOpen, s.SchemaFailed))
	}
	if len(s.Verify) > 0 {
		parts = append(parts, fmt.Sprintf("%d tables verified", len(s.Verify)))
	}
	parts = append(parts, "elapsed "+time.Since(t.started).Round(time.Second).String())
	return strings.Join(parts, " · ")
}

// Event is a no-op: the bars show what the events say.
func (t *Terminal) Event(Event) {}

// Update shows snap. The bar maps are only touched here and in Close
// (the watcher calls them in turn); t.mu guards what the decorators read.
// mpb calls the decorators from a bar's own goroutine, the one that also
// serves SetCurrent: no bar is changed while t.mu is held.
func (t *Terminal) Update(snap Snapshot, phase string) {
	t.mu.Lock()
	t.snap, t.phase = snap, phase
	for _, s := range snap.Slots {
		t.lastSlot[slotKey(s)] = s
	}
	t.mu.Unlock()
	for _, x := range snap.Tables {
		name := x.Name()
		if _, ok := t.tables[name]; !ok {
			t.tables[name] = t.bar(prioTable+len(t.tables), name, func() Table { return t.table(name) })
		}
		setBar(t.tables[name], x)
	}
	if t.total == nil && len(snap.Tables) > 0 {
		t.total = t.bar(prioTotal, "total", func() Table { return t.snap.Total })
		t.fixed = append(t.fixed, t.total)
	}
	if t.total != nil {
		setBar(t.total, snap.Total)
	}
	for i, s := range snap.Slots {
		key := slotKey(s)
		if _, ok := t.slots[key]; !ok {
			t.slots[key] = t.line(prioSlot+i, func() string { return t.slotLine(key) })
		}
	}
	for i, v := range snap.Verify {
		key := v.Schema + "." + v.Table
		if _, ok := t.verify[key]; !ok {
			t.verify[key] = t.verifyBar(prioVerify+i, key)
		}
		setVerifyBar(t.verify[key], v)
	}
}

// verifyBar adds the bar of a verified table: rows compared against the
// source's estimate, percent, and the ETA or, once done, the result.
func (t *Terminal) verifyBar(prio int, key string) *mpb.Bar {
	text := func(f func(progress.VerifyRow) string) decor.Decorator {
		return decor.Any(func(decor.Statistics) string {
			t.mu.Lock()
			defer t.mu.Unlock()
			return f(t.verifyRow(key))
		}, decor.WCSyncSpace)
	}
	return t.p.New(0, mpb.BarStyle().Lbound("[").Filler("=").Tip(">").Padding("-").Rbound("]"), mpb.BarPriority(prio),
		mpb.PrependDecorators(decor.Name("verify "+key, decor.WCSyncWidthR)),
		mpb.AppendDecorators(
			text(func(v progress.VerifyRow) string { return fmt.Sprintf("%5.1f%%", verifyPercent(v)) }),
			text(func(v progress.VerifyRow) string { return count(v.RowsCompared) + " rows compared" }),
			text(verifyStatus),
		))
}

// setVerifyBar moves a verify bar to v's rows compared.
func setVerifyBar(b *mpb.Bar, v progress.VerifyRow) {
	if b == nil || b.Completed() {
		return
	}
	if v.Finished() {
		n := max(v.RowsCompared, 1)
		b.SetTotal(n, false)
		b.SetCurrent(n)
		b.SetTotal(-1, true)
		return
	}
	b.SetTotal(max(v.RowsEstimate, v.RowsCompared+1, 1), false)
	b.SetCurrent(v.RowsCompared)
}

func (t *Terminal) verifyRow(key string) progress.VerifyRow {
	for _, v := range t.snap.Verify {
		if v.Schema+"."+v.Table == key {
			return v
		}
	}
	return progress.VerifyRow{}
}

// verifyPercent is the share of the estimated rows compared (100 once done).
func verifyPercent(v progress.VerifyRow) float64 {
	switch {
	case v.Finished():
		return 100
	case v.RowsEstimate > 0:
		return min(99.9, 100*float64(v.RowsCompared)/float64(v.RowsEstimate))
	}
	return 0
}

// verifyStatus is a verified table's ETA while running, its result after.
func verifyStatus(v progress.VerifyRow) string {
	if !v.Finished() {
		if v.RowsCompared > 0 && v.RowsEstimate > v.RowsCompared && !v.Started.IsZero() {
			elapsed := time.Since(v.Started)
			return "ETA " + time.Duration(float64(elapsed)*float64(v.RowsEstimate-v.RowsCompared)/float64(v.RowsCompared)).Round(time.Second).String()
		}
		return "comparing"
	}
	line := fmt.Sprintf("%s  source %s rows, destination %s rows", v.Status, count(v.SourceRows), count(v.DestinationRows))
	if n := v.Missing + v.Extra + v.Different + v.Misplaced; n > 0 {
		line += fmt.Sprintf("  (missing %d, extra %d, different %d, misplaced %d)", v.Missing, v.Extra, v.Different, v.Misplaced)
	}
	return line
}

func slotKey(s progress.SlotRow) string { return fmt.Sprintf("%s/%s:%d", s.Name, s.Host, s.Port) }

// setBar moves a bar to x's bytes against its estimate.
func setBar(b *mpb.Bar, x Table) {
	if b == nil || b.Completed() {
		return
	}
	if x.Complete() {
		n := max(x.Bytes, 1)
		b.SetTotal(n, false)
		b.SetCurrent(n)
		b.SetTotal(-1, true)
		return
	}
	b.SetTotal(max(x.EstimateBytes, x.Bytes+1, 1), false)
	b.SetCurrent(x.Bytes)
}

func (t *Terminal) table(name string) Table {
	for _, x := range t.snap.Tables {
		if x.Name() == name {
			return x
		}
	}
	return Table{}
}

func (t *Terminal) slotLine(key string) string {
	for _, s := range t.snap.Slots {
		if slotKey(s) != key {
			continue
		}
		line := fmt.Sprintf("stream %s  %s:%d/%s  lag %s  confirmed %s", s.Name, s.Host, s.Port, s.Database,
			size(s.LagBytes), s.Confirmed)
		if s.Applied > 0 {
			line += "  applied " + count(s.Applied)
		}
		if !s.LastTransaction.IsZero() {
			line += "  last transaction " + time.Since(s.LastTransaction).Round(100*time.Millisecond).String() + " ago"
		}
		if s.Error != "" {
			line += "  error: " + s.Error
		}
		return line
	}
	s := t.lastSlot[key]
	return fmt.Sprintf("stream %s  %s:%d/%s  stopped  confirmed %s", s.Name, s.Host, s.Port, s.Database, s.Confirmed)
}

// Close draws the last state, leaves it on the screen and gives the log
// its destination back.
func (t *Terminal) Close() {
	bars := append([]*mpb.Bar(nil), t.fixed...)
	for _, m := range []map[string]*mpb.Bar{t.tables, t.slots, t.verify} {
		for _, b := range m {
			if b != nil {
				bars = append(bars, b)
			}
		}
	}
	for _, b := range bars {
		if !b.Completed() {
			b.Abort(false)
		}
	}
	t.p.Wait()
	if t.logs != nil {
		t.logs.Swap(t.prevLog)
	}
}

// aboveBars writes log lines above the bars, or straight to the old
// destination once the bars are gone.
type aboveBars struct{ t *Terminal }

func (a aboveBars) Write(p []byte) (int, error) {
	if n, err := a.t.p.Write(p); err == nil {
		return n, nil
	}
	return a.t.prevLog.Write(p)
}

// size formats bytes in binary units.
func size(n int64) string { return fmt.Sprintf("% .1f", decor.SizeB1024(n)) }

// Count formats n with thousands separators: 1,234,567.
func Count(n int64) string { return count(n) }

// count formats a count with thousands separators.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}
