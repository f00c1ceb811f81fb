// Package fault is reshard's fault suite: it injects crashes, server
// stops and restarts, network cuts and a shard that rejects writes while
// reshard copies, builds indexes and streams, on real PostgreSQL 15, and
// checks that the destination shards end up exactly equal to the source.
//
// Instance 0 holds the sources, instances 1 and 2 the destination shards 0
// and 1. reshard always reaches the destination shards through a TCP proxy
// (tests/testkit.Proxy), so that any scenario can cut the network; the
// source is reached through one too where a scenario cuts that network.
//
// Every scenario checks that its fault hit where it says (the copy was not
// finished when it struck, the proxy cut connections, reshard saw the
// failure and retried or was restarted, the write load ran during it) and
// fails otherwise. RESHARD_FAULT_DISABLE=1 runs the scenarios without
// injecting their faults: each must then fail on that check.
package fault

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

var (
	cluster *pgtest.Cluster
	// proxies[k] forwards to destination shard k (instance k+1).
	proxies []*testkit.Proxy
	// srcProxy forwards to the sources' instance (instance 0), for the
	// scenarios that cut the network between reshard and the source.
	srcProxy *testkit.Proxy
	// reshardBin is the binary built once for the suite.
	reshardBin string
)

// Counts for the summary line.
var (
	faultsInjected atomic.Int64
	restarts       atomic.Int64
	rowsCompared   atomic.Int64
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(func() int {
		for _, inst := range cluster.Instances[1:] {
			p, err := testkit.NewProxy(fmt.Sprintf("%s:%d", inst.Host, inst.Port))
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer p.Close()
			proxies = append(proxies, p)
		}
		sp, err := testkit.NewProxy(fmt.Sprintf("%s:%d", cluster.Instances[0].Host, cluster.Instances[0].Port))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer sp.Close()
		srcProxy = sp
		if faultsDisabled() {
			fmt.Printf("%s=1: no fault is injected; every scenario must fail on its \"the fault hit\" check\n", DisableEnv)
		}
		code := m.Run()
		if reshardBin != "" {
			os.RemoveAll(filepath.Dir(reshardBin))
		}
		fmt.Printf("fault suite summary: %d faults injected, %d reshard restarts, %d rows compared\n",
			faultsInjected.Load(), restarts.Load(), rowsCompared.Load())
		return code
	}, 3, pgtest.Options{Settings: map[string]string{
		// A walsender whose client went silent (a blackholed network)
		// holds its slot until this timeout ends it; reshard's reconnect
		// waits for that.
		"wal_sender_timeout": "10s",
	}}, &cluster))
}
