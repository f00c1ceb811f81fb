package cutover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/schema"
)

// RollbackRequest swaps a cut-over task back: the old database becomes the
// writable side again and the shards follow it.
type RollbackRequest struct {
	Request
	// ReverseSlot is the reverse stream's slot on the shards.
	ReverseSlot string
	// StopReverse stops the reverse stream and waits for it.
	StopReverse func() error
	// NewSlot is the name of the forward slot to create on the source.
	NewSlot string
}

// Rollback mirrors Run: writes blocked on the shards (SHARE locks within
// cutover_timeout), the reverse stream drained and stopped, the old
// database writable again with its sequences moved above every shard's
// values, the shards read-only for new sessions, new forward slots created
// on the old database. Until the reverse stream is stopped any failure
// aborts and leaves the shards writable.
func Rollback(ctx context.Context, req RollbackRequest) error {
	log := req.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log = log.Named("rollback")
	g := req.Catalog.Config.General
	timeout := time.Duration(g.CutoverTimeout) * time.Millisecond
	deadline := time.Now().Add(timeout)
	src, _ := req.Catalog.Cluster(req.Source)
	dst, _ := req.Catalog.Cluster(req.Destination)
	abort := func(format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		log.Warn("rollback aborted", "reason", msg)
		return &Error{Code: "57014", Message: "rollback aborted, writes on the shards unblocked, reverse replication goes on: " + msg}
	}
	connect := func(shard int, cluster string) (*pgx.Conn, error) {
		cl, _ := req.Catalog.Cluster(cluster)
		dsn, err := req.Catalog.ConnString(cl.Shards[shard].Primary, nil)
		if err != nil {
			return nil, err
		}
		return pgx.Connect(ctx, dsn)
	}
	shardConns := make([]*pgx.Conn, len(dst.Shards))
	locks := make([]*pgx.Conn, len(dst.Shards))
	defer func() {
		for _, c := range append(shardConns, locks...) {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	release := func() {
		for _, l := range locks {
			if l != nil {
				_, _ = l.Exec(context.Background(), "ROLLBACK")
			}
		}
	}
	for k := range dst.Shards {
		var err error
		if shardConns[k], err = connect(k, req.Destination); err != nil {
			return abort("%v", err)
		}
		if locks[k], err = connect(k, req.Destination); err != nil {
			return abort("%v", err)
		}
	}
	// The tables are the source publication's (the shards' own
	// publication can hold more, such as reshard's state).
	srcConn, err := connect(0, req.Source)
	if err != nil {
		return abort("%v", err)
	}
	tables, err := copier.Tables(ctx, srcConn, req.Publication, dst)
	srcConn.Close(context.Background())
	if err != nil {
		return abort("%v", err)
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.Qualified()
	}
	for k, l := range locks {
		if err := lockTables(ctx, l, names, deadline); err != nil {
			release()
			return abort("could not block writes on shard %d within cutover_timeout (%s): %v", k, timeout, err)
		}
	}
	// Drain the reverse stream.
	reverse := copier.SlotNames(req.ReverseSlot, len(dst.Shards))
	for k, l := range locks {
		var target string
		if err := l.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&target); err != nil {
			release()
			return abort("%v", err)
		}
		want, _ := pglogrepl.ParseLSN(target)
		for {
			_, confirmed, err := lag(ctx, shardConns[k], reverse[k])
			if err != nil {
				release()
				return abort("%v", err)
			}
			if confirmed >= want {
				break
			}
			if time.Now().After(deadline) {
				release()
				return abort("the reverse stream did not drain within cutover_timeout (%s)", timeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := req.StopReverse(); err != nil && !errors.Is(err, context.Canceled) {
		release()
		return fmt.Errorf("stop the reverse stream: %w", err)
	}
	// The old database takes the writes again.
	for _, sh := range src.Shards {
		if err := openToApplication(ctx, req.Catalog, sh.Primary); err != nil {
			release()
			return err
		}
	}
	if err := schema.MoveSourceSequences(ctx, req.Catalog, req.Source, req.Destination, log); err != nil {
		release()
		return err
	}
	for k, sh := range dst.Shards {
		if err := closeToApplication(ctx, shardConns[k], sh.Primary.Database, locks[k]); err != nil {
			release()
			return fmt.Errorf("shard %d: %w", k, err)
		}
		if err := dropSlot(ctx, shardConns[k], reverse[k]); err != nil {
			log.Warn("could not drop the reverse slot: drop it by hand", "slot", reverse[k], "error", err)
		}
	}
	release()
	// New forward slots: the shards follow the old database from here.
	for i, name := range copier.SlotNames(req.NewSlot, len(src.Shards)) {
		node := src.Shards[i].Primary
		dsn, err := req.Catalog.ConnString(node, map[string]string{"replication": "database"})
		if err != nil {
			return err
		}
		rc, err := pgconn.Connect(ctx, dsn)
		if err != nil {
			return fmt.Errorf("replication connection to %s: %w", node, err)
		}
		_, err = pglogrepl.CreateReplicationSlot(ctx, rc, name, "pgoutput", pglogrepl.CreateReplicationSlotOptions{SnapshotAction: "NOEXPORT_SNAPSHOT"})
		rc.Close(context.Background())
		if err != nil {
			return fmt.Errorf("create forward slot %s on %s: %w", name, node, err)
		}
	}
	log.Info("rolled back: the old database is the writable side again; the shards follow it", "slot", req.NewSlot)
	return nil
}
