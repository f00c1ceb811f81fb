package cutover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/schema"
)

// RollbackRequest swaps a cut-over task back: the old database becomes the
// writable side again and the shards follow it.
type RollbackRequest struct {
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
func Rollback(ctx context.Context, j *job.Job, req RollbackRequest) error {
	log := j.Logger("rollback")
	g := j.Catalog.Config.General
	timeout := time.Duration(g.CutoverTimeout) * time.Millisecond
	deadline := time.Now().Add(timeout)
	src, dst := j.Source, j.Destination
	abort := func(format string, args ...any) error {
		return aborted(log, "rollback", "writes on the shards unblocked, reverse replication goes on: "+format, args...)
	}
	shardConns, err := j.ConnectDestinations(ctx)
	if err != nil {
		return abort("%v", err)
	}
	defer shardConns.Close()
	locks, err := j.ConnectDestinations(ctx)
	if err != nil {
		return abort("%v", err)
	}
	defer locks.Close()
	release := func() {
		for _, l := range locks {
			_, _ = l.Exec(context.Background(), "ROLLBACK")
		}
	}
	// The tables are the source publication's (the shards' own
	// publication can hold more, such as reshard's state).
	srcConn, err := j.ConnectSource(ctx, 0)
	if err != nil {
		return abort("%v", err)
	}
	tables, err := copier.Tables(ctx, srcConn, j.Publication, dst)
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
	if err := openToApplication(ctx, j.ConnectSources); err != nil {
		release()
		return err
	}
	if err := schema.MoveSourceSequences(ctx, j); err != nil {
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
		dsn, err := j.Catalog.ConnString(node, map[string]string{"replication": "database"})
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
