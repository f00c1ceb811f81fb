package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
			// streaming this slot: retried with backoff.
			return fmt.Errorf("destination shard %d: replication origin %s is in use (another reshard streaming this slot, or one that just died): %w", a.shard, a.origin, errors.Join(err, errReconnect))
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

// query runs a statement returning one row of text values (or none).
func (a *applier) query(ctx context.Context, sql string, args [][]byte) ([][]byte, bool, error) {
	name, ok := a.stmts[sql]
	if !ok {
		name = "rs" + strconv.Itoa(len(a.stmts)+1)
		if _, err := a.conn.PgConn().Prepare(ctx, name, sql, nil); err != nil {
			return nil, false, fmt.Errorf("prepare %q: %w", sql, err)
		}
		a.stmts[sql] = name
	}
	rr := a.conn.PgConn().ExecPrepared(ctx, name, args, nil, nil)
	var row [][]byte
	found := false
	for rr.NextRow() {
		if !found {
			for _, v := range rr.Values() {
				if v == nil {
					row = append(row, nil)
				} else {
					row = append(row, append([]byte{}, v...))
				}
			}
			found = true
		}
	}
	_, err := rr.Close()
	return row, found, err
}

// commit records lsn as the origin's position and commits.
func (a *applier) commit(ctx context.Context, lsn pglogrepl.LSN, ts time.Time) error {
	if !a.inTx {
		return nil
	}
	if _, err := a.conn.Exec(ctx, `SELECT pg_replication_origin_xact_setup($1::text::pg_lsn, $2)`, lsn.String(), ts); err != nil {
		return fmt.Errorf("destination shard %d: origin position: %w", a.shard, err)
	}
	if _, err := a.conn.PgConn().Exec(ctx, "COMMIT").ReadAll(); err != nil {
		return fmt.Errorf("destination shard %d: commit: %w", a.shard, err)
	}
	a.inTx = false
	return nil
}

func (a *applier) rollback() {
	if a.inTx && a.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		defer cancel()
		_, _ = a.conn.PgConn().Exec(ctx, "ROLLBACK").ReadAll()
		a.inTx = false
	}
}

// statement builders

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

func insertSQL(r *relation, cols []int) string {
	names := make([]string, len(cols))
	params := make([]string, len(cols))
	for i, c := range cols {
		names[i] = quoteIdent(r.columns[c])
		params[i] = "$" + strconv.Itoa(i+1)
	}
	return fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", r.qualified, strings.Join(names, ", "), strings.Join(params, ", "))
}

// whereKey builds the WHERE clause locating a row by its replica identity,
// parameters numbered from first. With REPLICA IDENTITY FULL every
// column present is compared, NULL-safe, and one matching row is chosen.
func whereKey(r *relation, keyCols []int, first int) string {
	conds := make([]string, len(keyCols))
	for i, c := range keyCols {
		if r.identity == 'f' {
			conds[i] = fmt.Sprintf("%s IS NOT DISTINCT FROM $%d", quoteIdent(r.columns[c]), first+i)
		} else {
			conds[i] = fmt.Sprintf("%s = $%d", quoteIdent(r.columns[c]), first+i)
		}
	}
	w := strings.Join(conds, " AND ")
	if r.identity == 'f' {
		return fmt.Sprintf("ctid = (SELECT ctid FROM %s WHERE %s LIMIT 1)", r.qualified, w)
	}
	return w
}

// keyOf returns the positions and values identifying the row: the old row
// when pgoutput sent one (identity changed, or REPLICA IDENTITY FULL), else
// the key columns of the new row.
func keyOf(r *relation, c *change) ([]int, [][]byte, error) {
	src := c.oldRow
	cols := r.key
	if src == nil {
		src = c.newRow
	}
	if r.identity == 'f' && c.oldRow != nil {
		cols = nil
		for i, v := range c.oldRow {
			if !v.toasted {
				cols = append(cols, i)
			}
		}
	}
	if len(cols) == 0 {
		return nil, nil, fmt.Errorf("%s has no replica identity: its updates and deletes cannot be applied", r)
	}
	vals := make([][]byte, len(cols))
	for i, k := range cols {
		if k >= len(src) || src[k].toasted {
			return nil, nil, fmt.Errorf("%s: key column %s missing from the change", r, r.columns[k])
		}
		if !src[k].null {
			vals[i] = src[k].data
		}
	}
	return cols, vals, nil
}

func isConnErr(err error) bool {
	if err == nil {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// 57014 query_canceled is no lost connection: reshard cancels
		// nothing itself (its deadlines close the connection), so a server
		// setting (statement_timeout) or an operator cancelled the
		// statement, and trying again cannot help.
		return pe.Code != "57014" && (strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57"))
	}
	return true
}
