package cutover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/stream"
)

// slotReleaseWait is how long a stopped stream's walsender gets to go away
// before it is terminated.
const slotReleaseWait = 5 * time.Second

// createSlots creates the pgoutput slot base (per shard <base>_<k> when the
// cluster has several) on every shard primary of cl; a slot already there
// (a re-run) is fine.
func createSlots(ctx context.Context, j *job.Job, cl *catalog.Cluster, base string) error {
	for i, name := range copier.SlotNames(base, len(cl.Shards)) {
		node := cl.Shards[i].Primary
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
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "42710" {
				return fmt.Errorf("create slot %s on %s: %w", name, node, err)
			}
		}
	}
	return nil
}

// dropSlots drops the slot base (per shard <base>_<k>) on each of the n
// shards connect reaches, as DropSlot does. Each shard is reached on its
// own: one that is down does not keep the slot on the others (a cutover
// undone while a shard is down leaves no reverse slot behind on the live
// ones); its error is returned.
func dropSlots(ctx context.Context, connect func(context.Context, int) (*pgx.Conn, error), n int, base string) error {
	var errs []error
	for i, name := range copier.SlotNames(base, n) {
		c, err := connect(ctx, i)
		if err != nil {
			errs = append(errs, fmt.Errorf("drop slot %s: %w", name, err))
			continue
		}
		if _, err := DropSlot(ctx, c, name); err != nil {
			errs = append(errs, err)
		}
		c.Close(context.Background())
	}
	return errors.Join(errs...)
}

// dropOrigins drops, on every shard k the connections of connect reach,
// the replication origins the streams of slot base (from each of sources
// shards) used there.
func dropOrigins(ctx context.Context, connect func(context.Context) (job.Conns, error), base string, sources int) error {
	conns, err := connect(ctx)
	if err != nil {
		return err
	}
	defer conns.Close()
	var errs []error
	for k, c := range conns {
		if _, err := DropOrigins(ctx, c, OriginNames(base, sources, k)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// OriginNames are the replication origins the streams of slot base (one
// per source shard, of sources) use on destination shard k.
func OriginNames(base string, sources, k int) []string {
	slots := copier.SlotNames(base, sources)
	out := make([]string, len(slots))
	for i, slot := range slots {
		out[i] = stream.OriginName(slot, k)
	}
	return out
}

// DropSlot drops a replication slot whose stream reshard has stopped. The
// walsender that served it may still be going away (the slot stays active
// until its session ends): it is waited for, then terminated if it
// lingers, so the slot never stays behind holding WAL. A slot that is
// already gone is fine; dropped tells whether there was one.
func DropSlot(ctx context.Context, conn *pgx.Conn, slot string) (dropped bool, err error) {
	start := time.Now()
	terminated := false
	for {
		var pid *int32
		err := conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return dropped, nil
		}
		if err != nil {
			return false, fmt.Errorf("drop replication slot %s: %w", slot, err)
		}
		if pid == nil {
			if _, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err == nil {
				return true, nil
			}
			// Taken again, or dropped meanwhile: look again.
		} else if time.Since(start) > slotReleaseWait && !terminated {
			if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, *pid); err != nil {
				return false, fmt.Errorf("drop replication slot %s: end its walsender (pid %d): %w", slot, *pid, err)
			}
			terminated = true
		}
		if time.Since(start) > 3*slotReleaseWait {
			return false, fmt.Errorf("drop replication slot %s: still in use after %s (pid %v): %v", slot, 3*slotReleaseWait, pidText(pid), err)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DropOrigins drops the named replication origins that exist on conn's
// server, waiting for a stopped stream's apply session to let go of one
// (55006 while it is in use); it returns the names it dropped.
func DropOrigins(ctx context.Context, conn *pgx.Conn, names []string) ([]string, error) {
	var dropped []string
	for _, name := range names {
		for start := time.Now(); ; {
			var n int
			err := conn.QueryRow(ctx, `SELECT count(pg_replication_origin_drop(roname)) FROM pg_replication_origin WHERE roname = $1`, name).Scan(&n)
			if err == nil {
				if n > 0 {
					dropped = append(dropped, name)
				}
				break
			}
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "55006" || time.Since(start) > 3*slotReleaseWait {
				return dropped, fmt.Errorf("drop replication origin %s: %w", name, err)
			}
			select {
			case <-ctx.Done():
				return dropped, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return dropped, nil
}

func pidText(pid *int32) string {
	if pid == nil {
		return "none"
	}
	return fmt.Sprint(*pid)
}
