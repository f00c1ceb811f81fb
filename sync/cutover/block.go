package cutover

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sync/job"
)

// lockTables blocks writes to the tables: in a transaction on conn, it
// locks them IN SHARE MODE (reads go on, writes wait), waiting at most until
// deadline for writers in progress. Rolling the transaction back unblocks.
func lockTables(ctx context.Context, conn *pgx.Conn, names []string, deadline time.Time) error {
	remaining := time.Until(deadline)
	if remaining < 100*time.Millisecond {
		remaining = 100 * time.Millisecond
	}
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", remaining.Milliseconds())); err != nil {
		return err
	}
	_, err := conn.Exec(ctx, "LOCK TABLE "+strings.Join(names, ", ")+" IN SHARE MODE")
	return err
}

// closeToApplication makes database read-only for new sessions and ends
// the application's sessions on it (those waiting on lock's tables
// included); reshard's own sessions and lock's are spared.
func closeToApplication(ctx context.Context, conn *pgx.Conn, database string, lock *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{database}.Sanitize()+" SET default_transaction_read_only = on"); err != nil {
		return fmt.Errorf("make database %s read-only: %w", database, err)
	}
	var lockPID int
	if err := lock.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&lockPID); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND backend_type = 'client backend'
		  AND pid <> pg_backend_pid() AND pid <> $1 AND application_name NOT LIKE 'reshard%'`, lockPID); err != nil {
		return fmt.Errorf("end application sessions on %s: %w", database, err)
	}
	return nil
}

// openToApplication makes the databases of the connections connect opens
// (one per shard) writable for new sessions again (undoing
// closeToApplication).
func openToApplication(ctx context.Context, connect func(context.Context) (job.Conns, error)) error {
	conns, err := connect(ctx)
	if err != nil {
		return err
	}
	defer conns.Close()
	for _, c := range conns {
		if _, err := c.Exec(ctx, "SET default_transaction_read_only = off"); err != nil {
			return err
		}
		database := c.Config().Database
		if _, err := c.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{database}.Sanitize()+" RESET default_transaction_read_only"); err != nil {
			return fmt.Errorf("make %s on %s writable: %w", database, c.Config().Host, err)
		}
	}
	return nil
}
