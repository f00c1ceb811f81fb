package catalog

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ConnString returns a libpq URL connecting to the node as the cluster's
// schema_admin user (or the node's own user/password when set). Extra
// parameters (such as replication=database) are added as given.
func (c *Catalog) ConnString(n *Node, extra map[string]string) (string, error) {
	cl, ok := c.clusters[n.Cluster]
	if !ok || cl.Admin == nil {
		return "", fmt.Errorf("cluster %q has no schema_admin user", n.Cluster)
	}
	user, password := cl.Admin.LoginUser(), cl.Admin.LoginPassword()
	if n.User != "" {
		user = n.User
	}
	if n.Password != "" {
		password = n.Password
	}
	u := url.URL{Scheme: "postgres", Host: n.Addr(), Path: "/" + n.Database}
	if password != "" {
		u.User = url.UserPassword(user, password)
	} else {
		u.User = url.User(user)
	}
	q := url.Values{}
	q.Set("application_name", "reshard")
	q.Set("sslmode", "prefer")
	// A server that does not answer (a silent network) fails the connect
	// instead of hanging it.
	q.Set("connect_timeout", strconv.FormatInt(int64((c.NetworkTimeout()+time.Second-1)/time.Second), 10))
	for k, v := range extra {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// NetworkTimeout is how long reshard waits for a server to answer before it
// treats the connection as lost (resharding_network_timeout).
func (c *Catalog) NetworkTimeout() time.Duration {
	ms := c.Config.General.ReshardingNetworkTimeout
	if ms <= 0 {
		ms = DefaultNetworkTimeout
	}
	return time.Duration(ms) * time.Millisecond
}

// Pools holds one pgxpool per node, each opened on first use.
type Pools struct {
	cat     *Catalog
	maxConn int32
	mu      sync.Mutex
	pools   map[string]*pgxpool.Pool
}

// NewPools prepares lazily opened pools with at most maxConns connections
// each (0 means pgxpool's default).
func NewPools(cat *Catalog, maxConns int) *Pools {
	return &Pools{cat: cat, maxConn: int32(maxConns), pools: map[string]*pgxpool.Pool{}}
}

func poolKey(n *Node) string {
	return n.Cluster + "/" + strconv.Itoa(n.Shard) + "/" + n.Addr() + "/" + n.Database
}

// Get returns the pool of node n, opening it if needed.
func (p *Pools) Get(ctx context.Context, n *Node) (*pgxpool.Pool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pool, ok := p.pools[poolKey(n)]; ok {
		return pool, nil
	}
	dsn, err := p.cat.ConnString(n, nil)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pool for %s: %w", n, err)
	}
	if p.maxConn > 0 {
		cfg.MaxConns = p.maxConn
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pool for %s: %w", n, err)
	}
	p.pools[poolKey(n)] = pool
	return pool, nil
}

// Close closes every open pool.
func (p *Pools) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, pool := range p.pools {
		pool.Close()
		delete(p.pools, k)
	}
}
