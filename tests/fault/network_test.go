package fault

import (
	"testing"
	"time"

	"github.com/reshard/reshard/tests/testkit"
)

// reset resets every connection through proxy px (to the shard or the
// source it names) and checks that there were some to reset.
func reset(t *testing.T, px *testkit.Proxy, to string) {
	t.Helper()
	before := px.Resets()
	inject(t, "reset of the connections to "+to, func() { px.Reset() })
	n := px.Resets() - before
	hit(t, n > 0, "%d connections between reshard and %s reset", n, to)
}

// blackhole silently drops every byte between reshard and what proxy px
// leads to until reshard has logged seen (it noticed through its
// timeouts), for at most hold, then lets new connections through; the
// blackholed ones stay dead, so reshard has to notice them itself.
func blackhole(t *testing.T, px *testkit.Proxy, to string, p *testkit.Process, seen string, hold time.Duration) {
	t.Helper()
	before := px.Blackholed()
	inject(t, "blackhole of the network to "+to, func() {
		at := markOf(p)
		px.Blackhole()
		p.WaitOutput(hold, func(string) bool { return at.saw(seen) })
		px.Heal()
	})
	n := px.Blackholed() - before
	hit(t, n > 0, "%d connections between reshard and %s blackholed", n, to)
}

// TestNetworkResetDuringCopy: every connection between reshard and
// destination shard 1 is reset in the middle of a copy.
func TestNetworkResetDuringCopy(t *testing.T) {
	e := newEnv(t, "netresetcopy", bigSource(t), "")
	e.schemaPre(t)
	c := e.midCopy(t)
	reset(t, proxies[1], "destination shard 1")
	e.finishCopy(t, c, 3*time.Minute)
}

// TestNetworkResetWhileStreaming: every connection between reshard and
// destination shard 0 is reset while it streams.
func TestNetworkResetWhileStreaming(t *testing.T) {
	e := newEnv(t, "netresetstream", newSource(t, "fault_netresetstream", 20_000), "")
	f := e.midStream(t, 4)
	reset(t, proxies[0], "destination shard 0")
	f.recovered(t, e)
	e.finishStream(t, f)
}

// shortTimeout makes reshard give up on a silent server after 4 seconds
// (default: a minute), to keep the blackhole scenarios short.
const shortTimeout = "resharding_network_timeout = 4000"

// TestNetworkBlackholeDuringCopy: the network to destination shard 1 goes
// silent in the middle of a copy, until the copy notices.
func TestNetworkBlackholeDuringCopy(t *testing.T) {
	e := newEnv(t, "netbhcopy", bigSource(t), shortTimeout)
	e.schemaPre(t)
	c := e.midCopy(t)
	blackhole(t, proxies[1], "destination shard 1", c.p, logCopyRetry, 30*time.Second)
	e.finishCopy(t, c, 3*time.Minute)
}

// TestNetworkBlackholeWhileStreaming: the network to destination shard 1
// goes silent while reshard streams under a write load, until the stream
// notices.
func TestNetworkBlackholeWhileStreaming(t *testing.T) {
	e := newEnv(t, "netbhstream", newSource(t, "fault_netbhstream", 20_000), shortTimeout)
	f := e.midStream(t, 5)
	blackhole(t, proxies[1], "destination shard 1", f.p, logStreamRetry, 30*time.Second)
	f.recovered(t, e)
	e.finishStream(t, f)
}

// TestSourceNetworkResetWhileStreaming: every connection between reshard
// and the source (the replication connection among them) is reset while it
// streams under a write load; the stream reconnects and ends exact.
func TestSourceNetworkResetWhileStreaming(t *testing.T) {
	e := newEnvVia(t, "srcnetreset", newSource(t, "fault_srcnetreset", 20_000), "", true)
	f := e.midStream(t, 7)
	reset(t, srcProxy, "the source")
	f.recovered(t, e)
	e.finishStream(t, f)
}

// TestSourceNetworkBlackholeWhileStreaming: the network between reshard
// and the source goes silent while it streams under a write load: no
// keepalive arrives, nothing errors. reshard must notice through its own
// timeouts, reconnect, and end exact.
func TestSourceNetworkBlackholeWhileStreaming(t *testing.T) {
	e := newEnvVia(t, "srcnetbh", newSource(t, "fault_srcnetbh", 20_000), shortTimeout, true)
	f := e.midStream(t, 8)
	blackhole(t, srcProxy, "the source", f.p, logStreamRetry, time.Minute)
	f.recovered(t, e)
	e.finishStream(t, f)
}
