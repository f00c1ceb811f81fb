package copier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/sync/progress"
)

// worker copies units from one source shard: one source connection (to
// the shard's primary or one of its replicas: node) inside a REPEATABLE
// READ transaction on the node's exported snapshot, and one connection per
// destination shard.
type worker struct {
	run   *copyRun
	shard int // source shard
	node  *copyNode
	src   *pgx.Conn
	// inTx: src is inside its transaction on the snapshot. Each unit has
	// its own, so the locks a unit takes on the source end with it.
	inTx bool
	dst  []*pgx.Conn
}

func (w *worker) close() {
	if w.src != nil {
		w.src.Close(context.Background())
		w.src = nil
	}
	for i, c := range w.dst {
		if c != nil {
			c.Close(context.Background())
			w.dst[i] = nil
		}
	}
}

// openSource connects to the source shard (its node) and imports the
// snapshot in a transaction for the next unit.
func (w *worker) openSource(ctx context.Context) error {
	if w.src == nil {
		conn, err := pgx.Connect(ctx, w.node.dsn)
		if err != nil {
			return fmt.Errorf("connect to source shard %d %s: %w", w.shard, w.node.label(), err)
		}
		w.src, w.inTx = conn, false
	}
	if w.inTx {
		return nil
	}
	if _, err := w.src.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return err
	}
	if _, err := w.src.Exec(ctx, fmt.Sprintf("SET TRANSACTION SNAPSHOT '%s'", w.node.slot.snapshot)); err != nil {
		return fmt.Errorf("import snapshot %s on source shard %d %s: %w", w.node.slot.snapshot, w.shard, w.node.label(), err)
	}
	w.inTx = true
	return nil
}

// endUnit ends the unit's transaction on the source (releasing the locks
// it took: DDL on a copied table need not wait for the whole copy).
func (w *worker) endUnit(ctx context.Context) error {
	if w.src == nil || !w.inTx {
		return nil
	}
	w.inTx = false
	_, err := w.src.Exec(ctx, "COMMIT")
	return err
}

// destination returns the connection to destination shard k.
func (w *worker) destination(ctx context.Context, k int) (*pgx.Conn, error) {
	if w.dst[k] != nil {
		return w.dst[k], nil
	}
	conn, err := pgx.Connect(ctx, w.run.dstDSN[k])
	if err != nil {
		return nil, fmt.Errorf("connect to destination shard %d: %w", k, err)
	}
	// Replayed rows are data, not application events: no triggers, no FK
	// checks (as PostgreSQL's own subscriber). Needs superuser; without it
	// the copy still works (no triggers or FKs exist before POST).
	if _, err := conn.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			conn.Close(context.Background())
			return nil, err
		}
	}
	// A unit is recorded as done once its COPY committed: the commit must
	// be durable, or a shard that crashes just after it loses the rows
	// while the unit stays done and is never copied again (one WAL flush
	// per unit costs nothing next to its rows).
	if _, err := conn.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	w.dst[k] = conn
	return conn, nil
}

// countingWriter feeds a splitter and reports progress every ~1 MiB.
type countingWriter struct {
	sp       *sharding.Splitter
	item     *progress.TableCopy
	pending  int64
	lastRows int64
	// moved is when the last write got through (unix nanoseconds).
	moved atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.sp.Write(p)
	c.moved.Store(time.Now().UnixNano())
	c.pending += int64(n)
	if c.pending >= 1<<20 {
		c.flush()
	}
	return n, err
}

func (c *countingWriter) flush() {
	rows := c.sp.Stats().Rows
	c.item.Add(rows-c.lastRows, c.pending)
	c.lastRows, c.pending = rows, 0
}

