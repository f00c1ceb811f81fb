// Package slotsnap creates a logical replication slot that exports its
// snapshot, with the snapshot's rows protected from pruning while the slot
// is created.
//
// PostgreSQL leaves a window unprotected. While CREATE_REPLICATION_SLOT …
// EXPORT_SNAPSHOT runs, the rows the snapshot needs are held by the slot's
// temporary data xmin; the walsender's own xmin does not count yet, because
// the process is flagged as doing logical decoding. At the end of the
// command, ReplicationSlotRelease first clears the slot's data xmin, and
// only after that clears the flag. In between nothing holds the snapshot's
// xmin. Any backend that computes its pruning horizon then keeps it:
// it prunes row versions deleted or updated after the snapshot, on every page
// it reads, until it computes the horizon again. The copy then misses those
// rows, and the exported snapshot stays importable. Seen once under
// an UPDATE load (2,856 of 3,000 rows). Holding the walsender inside the
// window with a debugger reproduces it on PostgreSQL 15, 16, 17 and 18:
// TestSlotSnapshotWindow (tests/slot_snapshot_test.go) does.
//
// Create closes the window with a guard: an ordinary session that opens a
// REPEATABLE READ transaction before the slot is created and keeps it open
// until the command has returned. The guard's xmin is no newer than the
// slot snapshot's (both are the oldest transaction running at their time),
// and a plain backend's xmin always counts. After the command, the
// walsender's own xmin holds the snapshot for as long as it stays
// importable.
package slotsnap

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// GuardApplicationName is the application_name of the guard session, so an
// operator who sees it in pg_stat_activity knows what it is.
const GuardApplicationName = "reshard slot guard"

// Create creates the logical slot name with the pgoutput plugin on the
// replication connection repl, exporting its snapshot, while a guard
// session holds an xmin no newer than the snapshot's. The guard is an
// ordinary connection made from dsn, the connection string repl was made
// with (its replication parameter dropped); it is closed before Create
// returns.
func Create(ctx context.Context, repl *pgconn.PgConn, dsn, name string, temporary bool) (pglogrepl.CreateReplicationSlotResult, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return pglogrepl.CreateReplicationSlotResult{}, fmt.Errorf("slot %q guard: %w", name, err)
	}
	delete(cfg.RuntimeParams, "replication")
	cfg.RuntimeParams["application_name"] = GuardApplicationName
	guard, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return pglogrepl.CreateReplicationSlotResult{}, fmt.Errorf("slot %q guard: connect: %w", name, err)
	}
	defer guard.Close(context.Background())
	// A read-only transaction has no transaction id: slot creation does not
	// wait for it to reach its consistent point.
	if _, err := guard.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1").ReadAll(); err != nil {
		return pglogrepl.CreateReplicationSlotResult{}, fmt.Errorf("slot %q guard: take its snapshot: %w", name, err)
	}
	return pglogrepl.CreateReplicationSlot(ctx, repl, name, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: temporary, SnapshotAction: "EXPORT_SNAPSHOT"})
}
