package stream

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sync/progress"
)

// lagPoller reads a slot's lag from the source every second,
// pg_current_wal_lsn() - confirmed_flush_lsn, and the WAL it retains,
// pg_current_wal_lsn() - restart_lsn, into the slot's progress.
type lagPoller struct {
	dsn    string
	slot   string
	status *progress.Slot
}

// run polls until ctx ends, reconnecting when the source goes away.
func (l lagPoller) run(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if conn == nil {
			if c, err := pgx.Connect(ctx, l.dsn); err == nil {
				conn = c
			}
		}
		if conn != nil {
			var lag, retained *int64
			err := conn.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, (pg_current_wal_lsn() - restart_lsn)::bigint
FROM pg_replication_slots WHERE slot_name = $1`, l.slot).Scan(&lag, &retained)
			if err == nil && lag != nil {
				l.status.Lag(*lag)
			}
			if err == nil && retained != nil {
				l.status.Retained(*retained)
			}
			if err != nil {
				conn.Close(context.Background())
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
