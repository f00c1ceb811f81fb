package verify

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/job"
)

// Side names the two sides of a comparison in messages.
const (
	sideSource      = "source"
	sideDestination = "destination"
)

// sessionParams are set on every session at connect (in the startup
// packet: no round trip), so that both sides print keys the same way and a
// long comparison is not cut off by a server's idle or statement timeouts.
func sessionParams() map[string]string {
	return map[string]string{
		"application_name":                    "reshard verify",
		"TimeZone":                            "UTC",
		"DateStyle":                           "ISO, MDY",
		"IntervalStyle":                       "postgres",
		"extra_float_digits":                  "3",
		"bytea_output":                        "hex",
		"standard_conforming_strings":         "on",
		"statement_timeout":                   "0",
		"idle_in_transaction_session_timeout": "0",
	}
}

// server is one shard primary the comparison reads, with a bounded pool of
// sessions that all see the same snapshot once the consistent point is
// taken. The pool bounds the queries VERIFY runs on the server at once.
type server struct {
	node  *catalog.Node
	side  string
	shard int
	dsn   string
	all   []*pgx.Conn
	idle  chan *pgx.Conn
}

// String names the server in messages: "destination shard 1 (host:port/db)".
func (s *server) String() string {
	return fmt.Sprintf("%s shard %d (%s/%s)", s.side, s.shard, s.node.Addr(), s.node.Database)
}

// openServers connects size sessions to every node, all at once. setup,
// if not empty, runs on each session before it is used (outside any
// transaction). On a failure nothing stays open.
func openServers(ctx context.Context, cl *catalog.Cluster, dsns []string, side string, size int, setup string) ([]*server, error) {
	servers := make([]*server, len(dsns))
	for k := range dsns {
		servers[k] = &server{node: cl.Shards[k].Primary, side: side, shard: k, dsn: dsns[k],
			all: make([]*pgx.Conn, size), idle: make(chan *pgx.Conn, size)}
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range servers {
		for i := range size {
			g.Go(func() error {
				c, err := s.connect(gctx)
				if err == nil && setup != "" {
					if _, err = c.Exec(gctx, setup); err != nil {
						err = fmt.Errorf("prepare a session on %s: %w", s, err)
					}
				}
				s.all[i] = c
				return err
			})
		}
	}
	err := g.Wait()
	for _, s := range servers {
		for _, c := range s.all {
			if c != nil {
				s.idle <- c
			}
		}
	}
	if err != nil {
		closeServers(servers)
		return nil, err
	}
	return servers, nil
}

// connect opens one session. A failure is a job.Error with the server's
// SQLSTATE (28P01 for a wrong password) or 08006, naming the node.
func (s *server) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(s.dsn)
	if err != nil {
		return nil, job.Wrap("08006", err, "%s: %v", job.Unreachable(s.node), err)
	}
	for k, v := range sessionParams() {
		cfg.RuntimeParams[k] = v
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		code := "08006"
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			code = pe.Code
		}
		return nil, job.Wrap(code, err, "%s: %v", job.Unreachable(s.node), err)
	}
	return c, nil
}

// closeServers ends every session (their transactions with them).
func closeServers(servers []*server) {
	for _, s := range servers {
		if s == nil {
			continue
		}
		for _, c := range s.all {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}
}

// each runs fn on every session of the server at once.
func (s *server) each(ctx context.Context, fn func(ctx context.Context, c *pgx.Conn) error) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range s.all {
		g.Go(func() error { return fn(gctx, c) })
	}
	return g.Wait()
}

// tableError is a query that failed on a server whose session survived:
// the table it read cannot be compared, the others can.
type tableError struct {
	server *server
	err    error
}

func (e *tableError) Error() string { return fmt.Sprintf("%s: %v", e.server, e.err) }
func (e *tableError) Unwrap() error { return e.err }

// query runs one SELECT in the snapshot on an idle session and returns its
// rows in text format. The SELECT runs inside a savepoint, so that a
// failing one (a table that cannot be read) returns a *tableError and
// leaves the session and its snapshot usable. Any other failure (the
// connection, the context) is returned as is and ends the comparison.
func (s *server) query(ctx context.Context, sql string) ([][][]byte, error) {
	var c *pgx.Conn
	select {
	case c = <-s.idle:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { s.idle <- c }()
	results, err := c.PgConn().Exec(ctx, "SAVEPOINT reshard_verify; "+sql+"; RELEASE SAVEPOINT reshard_verify").ReadAll()
	if err == nil {
		for _, r := range results {
			if r.Err != nil {
				err = r.Err
			}
		}
	}
	if err == nil {
		if len(results) < 2 {
			return nil, fmt.Errorf("%s: %d results for one query", s, len(results))
		}
		return results[1].Rows, nil
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || c.IsClosed() || ctx.Err() != nil {
		return nil, fmt.Errorf("%s: %w", s, err)
	}
	if _, rerr := c.PgConn().Exec(ctx, "ROLLBACK TO SAVEPOINT reshard_verify").ReadAll(); rerr != nil {
		return nil, fmt.Errorf("%s: %w (and the session could not recover: %v)", s, err, rerr)
	}
	return nil, &tableError{server: s, err: err}
}

// onEach runs fn on every server at once and waits for all of them. A
// failure that ends the comparison cancels the others; a table's failure
// (tableError) does not, since cancelling a query closes its session and
// with it the snapshot. It returns the first failure that ends the
// comparison, else the first table's.
func onEach(ctx context.Context, servers []*server, fn func(ctx context.Context, i int, s *server) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(servers))
	var g errgroup.Group
	for i, s := range servers {
		g.Go(func() error {
			errs[i] = fn(ctx, i, s)
			if errs[i] != nil && !isTableError(errs[i]) {
				cancel()
			}
			return nil
		})
	}
	_ = g.Wait()
	var first error
	for _, err := range errs {
		switch {
		case err == nil:
		case !isTableError(err):
			return err
		case first == nil:
			first = err
		}
	}
	return first
}

func isTableError(err error) bool {
	var te *tableError
	return errors.As(err, &te)
}

// quote is a SQL string literal (standard_conforming_strings is on in
// every session).
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// ident is a quoted identifier.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }
