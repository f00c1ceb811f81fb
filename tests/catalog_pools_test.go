package tests

import (
	"context"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

// TestPoolsOpenLazily checks that catalog pools reach the real nodes as the
// schema_admin user, and open nothing before first use.
func TestPoolsOpenLazily(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	cfgPath, usersPath := writeConfig(t, dir, freePort(t), "")
	cat, err := catalog.Load(cfgPath, usersPath)
	if err != nil {
		t.Fatal(err)
	}
	count := func() int {
		conn, err := cluster.Instances[2].Connect(ctx, "postgres")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'reshard'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	pools := catalog.NewPools(cat, 2)
	defer pools.Close()
	if n := count(); n != 0 {
		t.Fatalf("%d reshard connections before any pool was used", n)
	}
	dst, _ := cat.Cluster("prod_sharded")
	node := dst.Shards[1].Primary
	pool, err := pools.Get(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	var port int
	if err := pool.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil {
		t.Fatal(err)
	}
	if port != cluster.Instances[2].Port {
		t.Fatalf("pool for shard 1 reached port %d, want %d", port, cluster.Instances[2].Port)
	}
	if n := count(); n < 1 {
		t.Fatalf("no reshard connection after use")
	}
	again, _ := pools.Get(ctx, node)
	if again != pool {
		t.Fatal("Get opened a second pool for the same node")
	}
	pools.Close()
	deadline := time.Now().Add(5 * time.Second)
	for count() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("connections left open after Close")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
