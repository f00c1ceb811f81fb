package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// applier applies changes on one destination shard. Its replication origin
// records, in the same transaction as the changes, the commit LSN of the
// last source transaction applied, so a restart knows exactly what the
// shard has.
type applier struct {
	shard  int
	dsn    string
	origin string
	conn   *pgx.Conn
	// applied is the origin's position when the stream (re)started: source
	// transactions committed at or before it are already on this shard.
	// It is set on connect only (the router reads it while the shard's
	// worker applies).
	applied pglogrepl.LSN
	stmts   map[string]string // SQL -> prepared statement name
	inTx    bool
	// timeout bounds the rollback of a failed transaction.
	timeout time.Duration
}

// OriginName is the replication origin of a slot on a destination shard.
func OriginName(slot string, shard int) string {
	name := fmt.Sprintf("reshard_%s_%d", slot, shard)
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}

func (a *applier) connect(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, a.dsn)
	if err != nil {
		return fmt.Errorf("connect to destination shard %d: %w", a.shard, err)
	}
	setup := []string{
		// As PostgreSQL's own subscriber: replayed rows fire no triggers
		// and no foreign-key checks.
		"SET session_replication_role = replica",
		"SET synchronous_commit = off",
		// At cutover the old database is read-only by default for the
		// application; reshard's own apply sessions still write there.
		"SET default_transaction_read_only = off",
		// Statements are prepared once and run many times with new rows:
		// plan them once.
		"SET plan_cache_mode = force_generic_plan",
		// Values read back in text form (the rows a move takes) are exact
		// and read the same in any session.
		"SET extra_float_digits = 3",
		"SET DateStyle = ISO",
		"SET IntervalStyle = postgres",
	}
	for _, s := range setup {
		if _, err := conn.Exec(ctx, s); err != nil {
			conn.Close(context.Background())
			return fmt.Errorf("destination shard %d: %s: %w", a.shard, s, err)
		}
	}
	if _, err := conn.Exec(ctx, `SELECT pg_replication_origin_create($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)`, a.origin); err != nil {
		conn.Close(context.Background())
		return fmt.Errorf("destination shard %d: create replication origin %s: %w", a.shard, a.origin, err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_replication_origin_session_setup($1)`, a.origin); err != nil {
		conn.Close(context.Background())
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "55006" {
			// Still held by the session of a reshard that died moments ago
			// (its backend has not noticed yet), or by another reshard
			// streaming this slot: retried with backoff (job.Retryable).
			return fmt.Errorf("destination shard %d: replication origin %s is in use (another reshard streaming this slot, or one that just died): %w", a.shard, a.origin, err)
		}
		return fmt.Errorf("destination shard %d: set up replication origin %s: %w", a.shard, a.origin, err)
	}
	var lsn *string
	if err := conn.QueryRow(ctx, `SELECT pg_replication_origin_progress($1, false)::text`, a.origin).Scan(&lsn); err != nil {
		conn.Close(context.Background())
		return err
	}
	a.applied = 0
	if lsn != nil {
		if a.applied, err = pglogrepl.ParseLSN(*lsn); err != nil {
			conn.Close(context.Background())
			return err
		}
	}
	a.conn, a.stmts, a.inTx = conn, map[string]string{}, false
	return nil
}

func (a *applier) close() {
	if a.conn != nil {
		a.conn.Close(context.Background())
		a.conn = nil
	}
}

// flushed is the origin position the shard has durably flushed.
func (a *applier) flushed(ctx context.Context, conn *pgx.Conn) (pglogrepl.LSN, error) {
	var lsn *string
	if err := conn.QueryRow(ctx, `SELECT pg_replication_origin_progress($1, true)::text`, a.origin).Scan(&lsn); err != nil {
		return 0, err
	}
	if lsn == nil {
		return 0, nil
	}
	return pglogrepl.ParseLSN(*lsn)
}

func (a *applier) begin(ctx context.Context) error {
	if a.inTx {
		return nil
	}
	if _, err := a.conn.PgConn().Exec(ctx, "BEGIN").ReadAll(); err != nil {
		return err
	}
	a.inTx = true
	return nil
}

// prepared returns the name of sql prepared on this connection (once per
// statement text: per relation and column set).
func (a *applier) prepared(ctx context.Context, sql string) (string, error) {
	if name, ok := a.stmts[sql]; ok {
		return name, nil
	}
	name := "rs" + strconv.Itoa(len(a.stmts)+1)
	if _, err := a.conn.PgConn().Prepare(ctx, name, sql, nil); err != nil {
		return "", fmt.Errorf("prepare %q: %w", sql, err)
	}
	a.stmts[sql] = name
	return name, nil
}

// exec runs a statement with text parameters (types inferred from the
// destination's columns) and returns the rows it affected.
func (a *applier) exec(ctx context.Context, sql string, args [][]byte) (int64, error) {
	name, err := a.prepared(ctx, sql)
	if err != nil {
		return 0, err
	}
	tag, err := a.conn.PgConn().ExecPrepared(ctx, name, args, nil, nil).Close()
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// commit records lsn as the origin's position and commits. wrote tells
// whether the transaction changed anything: one whose statements all found
// nothing to change (a probe of a row that is not on the shard) has no
// transaction id, and PostgreSQL then writes no commit record and leaves
// the origin where it was; there is nothing of it to lose either.
func (a *applier) commit(ctx context.Context, lsn pglogrepl.LSN, ts time.Time) (wrote bool, err error) {
	if !a.inTx {
		return false, nil
	}
	if err := a.conn.QueryRow(ctx, `SELECT pg_current_xact_id_if_assigned() IS NOT NULL FROM pg_replication_origin_xact_setup($1::text::pg_lsn, $2)`,
		lsn.String(), ts).Scan(&wrote); err != nil {
		return false, fmt.Errorf("destination shard %d: origin position: %w", a.shard, err)
	}
	if _, err := a.conn.PgConn().Exec(ctx, "COMMIT").ReadAll(); err != nil {
		return false, fmt.Errorf("destination shard %d: commit: %w", a.shard, err)
	}
	a.inTx = false
	return wrote, nil
}

func (a *applier) rollback() {
	if a.inTx && a.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		defer cancel()
		_, _ = a.conn.PgConn().Exec(ctx, "ROLLBACK").ReadAll()
		a.inTx = false
	}
}

// pipelineSize bounds how many statements go to a shard in one pipeline.
const pipelineSize = 2000

// apply runs statements of one shard's part of a batch in its
// transaction (begun if need be, left open). The statements are pipelined
// (sent without waiting for each answer), so a shard costs a round trip per
// pipeline, not per row. It returns the arrivals that found no row here
// (in order) and the rows the probes took off this shard.
func (a *applier) apply(ctx context.Context, ops []op) (arrivals []op, took []probed, err error) {
	bctx, cancel := context.WithTimeout(ctx, a.timeout)
	err = a.begin(bctx)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("destination shard %d: begin: %w", a.shard, err)
	}
	fail := func(err error) ([]op, []probed, error) {
		a.rollback()
		return nil, nil, err
	}
	sent := make([]int, 0, pipelineSize) // positions in ops of the statements sent
	for lo := 0; lo < len(ops); lo += pipelineSize {
		hi := min(lo+pipelineSize, len(ops))
		batch := &pgconn.Batch{}
		sent = sent[:0]
		pctx, cancel := context.WithTimeout(ctx, a.timeout)
		for i, o := range ops[lo:hi] {
			if o.sql == "" {
				continue // an arrival of a known move: nothing to run here
			}
			name, err := a.prepared(pctx, o.sql)
			if err != nil {
				cancel()
				return fail(fmt.Errorf("destination shard %d: %w", a.shard, err))
			}
			batch.ExecPrepared(name, o.args, nil, nil)
			sent = append(sent, lo+i)
		}
		var results []*pgconn.Result
		if len(sent) > 0 {
			results, err = a.conn.PgConn().ExecBatch(pctx, batch).ReadAll()
		}
		cancel()
		if err != nil {
			// Name the statement that failed.
			failed := ops[sent[0]]
			if n := len(results); n > 0 && n <= len(sent) {
				failed = ops[sent[n-1]]
			}
			return fail(fmt.Errorf("destination shard %d: %s: %w", a.shard, abbrevSQL(failed.sql), err))
		}
		r := 0
		for i := lo; i < hi; i++ {
			o := ops[i]
			if o.sql == "" {
				arrivals = append(arrivals, o)
				continue
			}
			res := results[r]
			r++
			switch {
			case o.probe && len(res.Rows) > 0:
				took = append(took, probed{op: o, row: res.Rows[0]})
			case o.arrive != nil && res.CommandTag.RowsAffected() == 0:
				arrivals = append(arrivals, o)
			}
		}
	}
	return arrivals, took, nil
}

// probed is a row a probe took off a shard.
type probed struct {
	op  op
	row [][]byte
}

// commitAt records lsn as the origin's position and commits, bounded by
// the network timeout; wrote as commit.
func (a *applier) commitAt(ctx context.Context, lsn pglogrepl.LSN) (wrote bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	return a.commit(ctx, lsn, time.Now())
}

// abbrevSQL shortens a statement for a message (merged statements run to
// thousands of parameters).
func abbrevSQL(sql string) string {
	if len(sql) > 300 {
		return sql[:300] + "…"
	}
	return sql
}

// setupMovedRows creates the table that records the rows moved off this
// shard (see mover), if it is not there.
func (a *applier) setupMovedRows(ctx context.Context) error {
	tx, err := a.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("destination shard %d: %w", a.shard, err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, movedRowsSetup); err != nil {
		return fmt.Errorf("destination shard %d: create %s: %w", a.shard, movedRowsTable, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("destination shard %d: create %s: %w", a.shard, movedRowsTable, err)
	}
	return nil
}
