package fault

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/tests/testkit"
)

// copyFault is a copy struck by a fault: the process, how many rows the
// shards held when it struck and the source's total.
type copyFault struct {
	p             *testkit.Process
	copied, total int64
	at            mark
}

// midCopy starts a copy (data-sync --sync-only) slowed down on the shards
// (slowCopy: it lasts seconds on any machine) and returns once a third of
// the rows have reached the shards: the moment the copy scenarios strike.
func (e *env) midCopy(t *testing.T) *copyFault {
	t.Helper()
	e.slowCopy(t)
	total := e.sourceRows(t)
	p := e.start(t, e.dataSync(true))
	var copied int64
	waitFor(t, 3*time.Minute, "a third of the rows copied", func() bool {
		if done, err := p.Exited(); done {
			t.Fatalf("copy ended (%v) before the fault:\n%s", err, lastLines(p.Output(), 20))
		}
		copied = e.copiedRows(t)
		return copied >= total/3
	})
	if copied >= total {
		t.Fatalf("the copy was done before the fault: %d of %d rows on the shards", copied, total)
	}
	return &copyFault{p: p, copied: copied, total: total, at: markOf(p)}
}

// finishCopy waits for a copy hit by a fault: it either recovers on its own
// (logging its retries) or fails with an error, and then the same command
// run again must finish it. The fault hit when the copy saw it: a retry
// logged after the fault, or the run failing. The shards are then
// compared to the source.
func (e *env) finishCopy(t *testing.T, c *copyFault, timeout time.Duration) {
	t.Helper()
	err, ok := c.p.Wait(timeout)
	if !ok {
		t.Fatalf("the copy hung: still running %s after the fault:\n%s", timeout, lastLines(c.p.Output(), 30))
	}
	retried := strings.Count(c.at.since(), logCopyRetry)
	hit(t, err != nil || retried > 0, "the copy, %d of %d rows on the shards when the fault struck, saw it: %d retries logged, run failed: %v",
		c.copied, c.total, retried, err)
	if err != nil {
		t.Logf("the copy failed resumably (%v): %s", err, lastLines(c.p.Output(), 3))
		restarts.Add(1)
		e.run(t, e.dataSync(true))
	} else {
		t.Logf("the copy recovered by itself after %d retries", retried)
	}
	e.verify(t)
}

// streamFault is a stream under a write load struck by a fault.
type streamFault struct {
	p      *testkit.Process
	w      *writer
	start  counts // the writer's counts when the scenario began
	before counts // ... when the fault struck
	at     mark
}

// midStream starts copy-and-stream under a write load and returns once it
// streams and the load has run for a while (an observed number of writes).
func (e *env) midStream(t *testing.T, seed int64) *streamFault {
	t.Helper()
	e.schemaPre(t)
	w := startWriter(t, e.src, seed)
	start := w.counts()
	p := e.start(t, e.dataSync(false))
	waitStreaming(t, p, 3*time.Minute)
	w.waitWrites(t, w.counts(), 300, time.Minute)
	return &streamFault{p: p, w: w, start: start, before: w.counts(), at: markOf(p)}
}

// recovered waits until the stream, struck by a fault, logged that it was
// interrupted and that it streams again, while the writer kept writing:
// the fault hit the stream. A reshard that gave up instead is run again.
func (f *streamFault) recovered(t *testing.T, e *env) {
	t.Helper()
	ok := f.p.WaitOutput(time.Minute, func(string) bool {
		o := f.at.since()
		i := strings.Index(o, logStreamRetry)
		return i >= 0 && strings.Contains(o[i:], logStreaming)
	})
	if done, err := f.p.Exited(); done {
		hit(t, err != nil, "reshard stopped with an error after the fault: %v", err)
		t.Logf("reshard stopped (%v): %s; running it again", err, lastLines(f.p.Output(), 3))
		restarts.Add(1)
		f.p = e.start(t, e.dataSync(false))
		waitStreaming(t, f.p, 3*time.Minute)
	} else {
		hit(t, ok, "the stream was interrupted by the fault and reconnected (%q then %q logged after it)", logStreamRetry, logStreaming)
	}
	during := f.w.counts().minus(f.before)
	hit(t, during.writes > 0, "the source took writes from the fault to the stream's recovery: %s", during)
}

// finishStream lets the load run a little longer (an observed number of
// writes), stops it, checks it ran, and waits for the shards to equal the
// source; reshard must still stream.
func (e *env) finishStream(t *testing.T, f *streamFault) {
	t.Helper()
	f.w.waitWrites(t, f.w.counts(), 300, time.Minute)
	f.w.halt(t)
	checkWrites(t, "the write load of the scenario", f.w.counts().minus(f.start))
	e.waitSame(t, 3*time.Minute)
	if done, err := f.p.Exited(); done {
		t.Fatalf("reshard stopped (%v) while streaming:\n%s", err, lastLines(f.p.Output(), 30))
	}
}

// outage stops destination shard k as `pg_ctl stop -m immediate` would,
// holds it down until reshard has logged that it saw it (or for at most
// hold), and starts it again.
func outage(t *testing.T, k int, p *testkit.Process, seen string, hold time.Duration) {
	t.Helper()
	inst := cluster.Instances[1+k]
	inject(t, "stop of destination shard "+string(rune('0'+k)), func() {
		at := markOf(p)
		inst.StopImmediate()
		p.WaitOutput(hold, func(string) bool { return at.saw(seen) })
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := inst.StartAgain(ctx, cluster.BinDir); err != nil {
			t.Fatalf("start destination shard %d again: %v", k, err)
		}
	})
}

// TestShardStopDuringCopy: destination shard 1 stops (-m immediate) in the
// middle of a copy, until the copy has seen it.
func TestShardStopDuringCopy(t *testing.T) {
	e := newEnv(t, "stopcopy", bigSource(t), "")
	e.schemaPre(t)
	c := e.midCopy(t)
	outage(t, 1, c.p, logCopyRetry, 30*time.Second)
	e.finishCopy(t, c, 3*time.Minute)
}

// TestShardStopWhileStreaming: destination shard 0 stops (-m immediate)
// while reshard streams under a write load, until the stream has seen it.
func TestShardStopWhileStreaming(t *testing.T) {
	e := newEnv(t, "stopstream", newSource(t, "fault_stopstream", 20_000), "")
	f := e.midStream(t, 2)
	outage(t, 0, f.p, logStreamRetry, 30*time.Second)
	f.recovered(t, e)
	e.finishStream(t, f)
}

// TestSourceRestartWhileStreaming: the source restarts (fast shutdown,
// then start) while reshard streams under a write load.
func TestSourceRestartWhileStreaming(t *testing.T) {
	e := newEnv(t, "srcrestart", newSource(t, "fault_srcrestart", 20_000), "")
	f := e.midStream(t, 3)
	inject(t, "restart of the source", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := cluster.Instances[0].Restart(ctx, cluster.BinDir); err != nil {
			t.Fatalf("restart the source: %v", err)
		}
	})
	f.recovered(t, e)
	e.finishStream(t, f)
}
