package fault

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/tests/testkit"
)

// DisableEnv names the test-only switch that turns every fault injection
// off (=1): a scenario then runs as it would with its fault, and must fail
// on its own "the fault hit" check. It shows that the checks can fail.
const DisableEnv = "RESHARD_FAULT_DISABLE"

func faultsDisabled() bool { return os.Getenv(DisableEnv) == "1" }

// inject injects a fault (fn) and counts it, unless DisableEnv is set.
func inject(t *testing.T, what string, fn func()) {
	t.Helper()
	if faultsDisabled() {
		t.Logf("%s=1: %s not injected", DisableEnv, what)
		return
	}
	faultsInjected.Add(1)
	fn()
}

// hit is a scenario's check that its fault happened where it says: it
// fails the test when cond does not hold.
func hit(t *testing.T, cond bool, format string, args ...any) {
	t.Helper()
	if !cond {
		t.Fatalf("the fault did not hit: "+format, args...)
	}
	t.Logf("fault hit: "+format, args...)
}

// killed tells whether a process ended by SIGKILL.
func killed(p *testkit.Process) bool {
	done, err := p.Exited()
	return done && err != nil && strings.Contains(err.Error(), "signal: killed")
}

// Lines reshard logs when it sees a fault and recovers from it.
const (
	logStreamRetry = "stream interrupted, reconnecting"
	logCopyRetry   = "copy failed, retrying"
	logStreaming   = ": streaming: "
)

// mark is a position in a process's output: what it logs after it.
type mark struct {
	p   *testkit.Process
	off int
}

func markOf(p *testkit.Process) mark { return mark{p, len(p.Output())} }

// since is what the process logged after the mark.
func (m mark) since() string {
	out := m.p.Output()
	if len(out) < m.off {
		return ""
	}
	return out[m.off:]
}

// saw tells whether the process logged s after the mark.
func (m mark) saw(s string) bool { return strings.Contains(m.since(), s) }

// await waits (on the process's output, as it writes) until it logs every
// one of lines after the mark, failing after timeout.
func (m mark) await(t *testing.T, timeout time.Duration, lines ...string) {
	t.Helper()
	ok := m.p.WaitOutput(timeout, func(string) bool {
		for _, l := range lines {
			if !m.saw(l) {
				return false
			}
		}
		return true
	})
	if !ok {
		done, err := m.p.Exited()
		t.Fatalf("reshard did not log %q within %s (exited: %v %v):\n%s", lines, timeout, done, err, lastLines(m.since(), 40))
	}
}

// awaitSeq waits until the process logs first, then (after it) then,
// both after the mark.
func (m mark) awaitSeq(t *testing.T, timeout time.Duration, first, then string) {
	t.Helper()
	ok := m.p.WaitOutput(timeout, func(string) bool {
		o := m.since()
		i := strings.Index(o, first)
		return i >= 0 && strings.Contains(o[i:], then)
	})
	if !ok {
		t.Fatalf("reshard did not log %q then %q within %s:\n%s", first, then, timeout, lastLines(m.since(), 40))
	}
}

// noRace fails the test when a reshard built with the race detector
// (testkit.RaceEnv) reported a data race.
func noRace(t *testing.T, out string) {
	t.Helper()
	if i := strings.Index(out, "WARNING: DATA RACE"); i >= 0 {
		end := min(len(out), i+6000)
		t.Errorf("reshard reported a data race:\n%s", out[i:end])
	}
}

func describe(p *testkit.Process) string {
	done, err := p.Exited()
	return fmt.Sprintf("exited %v (%v)", done, err)
}
