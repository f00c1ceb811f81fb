package fault

import (
	"context"
	"testing"
	"time"

	"github.com/reshard/reshard/tests/testkit"
)

// midCopy starts a copy (data-sync --sync-only) and returns once a third of
// the rows have reached the shards: the moment the copy scenarios strike.
func (e *env) midCopy(t *testing.T) *testkit.Process {
	t.Helper()
	total := e.sourceRows(t)
	p := e.start(t, e.dataSync(true))
	waitFor(t, 3*time.Minute, "a third of the rows copied", func() bool {
		if done, err := p.Exited(); done {
			t.Fatalf("copy ended (%v) before the fault:\n%s", err, lastLines(p.Output(), 20))
		}
		return e.copiedRows(t) >= total/3
	})
	return p
}

// finishCopy waits for a copy hit by a fault: it either recovers on its own
// or fails with an error, and then the same command run again must finish
// it. The shards are then compared to the source.
func (e *env) finishCopy(t *testing.T, p *testkit.Process, timeout time.Duration) {
	t.Helper()
	err, ok := p.Wait(timeout)
	if !ok {
		t.Fatalf("the copy hung: still running %s after the fault:\n%s", timeout, lastLines(p.Output(), 30))
	}
	if err != nil {
		t.Logf("the copy failed resumably (%v): %s", err, lastLines(p.Output(), 3))
		restarts.Add(1)
		e.run(t, e.dataSync(true))
	} else {
		t.Logf("the copy recovered by itself")
	}
	e.verify(t)
}

// midStream starts copy-and-stream under a write load and returns once it
// streams.
func (e *env) midStream(t *testing.T, seed int64) (*testkit.Process, *writer) {
	t.Helper()
	e.schemaPre(t)
	w := startWriter(t, e.src, seed)
	p := e.start(t, e.dataSync(false))
	waitStreaming(t, p, 3*time.Minute)
	time.Sleep(time.Second)
	return p, w
}

// finishStream lets the load run a little longer, stops it, and waits for
// the shards to equal the source. A reshard that gave up is run again.
func (e *env) finishStream(t *testing.T, p *testkit.Process, w *writer) {
	t.Helper()
	time.Sleep(2 * time.Second)
	w.halt(t)
	t.Logf("%d source writes during the scenario", w.writes)
	if done, err := p.Exited(); done {
		t.Logf("reshard stopped (%v): %s; running it again", err, lastLines(p.Output(), 3))
		restarts.Add(1)
		p = e.start(t, e.dataSync(false))
		waitStreaming(t, p, 3*time.Minute)
	}
	e.waitSame(t, 3*time.Minute)
	if done, err := p.Exited(); done {
		t.Fatalf("reshard stopped (%v) while streaming:\n%s", err, lastLines(p.Output(), 30))
	}
}

// outage stops destination shard k as `pg_ctl stop -m immediate` would and
// starts it again after d.
func outage(t *testing.T, k int, d time.Duration) {
	t.Helper()
	inst := cluster.Instances[1+k]
	inst.StopImmediate()
	faultsInjected.Add(1)
	time.Sleep(d)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := inst.StartAgain(ctx, cluster.BinDir); err != nil {
		t.Fatalf("start destination shard %d again: %v", k, err)
	}
}

// TestShardStopDuringCopy: destination shard 1 stops (-m immediate) for 10
// seconds in the middle of a copy.
func TestShardStopDuringCopy(t *testing.T) {
	e := newEnv(t, "stopcopy", bigSource(t), "")
	e.schemaPre(t)
	p := e.midCopy(t)
	outage(t, 1, 10*time.Second)
	e.finishCopy(t, p, 3*time.Minute)
}

// TestShardStopWhileStreaming: destination shard 0 stops (-m immediate)
// for 10 seconds while reshard streams under a write load.
func TestShardStopWhileStreaming(t *testing.T) {
	e := newEnv(t, "stopstream", newSource(t, "fault_stopstream", 20_000), "")
	p, w := e.midStream(t, 2)
	outage(t, 0, 10*time.Second)
	e.finishStream(t, p, w)
}

// TestSourceRestartWhileStreaming: the source restarts (fast shutdown,
// then start) while reshard streams under a write load.
func TestSourceRestartWhileStreaming(t *testing.T) {
	e := newEnv(t, "srcrestart", newSource(t, "fault_srcrestart", 20_000), "")
	p, w := e.midStream(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cluster.Instances[0].Restart(ctx, cluster.BinDir); err != nil {
		t.Fatalf("restart the source: %v", err)
	}
	faultsInjected.Add(1)
	e.finishStream(t, p, w)
}
