package stream

import (
	"context"

	"github.com/jackc/pglogrepl"
)

// dispatcher takes batches of committed source transactions, in order, and
// has them applied: runs of transactions are routed and each shard's part
// handed to its worker (one destination transaction per shard and run); a
// transaction the source streamed while in progress is read back from its
// spool in parts, applied inside one open destination transaction per
// shard, committed once the last part is in.
type dispatcher struct {
	router  *router
	workers *shardWorkers
	budget  *spoolBudget
	// partChanges bounds the changes of a streamed transaction read back
	// at a time.
	partChanges int
	// ddl, with resharding_ddl = "replicate", applies the transactions
	// holding captured statements and shapes every relation before its
	// first change is routed.
	ddl *ddlStage
}

// apply applies one batch, releasing what its transactions hold.
func (d *dispatcher) apply(ctx context.Context, txns []*txn) error {
	defer releaseSpools(d.budget, txns)
	var run []*txn
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		r, err := d.router.routeRun(run)
		run = nil
		if err != nil {
			return err
		}
		return d.submit(ctx, r, true)
	}
	for _, t := range txns {
		if d.ddl != nil && (t.spool != nil || hasDDL(t)) {
			// Applied alone, in source order, with its statements (a
			// spooled one read back in parts).
			if err := flush(); err != nil {
				return err
			}
			if err := d.ddl.apply(ctx, d, t); err != nil {
				return err
			}
			continue
		}
		if d.ddl != nil {
			// Shaped before it is routed (the statements before it are
			// applied: this batch's ones too, in order).
			if err := d.ddl.prepareChanges(ctx, t.changes, d.ddl.shapeConn); err != nil {
				return err
			}
		}
		if t.spool == nil {
			run = append(run, t)
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if err := d.applyStreamed(ctx, t); err != nil {
			return err
		}
	}
	return flush()
}

// submit hands a routed run's parts to the shard workers; with commit, the
// last part commits every shard's transaction at the run's LSN.
func (d *dispatcher) submit(ctx context.Context, r routedRun, commit bool) error {
	for i, part := range r.parts {
		last := i == len(r.parts)-1
		for k, ops := range part {
			w := shardWork{ops: ops, lsn: r.lsn, commit: commit && last, board: r.board, part: i}
			if last {
				w.changes = r.changes[k]
			}
			if len(ops) == 0 && !w.commit && r.board == nil {
				continue
			}
			if err := d.workers.submit(ctx, k, w); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyStreamed applies a transaction the source streamed while in
// progress, which may be larger than memory: its changes are read back in
// parts of partChanges, each part applied on the shards inside one open
// destination transaction per shard, and those are committed together once
// the last part is in. (With resharding_ddl = "replicate", the DDL stage
// applies it instead: ddlStage.apply.)
func (d *dispatcher) applyStreamed(ctx context.Context, t *txn) error {
	seq := 0
	err := t.spool.changes(d.partChanges, func(batch []*change) error {
		part := &txn{xid: t.xid, commitLSN: t.commitLSN, changes: batch, seqBase: seq}
		seq += len(batch)
		r, err := d.router.routeRun([]*txn{part})
		if err != nil {
			return err
		}
		return d.submit(ctx, r, false)
	})
	if err != nil {
		return err
	}
	return d.commitAll(ctx, t.commitLSN)
}

// commitAll has every shard commit its open transaction at lsn.
func (d *dispatcher) commitAll(ctx context.Context, lsn pglogrepl.LSN) error {
	for k := 0; k < d.router.shards; k++ {
		if err := d.workers.submit(ctx, k, shardWork{lsn: lsn, commit: true}); err != nil {
			return err
		}
	}
	return nil
}

// releaseSpools frees what streamed transactions hold (memory, files).
func releaseSpools(b *spoolBudget, txns []*txn) {
	for _, t := range txns {
		if t.spool != nil {
			t.spool.release(b)
		}
	}
}
