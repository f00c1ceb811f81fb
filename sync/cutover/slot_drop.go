package cutover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// slotReleaseWait is how long a stopped stream's walsender gets to go away
// before it is terminated.
const slotReleaseWait = 5 * time.Second

// dropSlot drops a replication slot whose stream reshard has stopped. The
// walsender that served it may still be going away (the slot stays active
// until its session ends): it is waited for, then terminated if it
// lingers, so the slot never stays behind holding WAL. A slot that is
// already gone is fine.
func dropSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	start := time.Now()
	terminated := false
	for {
		var pid *int32
		err := conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("drop replication slot %s: %w", slot, err)
		}
		if pid == nil {
			if _, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err == nil {
				return nil
			}
			// Taken again, or dropped meanwhile: look again.
		} else if time.Since(start) > slotReleaseWait && !terminated {
			if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, *pid); err != nil {
				return fmt.Errorf("drop replication slot %s: end its walsender (pid %d): %w", slot, *pid, err)
			}
			terminated = true
		}
		if time.Since(start) > 3*slotReleaseWait {
			return fmt.Errorf("drop replication slot %s: still in use after %s (pid %v): %v", slot, 3*slotReleaseWait, pidText(pid), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func pidText(pid *int32) string {
	if pid == nil {
		return "none"
	}
	return fmt.Sprint(*pid)
}