// copyUnit streams one unit: COPY TO STDOUT on the source, through the
// splitter, into one COPY FROM STDIN per destination shard. committed
// reports whether some destination may have committed rows (the failure
// came after the source stream ended).
func (w *worker) copyUnit(ctx context.Context, u *unit, item *progress.TableCopy) (rows, bytes int64, committed bool, err error) {
	cw := &countingWriter{item: item}
	timeout := w.run.job.Catalog.NetworkTimeout()
	ctx, stop := watchProgress(ctx, &cw.moved, timeout)
	defer func() {
		if stop() && err != nil {
			err = fmt.Errorf("no progress for %s, a server stopped answering (%v): %w", timeout, err, errStalled)
		}
	}()
	if err := w.openSource(ctx); err != nil {
		return 0, 0, false, err
	}
	defer func() {
		if err == nil {
			err = w.endUnit(ctx)
		}
	}()
	t := u.table
	format := w.run.format
	if u.text {
		format = sharding.FormatText
	}
	fmtName := format.String()
	where := ""
	if u.predicate != "" {
		where = " WHERE " + u.predicate
	}
	srcSQL := t.copyOutSQL(where, format)
	var gone []string
	if t.atSnapshot {
		if srcSQL, gone, err = w.snapshotSource(ctx, t, where, format); errors.Is(err, errDropped) {
			w.run.log.Info("table dropped on the source since the copy's snapshot: not copied (the stream drops it)", "table", t.String())
			return 0, 0, false, nil
		} else if err != nil {
			return 0, 0, false, err
		}
	}
	if err := w.rewritten(ctx, t); err != nil {
		return 0, 0, false, err
	}
	dstSQL := fmt.Sprintf("COPY %s (%s) FROM STDIN (FORMAT %s)", t.Qualified(), t.columnList(), fmtName)
	if len(t.Columns) == 0 {
		// A table of no columns (CREATE TABLE t ()): its rows are empty.
		dstSQL = fmt.Sprintf("COPY %s FROM STDIN (FORMAT %s)", t.Qualified(), fmtName)
	}
	n := len(w.dst)
	conns := make([]*pgx.Conn, n)
	for k := 0; k < n; k++ {
		if conns[k], err = w.destination(ctx, k); err != nil {
			return 0, 0, false, err
		}
		if len(gone) > 0 {
			if err = allowNulls(ctx, conns[k], t, gone); err != nil {
				return 0, 0, false, fmt.Errorf("destination shard %d: %w", k, err)
			}
		}
	}
	readers := make([]*io.PipeReader, n)
	writers := make([]*io.PipeWriter, n)
	outs := make([]io.Writer, n)
	for k := 0; k < n; k++ {
		readers[k], writers[k] = io.Pipe()
		outs[k] = writers[k]
	}
	results := make(chan error, n)
	for k := 0; k < n; k++ {
		go func(k int) {
			_, err := conns[k].PgConn().CopyFrom(ctx, readers[k], dstSQL)
			if err != nil {
				err = fmt.Errorf("destination shard %d: %w", k, err)
				readers[k].CloseWithError(err)
			}
			results <- err
		}(k)
	}
	sp, err := sharding.NewSplitter(format, t.Router, outs, sharding.Options{Columns: len(t.Columns), Widen: t.Widen})
	if err != nil {
		for _, pw := range writers {
			pw.CloseWithError(err)
		}
		for k := 0; k < n; k++ {
			<-results
		}
		return 0, 0, false, err
	}
	cw.sp = sp
	_, srcErr := w.src.PgConn().CopyTo(ctx, cw, srcSQL)
	if srcErr != nil {
		srcErr = fmt.Errorf("source shard %d %s: %w", w.shard, w.node.label(), srcErr)
	} else if srcErr = sp.Close(); srcErr != nil {
		srcErr = fmt.Errorf("route rows of %s: %w", t, srcErr)
	}
	if srcErr != nil {
		for _, pw := range writers {
			pw.CloseWithError(srcErr)
		}
	} else {
		for _, pw := range writers {
			pw.Close()
		}
	}
	var dstErr error
	for k := 0; k < n; k++ {
		if err := <-results; err != nil && dstErr == nil {
			dstErr = err
		}
	}
	cw.flush()
	st := sp.Stats()
	if srcErr != nil {
		// A destination error makes the splitter fail too: report the cause.
		if dstErr != nil {
			return st.Rows, st.Bytes, false, dstErr
		}
		return st.Rows, st.Bytes, false, srcErr
	}
	if dstErr != nil {
		return st.Rows, st.Bytes, true, dstErr
	}
	return st.Rows, st.Bytes, false, nil
}

// errRewritten: a table's storage was replaced on the source after the
// copy's snapshot (TRUNCATE, or a rewriting ALTER TABLE). Those are not
// MVCC-safe: read at the snapshot, the table is empty (or lacks rows it
// had then), so the unit is left to be copied again at a new snapshot.
var errRewritten = errors.New("table rewritten since the copy's snapshot")

