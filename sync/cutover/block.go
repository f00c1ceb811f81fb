package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/job"
)

// waitLag waits until every slot's lag (on its node's connection) is at
// most threshold bytes, or deadline passes.
func waitLag(ctx context.Context, conns job.Conns, slots []string, threshold int64, deadline time.Time) error {
	for {
		worst := int64(0)
		for i, c := range conns {
			l, _, err := lag(ctx, c, slots[i])
			if err != nil {
				return err
			}
			worst = max(worst, l)
		}
		if worst <= threshold {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replication lag %d bytes stayed above cutover_traffic_stop_threshold (%d) until cutover_timeout", worst, threshold)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// blocked holds the sessions whose transactions lock the published tables
// of one side in SHARE mode: reads go on, writes wait.
type blocked struct {
	conns job.Conns
	done  bool
}

// release rolls the lock transactions back (unblocking the writers) and
// closes their sessions; a second call does nothing.
func (b *blocked) release() {
	if b == nil || b.done {
		return
	}
	b.done = true
	for _, l := range b.conns {
		_, _ = l.Exec(context.Background(), "ROLLBACK")
	}
	b.conns.Close()
}

// blockWrites opens a session per shard (connect) and locks the tables
// there, each waiting at most until deadline for writers in progress.
func blockWrites(ctx context.Context, connect func(context.Context) (job.Conns, error), shards []*catalog.Shard, tables []*copier.Table, deadline time.Time, timeout time.Duration) (*blocked, error) {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.Qualified()
	}
	conns, err := connect(ctx)
	if err != nil {
		return nil, err
	}
	b := &blocked{conns: conns}
	for i, sh := range shards {
		if err := lockTables(ctx, conns[i], names, deadline); err != nil {
			b.release()
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "55P03" {
				return nil, fmt.Errorf("could not block writes on %s within cutover_timeout (%s): a transaction kept writing (%s)", sh.Primary, timeout, pe.Message)
			}
			return nil, fmt.Errorf("lock tables on %s: %w", sh.Primary, err)
		}
	}
	return b, nil
}

// drain waits until every slot (slots[i] on conns[i]) has confirmed the WAL
// position its node had under the locks (lag 0 for the locked tables).
func drain(ctx context.Context, locks, conns job.Conns, slots []string, deadline time.Time, timeout time.Duration) error {
	targets := make([]pglogrepl.LSN, len(locks))
	for i, l := range locks {
		var s string
		if err := l.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
			return err
		}
		targets[i], _ = pglogrepl.ParseLSN(s)
	}
	for {
		var behind []string
		for i, c := range conns {
			_, confirmed, err := lag(ctx, c, slots[i])
			if err != nil {
				return err
			}
			if confirmed < targets[i] {
				behind = append(behind, fmt.Sprintf("slot %s confirmed %s of %s", slots[i], confirmed, targets[i]))
			}
		}
		if len(behind) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the stream did not drain to lag 0 within cutover_timeout (%s): %s", timeout, strings.Join(behind, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

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
	// The commit point must survive a crash of the server right after it
	// (a server running with synchronous_commit = off would lose it).
	if _, err := conn.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		return err
	}
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

// OpenToApplication makes the databases of the n shards connect reaches
// (connect(ctx, k) for shard k) writable for new sessions again (undoing
// closeToApplication). Each shard is reached on its own: one that is down
// does not keep the others closed; its error is returned.
func OpenToApplication(ctx context.Context, connect func(context.Context, int) (*pgx.Conn, error), n int) error {
	var errs []error
	for k := 0; k < n; k++ {
		c, err := connect(ctx, k)
		if err != nil {
			errs = append(errs, fmt.Errorf("make shard %d writable: %w", k, err))
			continue
		}
		errs = append(errs, openOne(ctx, c))
		c.Close(context.Background())
	}
	return errors.Join(errs...)
}

func openOne(ctx context.Context, c *pgx.Conn) error {
	if _, err := c.Exec(ctx, "SET default_transaction_read_only = off; SET synchronous_commit = on"); err != nil {
		return err
	}
	database := c.Config().Database
	if _, err := c.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{database}.Sanitize()+" RESET default_transaction_read_only"); err != nil {
		return fmt.Errorf("make %s on %s writable: %w", database, c.Config().Host, err)
	}
	return nil
}
