// Package job is what every stage of one migration shares: the source and
// destination clusters resolved from the catalog, the connection strings of
// their shards, the task the work belongs to, the progress registry and the
// logger. The stages (schema, copier, stream, verify, cutover) take a *Job
// and their own parameters; none of them resolves clusters or builds
// connection strings itself.
package job

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/progress"
)

// Spec names what a Job is built from.
type Spec struct {
	Catalog *catalog.Catalog
	// Source and Destination are cluster names; Publication is on the source.
	Source, Destination, Publication string
	// Task identifies the work in the progress registry ("cli" for a
	// foreground command).
	Task string
	// Registry receives progress; nil means a private one.
	Registry *progress.Registry
	// Logger is the parent logger; each stage names its own below it.
	Logger hclog.Logger
}

// Job is one migration's resolved clusters and connection strings.
type Job struct {
	Catalog *catalog.Catalog
	// Source and Destination are the resolved clusters.
	Source, Destination *catalog.Cluster
	Publication         string
	Task                string
	Registry            *progress.Registry
	// SourceDSN is each source shard primary's connection string, by shard.
	SourceDSN []string
	// SourceReplicaDSN holds each source shard's replicas' connection
	// strings, in catalog order (resharding_only ones first).
	SourceReplicaDSN [][]string
	// DestinationDSN is each destination shard primary's connection
	// string, by shard.
	DestinationDSN []string

	// destinationReplicaDSN is DestinationDSN's replicas, for Reversed.
	destinationReplicaDSN [][]string
	logger                hclog.Logger
}

// New resolves the spec's clusters and connection strings. An unknown
// cluster is an Error with SQLSTATE 3D000.
func New(s Spec) (*Job, error) {
	src, ok := s.Catalog.Cluster(s.Source)
	if !ok {
		return nil, Errorf("3D000", "database %q is not configured", s.Source)
	}
	dst, ok := s.Catalog.Cluster(s.Destination)
	if !ok {
		return nil, Errorf("3D000", "database %q is not configured", s.Destination)
	}
	j := &Job{Catalog: s.Catalog, Source: src, Destination: dst, Publication: s.Publication, Task: s.Task,
		Registry: s.Registry, logger: s.Logger}
	if j.Registry == nil {
		j.Registry = progress.NewRegistry()
	}
	if j.logger == nil {
		j.logger = hclog.NewNullLogger()
	}
	var err error
	if j.SourceDSN, j.SourceReplicaDSN, err = connStrings(s.Catalog, src); err != nil {
		return nil, err
	}
	if j.DestinationDSN, j.destinationReplicaDSN, err = connStrings(s.Catalog, dst); err != nil {
		return nil, err
	}
	return j, nil
}

// connStrings are the connection strings of a cluster's shard primaries
// and, per shard, of its replicas.
func connStrings(cat *catalog.Catalog, cl *catalog.Cluster) (primaries []string, replicas [][]string, err error) {
	for _, sh := range cl.Shards {
		dsn, err := cat.ConnString(sh.Primary, nil)
		if err != nil {
			return nil, nil, err
		}
		primaries = append(primaries, dsn)
		var rs []string
		for _, r := range sh.Replicas {
			dsn, err := cat.ConnString(r, nil)
			if err != nil {
				return nil, nil, err
			}
			rs = append(rs, dsn)
		}
		replicas = append(replicas, rs)
	}
	return primaries, replicas, nil
}

// Reversed is the same migration seen from the other side: the destination
// streams back into the source (reverse replication after a cutover).
func (j *Job) Reversed() *Job {
	r := *j
	r.Source, r.Destination = j.Destination, j.Source
	r.SourceDSN, r.DestinationDSN = j.DestinationDSN, j.SourceDSN
	r.SourceReplicaDSN, r.destinationReplicaDSN = j.destinationReplicaDSN, j.SourceReplicaDSN
	return &r
}

// writableOption is the startup option that makes a session writable in a
// database reshard made read-only for the application (ALTER DATABASE ...
// SET default_transaction_read_only = on, at cutover and rollback). A
// startup option outranks the database's setting.
const writableOption = "options=-cdefault_transaction_read_only%3Doff"

// WritableDestination is the job with sessions to its destination that
// stay writable where reshard closed the destination to the application:
// a stream into the old database after a cutover, or into the shards
// after a rollback, writes there (rows, origins, its bookkeeping).
func (j *Job) WritableDestination() *Job {
	w := *j
	w.DestinationDSN = make([]string, len(j.DestinationDSN))
	for k, dsn := range j.DestinationDSN {
		w.DestinationDSN[k] = withOption(dsn, writableOption)
	}
	return &w
}

// withOption adds a URL query parameter (already encoded) to a connection
// URL.
func withOption(dsn, param string) string {
	if strings.Contains(dsn, "?") {
		return dsn + "&" + param
	}
	return dsn + "?" + param
}

// Logger is the logger of one component of the job ("copy", "cutover").
func (j *Job) Logger(component string) hclog.Logger { return j.logger.Named(component) }

// ParentLogger is the logger the stages name theirs below (for a stage
// that is not yet built on Job).
func (j *Job) ParentLogger() hclog.Logger { return j.logger }

// Conns are open connections, one per shard, closed together.
type Conns []*pgx.Conn

// Close closes every connection.
func (c Conns) Close() {
	for _, conn := range c {
		if conn != nil {
			conn.Close(context.Background())
		}
	}
}

// ConnectSources opens one connection to every source shard primary, all
// at once; on a failure none stays open.
func (j *Job) ConnectSources(ctx context.Context) (Conns, error) {
	return connectAll(ctx, j.Source, j.SourceDSN)
}

// ConnectDestinations opens one connection to every destination shard
// primary, all at once; on a failure none stays open.
func (j *Job) ConnectDestinations(ctx context.Context) (Conns, error) {
	return connectAll(ctx, j.Destination, j.DestinationDSN)
}

// ConnectSource opens a connection to source shard k's primary.
func (j *Job) ConnectSource(ctx context.Context, k int) (*pgx.Conn, error) {
	return connect(ctx, j.Source.Shards[k].Primary, j.SourceDSN[k])
}

// ConnectDestination opens a connection to destination shard k's primary.
func (j *Job) ConnectDestination(ctx context.Context, k int) (*pgx.Conn, error) {
	return connect(ctx, j.Destination.Shards[k].Primary, j.DestinationDSN[k])
}

func connectAll(ctx context.Context, cl *catalog.Cluster, dsns []string) (Conns, error) {
	conns := make(Conns, len(dsns))
	g, gctx := errgroup.WithContext(ctx)
	for k := range dsns {
		g.Go(func() error {
			c, err := connect(gctx, cl.Shards[k].Primary, dsns[k])
			conns[k] = c
			return err
		})
	}
	if err := g.Wait(); err != nil {
		conns.Close()
		return nil, err
	}
	return conns, nil
}

// connect opens a connection to node. A failure is an Error with the
// server's SQLSTATE (a wrong password: 28P01) or 08006, naming the node.
func connect(ctx context.Context, node *catalog.Node, dsn string) (*pgx.Conn, error) {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		code := "08006"
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			code = pe.Code
		}
		return nil, Wrap(code, err, "%s: %v", Unreachable(node), err)
	}
	return c, nil
}

// Unreachable is how errors name a node that cannot be connected to.
func Unreachable(node *catalog.Node) string {
	role := ""
	if node.Role == "replica" {
		role = " replica"
	}
	return fmt.Sprintf("cannot connect to %s shard %d%s at %s/%s", node.Cluster, node.Shard, role, node.Addr(), node.Database)
}