// rewritten locks table t (its partitions too) for the unit, so that it
// cannot be truncated while it is copied, then checks that none of its
// relations got new storage between the snapshot and the lock: pg_class as
// the snapshot sees it against the relation cache, which the lock brought
// up to date. (pg_partition_tree lists nothing for a table outside a
// partition tree: the table itself is named too.) It returns errRewritten, naming them, when some did.
func (w *worker) rewritten(ctx context.Context, t *Table) error {
	var exists bool
	if err := w.src.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, t.sourceName()).Scan(&exists); err != nil {
		return fmt.Errorf("source shard %d %s: look up %s: %w", w.shard, w.node.label(), t, err)
	}
	if !exists {
		return nil // dropped or renamed since: the copy's own checks handle it
	}
	if _, err := w.src.Exec(ctx, "LOCK TABLE "+t.sourceName()+" IN ACCESS SHARE MODE"); err != nil {
		return fmt.Errorf("source shard %d %s: lock %s: %w", w.shard, w.node.label(), t, err)
	}
	var names *string
	if err := w.src.QueryRow(ctx, `SELECT string_agg(c.oid::regclass::text, ', ') FROM pg_class c
		WHERE (c.oid = $1::regclass OR c.oid IN (SELECT relid FROM pg_partition_tree($1::regclass))) AND c.relfilenode <> 0
		AND c.relfilenode IS DISTINCT FROM pg_relation_filenode(c.oid)`, t.sourceName()).Scan(&names); err != nil {
		return fmt.Errorf("source shard %d %s: check the storage of %s: %w", w.shard, w.node.label(), t, err)
	}
	if names != nil {
		return fmt.Errorf("%s (%s): %w", t, *names, errRewritten)
	}
	return nil
}

// errStalled: a unit made no progress for the network timeout; its
// connections are presumed lost and it is tried again.
var errStalled = errors.New("copy stalled")

// watchProgress returns a context cancelled when *moved (unix nanoseconds,
// zero for "not yet") has not advanced for timeout: a server that stops
// answering (a silent network drops every packet) stalls a COPY without
// any error. stop ends the watch and tells whether it cancelled.
func watchProgress(ctx context.Context, moved *atomic.Int64, timeout time.Duration) (context.Context, func() bool) {
	ctx, cancel := context.WithCancelCause(ctx)
	moved.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(timeout / 8)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				if time.Since(time.Unix(0, moved.Load())) > timeout {
					cancel(errStalled)
					return
				}
			}
		}
	}()
	return ctx, func() bool {
		close(done)
		stalled := errors.Is(context.Cause(ctx), errStalled)
		cancel(nil)
		return stalled
	}
}

// clearUnit removes what an attempt of u may have written on every
// destination shard: the unit's key range, or the whole table.
func (w *worker) clearUnit(ctx context.Context, u *unit) error {
	for k := range w.dst {
		conn, err := w.destination(ctx, k)
		if err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, u.clearSQL()); err != nil {
			return fmt.Errorf("clear %s on destination shard %d: %w", u, k, err)
		}
	}
	return nil
}

// unreadableValue tells that a destination refused a value of a binary
// COPY while reading it back: a type whose binary output its own binary
// input rejects (PostgreSQL's empty tsquery: "malformed tsquery: operand
// not found", XX000), any data exception (class 22) raised inside COPY,
// or a type with no binary input or output function at all. Copying the
// unit again in text works for those.
func unreadableValue(err error) bool {
	if err == nil {
		return false
	}
	if msg := err.Error(); strings.Contains(msg, "no binary input function available for type") || strings.Contains(msg, "no binary output function available for type") {
		// A type without binary I/O (isn's isbn, say; 42883 from either
		// side, the source's carried in the destination's COPY failure):
		// it copies in text.
		return true
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || !strings.HasPrefix(pe.Where, "COPY ") {
		return false
	}
	return strings.HasPrefix(pe.Code, "22") || pe.Code == "XX000"
}

// retryable tells transient failures (lost connections, a server shutting
// down or starting) from errors that copying again cannot fix.
func retryable(err error) bool {
	if errors.Is(err, errStalled) {
		return true
	}
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", "57", "53", "40":
			return pe.Code != "57014" // query_canceled: we cancelled it
		}
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) || isConnError(err)
}

func isConnError(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce)
}
