package display

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/sync/progress"
)

// TestTakeSumsUnits: a table split into units is one table, its percent
// capped below 100 until every unit is done.
func TestTakeSumsUnits(t *testing.T) {
	reg := progress.NewRegistry()
	a := &progress.TableCopy{Task: "cli", Schema: "public", Table: "orders", Unit: 1, Units: 2, EstimateBytes: 100}
	b := &progress.TableCopy{Task: "cli", Schema: "public", Table: "orders", Unit: 2, Units: 2, EstimateBytes: 100}
	c := &progress.TableCopy{Task: "cli", Schema: "public", Table: "users", Unit: 1, Units: 1, EstimateBytes: 10}
	reg.AddCopies(a, b, c)
	reg.StartCopy(a)
	a.Add(10, 150)
	reg.FinishCopy(a, nil)
	reg.StartCopy(b)
	b.Add(3, 60)
	snap := Take(reg)
	if len(snap.Tables) != 2 {
		t.Fatalf("tables: %+v", snap.Tables)
	}
	o := snap.Tables[0]
	if o.Name() != "public.orders" || o.Units != 2 || o.Done != 1 || o.Running != 1 || o.Rows != 13 || o.Bytes != 210 || o.EstimateBytes != 200 {
		t.Fatalf("orders: %+v", o)
	}
	if o.Percent != 99.9 || o.Complete() {
		t.Fatalf("orders copied more than estimated but not done: percent %v", o.Percent)
	}
	if snap.Total.Units != 3 || snap.Total.Rows != 13 || snap.Total.Done != 1 {
		t.Fatalf("total: %+v", snap.Total)
	}
	reg.FinishCopy(b, nil)
	if o := Take(reg).Tables[0]; o.Percent != 100 || !o.Complete() {
		t.Fatalf("done orders: %+v", o)
	}
}

// TestWatcherEvents: a unit that starts and finishes between two polls
// still gets both events, a table is reported done once, phases only move
// forward, the copy totals are reported when the copy ends and at the
// end, and every event is one JSON line.
func TestWatcherEvents(t *testing.T) {
	reg := progress.NewRegistry()
	var out bytes.Buffer
	w := NewWatcher(reg, NewJSON(&out), time.Hour, time.Hour)
	w.SetPhase(PhasePrepare)
	u := &progress.TableCopy{Task: "cli", Schema: "public", Table: "t", Unit: 1, Units: 1, EstimateBytes: 8}
	reg.AddCopies(u)
	reg.StartCopy(u)
	u.Add(1, 8)
	reg.FinishCopy(u, nil)
	w.poll(false)
	s := &progress.Slot{Task: "cli", Name: "slot_a", Host: "127.0.0.1", Port: 5432, Database: "db"}
	reg.AddSlot(s)
	s.Lag(42)
	w.poll(false) // the copy phase ends: its totals are reported
	w.poll(true)  // the last poll: totals and lag again
	reg.RemoveSlot(s)
	w.poll(false)

	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		kind := ev["event"].(string)
		if kind == EventPhase {
			kind += ":" + ev["phase"].(string)
		}
		if kind == EventLag && ev["lag_bytes"] != float64(42) {
			t.Fatalf("lag event: %v", ev)
		}
		got = append(got, kind)
	}
	want := "phase:prepare phase:copy unit_started unit_finished table_done phase:stream progress progress lag"
	if strings.Join(got, " ") != want {
		t.Fatalf("events\n got %s\nwant %s", strings.Join(got, " "), want)
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -5: "-5"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestVerifyBars: a table being verified draws a bar with its percent of
// the estimated rows and an ETA; once finished, its result.
func TestVerifyBars(t *testing.T) {
	started := time.Now().Add(-10 * time.Second)
	running := progress.VerifyRow{Schema: "public", Table: "orders", Status: "running", RowsCompared: 250, RowsEstimate: 1000, Started: started}
	if p := verifyPercent(running); p != 25 {
		t.Fatalf("percent %v", p)
	}
	if s := verifyStatus(running); s != "ETA 30s" {
		t.Fatalf("running status %q", s)
	}
	done := running
	done.Status, done.RowsCompared, done.SourceRows, done.DestinationRows, done.Missing = "mismatch", 1000, 1000, 999, 1
	if p, s := verifyPercent(done), verifyStatus(done); p != 100 || !strings.Contains(s, "mismatch") || !strings.Contains(s, "missing 1,") {
		t.Fatalf("finished: %v %q", p, s)
	}

	var out bytes.Buffer
	term := NewTerminal(&out, "verify", nil)
	term.Update(Snapshot{At: time.Now(), Verify: []progress.VerifyRow{running}}, "verify")
	time.Sleep(300 * time.Millisecond)
	term.Update(Snapshot{At: time.Now(), Verify: []progress.VerifyRow{done}}, "verify")
	term.Close()
	// Off a terminal mpb trims lines to the bar width: the name and the
	// percent show.
	for _, want := range []string{"verify public.orders  25.0%", "verify public.orders 100.0%"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the terminal did not show %q:\n%s", want, out.String())
		}
	}
}

// TestTerminalStatus: a status line is drawn under the bars with what its
// function returns at the last refresh.
func TestTerminalStatus(t *testing.T) {
	var out safeBuffer
	term := NewTerminal(&out, "demo", nil)
	n := 0
	term.Status(func() string { n++; return fmt.Sprintf("writer: %d refreshes", n) })
	term.Update(Snapshot{At: time.Now()}, PhaseStream)
	term.Close()
	if !strings.Contains(out.String(), "writer: ") || !strings.Contains(out.String(), "reshard demo · stream") {
		t.Fatalf("status line not drawn:\n%q", out.String())
	}
}

// safeBuffer is a bytes.Buffer safe for mpb's writer goroutine.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
