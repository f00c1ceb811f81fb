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
// most threshold bytes. Once the budget is spent it gives up, or, with
// cutover_timeout_action = "cutover", returns so that writes are blocked
// anyway (the drain then applies what is left).
func waitLag(ctx context.Context, conns job.Conns, slots []string, threshold int64, bud budget) error {
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
		if bud.spent() {
			if bud.force {
				bud.log.Warn("replication lag still above cutover_traffic_stop_threshold at cutover_timeout: cutover_timeout_action = cutover blocks writes anyway", "lag_bytes", worst, "threshold", threshold)
				return nil
			}
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
// there, each waiting for the writers in progress within the budget (see
// lockTables for what happens once it is spent).
func blockWrites(ctx context.Context, connect func(context.Context) (job.Conns, error), shards []*catalog.Shard, tables []*copier.Table, bud budget) (*blocked, error) {
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
		if err := lockTables(ctx, conns[i], names, bud); err != nil {
			b.release()
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "55P03" {
				return nil, fmt.Errorf("could not block writes on %s within cutover_timeout (%s): a transaction kept writing (%s)", sh.Primary, bud.timeout, pe.Message)
			}
			return nil, fmt.Errorf("lock tables on %s: %w", sh.Primary, err)
		}
	}
	return b, nil
}

// drain waits until every slot (slots[i] on conns[i]) has confirmed the WAL
// position its node had under the locks (lag 0 for the locked tables).
// Once the budget is spent it gives up, or, with cutover_timeout_action =
// "cutover", keeps waiting with writes blocked until the stream has
// applied every change (the task's end, STOP_TASK, ends the wait).
func drain(ctx context.Context, locks, conns job.Conns, slots []string, bud budget) error {
	targets := make([]pglogrepl.LSN, len(locks))
	for i, l := range locks {
		var s string
		if err := l.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
			return err
		}
		lsn, err := pglogrepl.ParseLSN(s)
		if err != nil {
			return fmt.Errorf("the WAL position under the locks (%q): %w", s, err)
		}
		targets[i] = lsn
	}
	warned := false
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
		if bud.spent() {
			if !bud.force {
				return fmt.Errorf("the stream did not drain to lag 0 within cutover_timeout (%s): %s", bud.timeout, strings.Join(behind, ", "))
			}
			if !warned {
				warned = true
				bud.log.Warn("the stream did not drain within cutover_timeout: cutover_timeout_action = cutover keeps writes blocked until it has (STOP_TASK gives up and unblocks)", "behind", strings.Join(behind, ", "))
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// lockTables blocks writes to the tables: in a transaction on conn, it
// locks them IN SHARE MODE (reads go on, writes wait), waiting for
// writers in progress until the budget is spent. Then it gives up
// (SQLSTATE 55P03), or, with cutover_timeout_action = "cutover", ends the
// application sessions that hold or wait for a lock on the tables that
// conflicts with SHARE (their transactions roll back, as the commit point
// would end them anyway) and tries again. Rolling the transaction back
// unblocks.
func lockTables(ctx context.Context, conn *pgx.Conn, names []string, bud budget) error {
	for attempt := 0; ; attempt++ {
		remaining := time.Until(bud.deadline)
		if remaining < 100*time.Millisecond {
			remaining = 100 * time.Millisecond
		}
		if bud.force && bud.spent() {
			remaining = time.Second
		}
		err := tryLock(ctx, conn, names, remaining)
		var pe *pgconn.PgError
		if err == nil || !bud.force || !errors.As(err, &pe) || pe.Code != "55P03" || attempt >= 20 {
			return err
		}
		if _, rerr := conn.Exec(ctx, "ROLLBACK"); rerr != nil {
			return rerr
		}
		var ended int
		if qerr := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a
			WHERE a.datname = current_database() AND a.backend_type = 'client backend'
			  AND a.pid <> pg_backend_pid() AND a.application_name NOT LIKE 'reshard%'
			  AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'relation'
			    AND l.relation = ANY ($1::text[]::regclass[])
			    AND l.mode NOT IN ('AccessShareLock', 'RowShareLock', 'ShareLock'))`, names).Scan(&ended); qerr != nil {
			return fmt.Errorf("end the sessions writing to the tables: %w", qerr)
		}
		bud.log.Warn("writers kept the tables locked until cutover_timeout: cutover_timeout_action = cutover ended their sessions", "sessions", ended)
	}
}

// tryLock is one attempt of lockTables, waiting at most wait.
func tryLock(ctx context.Context, conn *pgx.Conn, names []string, wait time.Duration) error {
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", wait.Milliseconds())); err != nil {
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
