package fault

import (
	"testing"
	"time"
)

// TestNetworkResetDuringCopy: every connection between reshard and
// destination shard 1 is reset in the middle of a copy.
func TestNetworkResetDuringCopy(t *testing.T) {
	e := newEnv(t, "netresetcopy", bigSource(t), "")
	e.schemaPre(t)
	p := e.midCopy(t)
	t.Logf("reset %d connections", proxies[1].Reset())
	faultsInjected.Add(1)
	e.finishCopy(t, p, 3*time.Minute)
}

// TestNetworkResetWhileStreaming: every connection between reshard and
// destination shard 0 is reset while it streams.
func TestNetworkResetWhileStreaming(t *testing.T) {
	e := newEnv(t, "netresetstream", newSource(t, "fault_netresetstream", 20_000), "")
	p, w := e.midStream(t, 4)
	t.Logf("reset %d connections", proxies[0].Reset())
	faultsInjected.Add(1)
	e.finishStream(t, p, w)
}

// shortTimeout makes reshard give up on a silent server after 4 seconds
// (default: a minute), to keep the blackhole scenarios short.
const shortTimeout = "resharding_network_timeout = 4000"

// blackhole silently drops every byte between reshard and destination
// shard k for d, then lets new connections through; the blackholed ones
// stay dead, so reshard has to notice them through its timeouts.
func blackhole(t *testing.T, k int, d time.Duration) {
	t.Helper()
	t.Logf("blackholed %d connections", proxies[k].Blackhole())
	faultsInjected.Add(1)
	time.Sleep(d)
	proxies[k].Heal()
}

// TestNetworkBlackholeDuringCopy: the network to destination shard 1 goes
// silent for 5 seconds in the middle of a copy.
func TestNetworkBlackholeDuringCopy(t *testing.T) {
	e := newEnv(t, "netbhcopy", bigSource(t), shortTimeout)
	e.schemaPre(t)
	p := e.midCopy(t)
	blackhole(t, 1, 5*time.Second)
	e.finishCopy(t, p, 3*time.Minute)
}

// TestNetworkBlackholeWhileStreaming: the network to destination shard 1
// goes silent for 5 seconds while reshard streams under a write load.
func TestNetworkBlackholeWhileStreaming(t *testing.T) {
	e := newEnv(t, "netbhstream", newSource(t, "fault_netbhstream", 20_000), shortTimeout)
	p, w := e.midStream(t, 5)
	blackhole(t, 1, 5*time.Second)
	e.finishStream(t, p, w)
}
