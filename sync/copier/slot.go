package copier

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/slotsnap"
)

// snapshotSlot is a replication connection that created a logical slot with
// an exported snapshot. The snapshot stays importable while the connection
// stays idle, so it is kept open until the copy ends.
type snapshotSlot struct {
	conn     *pgconn.PgConn
	name     string
	snapshot string
	lsn      pglogrepl.LSN
}

// createSlot creates a pgoutput slot exporting its snapshot (guarded
// against pruning while it is created: see package slotsnap). A temporary
// slot disappears with the connection (used for a resumed copy's newer
// snapshot); a permanent one holds WAL for streaming.
func createSlot(ctx context.Context, cat *catalog.Catalog, node *catalog.Node, name string, temporary bool) (*snapshotSlot, error) {
	dsn, err := cat.ConnString(node, map[string]string{"replication": "database"})
	if err != nil {
		return nil, err
	}
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("replication connection to %s: %w", node, err)
	}
	res, err := slotsnap.Create(ctx, conn, dsn, name, temporary)
	if err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("create replication slot %q on %s: %w", name, node, err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("slot %q consistent point %q: %w", name, res.ConsistentPoint, err)
	}
	return &snapshotSlot{conn: conn, name: name, snapshot: res.SnapshotName, lsn: lsn}, nil
}

// close ends the replication connection (the exported snapshot with it).
func (s *snapshotSlot) close() {
	if s != nil && s.conn != nil {
		s.conn.Close(context.Background())
	}
}
