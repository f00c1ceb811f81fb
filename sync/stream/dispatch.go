package stream

import (
	"context"
)

// dispatcher takes batches of committed source transactions, in order, and
// has them applied: runs of ordinary transactions are routed and handed to
// the shard workers (one destination transaction per shard and run), a
// transaction that moves rows between shards goes to the mover once the
// workers are idle, and a transaction the source streamed while in
// progress is read back from its spool in parts applied inside one open
// destination transaction per shard.
type dispatcher struct {
	router  *router
	mover   *mover
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
		ops, changes, lsn, err := d.router.routeRun(run)
		run = nil
		if err != nil {
			return err
		}
		for k := range ops {
			if err := d.workers.submit(ctx, k, shardWork{ops: ops[k], changes: changes[k], lsn: lsn}); err != nil {
				return err
			}
		}
		return nil
	}
	for _, t := range txns {
		statements := d.ddl != nil && t.spool == nil && hasDDL(t)
		if d.ddl != nil && t.spool == nil && !statements {
			// Shaped before it is looked at (the statements before it are
			// applied: this batch's ones too, in order).
			if err := d.ddl.prepareChanges(ctx, t.changes, d.ddl.shapeConn); err != nil {
				return err
			}
		}
		if t.spool == nil && !statements && !movesRows(t) {
			run = append(run, t)
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if statements {
			// Applied alone, in source order, with its statements.
			if err := d.workers.wait(ctx); err != nil {
				return err
			}
			if err := d.ddl.apply(ctx, t); err != nil {
				return err
			}
			continue
		}
		if t.spool != nil {
			if err := d.applyStreamed(ctx, t); err != nil {
				return err
			}
			continue
		}
		if err := d.workers.wait(ctx); err != nil {
			return err
		}
		if err := d.mover.apply(ctx, t, nil); err != nil {
			return err
		}
	}
	return flush()
}

// applyStreamed applies a transaction the source streamed while in
// progress, which may be larger than memory: its changes are read back in
// parts of partChanges, each part applied on the shards inside one open
// destination transaction per shard, and those are committed together once
// the last part is in.
func (d *dispatcher) applyStreamed(ctx context.Context, t *txn) error {
	open := newOpenShards()
	sawDDL := false
	err := t.spool.changes(d.partChanges, func(batch []*change) error {
		part := &txn{xid: t.xid, commitLSN: t.commitLSN, changes: batch}
		if d.ddl != nil && hasDDL(part) {
			// Statements inside a streamed transaction: its parts so far
			// are applied, then this one with its statements, in the
			// same open transactions.
			if err := d.workers.wait(ctx); err != nil {
				return err
			}
			sawDDL = true
			return d.ddl.applyChanges(ctx, t, batch, open)
		}
		if d.ddl != nil {
			// Relations are read through the stage's connection, or
			// after a statement of this transaction, inside its open
			// transaction (once the workers are idle on it).
			conn := d.ddl.shapeConn
			if sawDDL {
				if err := d.workers.wait(ctx); err != nil {
					return err
				}
				conn = d.ddl.shapingConn(ctx, t, open)
			}
			if err := d.ddl.prepareChanges(ctx, batch, conn); err != nil {
				return err
			}
		}
		if movesRows(part) {
			if err := d.workers.wait(ctx); err != nil {
				return err
			}
			return d.mover.apply(ctx, part, open)
		}
		ops, changes, lsn, err := d.router.routeRun([]*txn{part})
		if err != nil {
			return err
		}
		for k := range ops {
			if len(ops[k]) == 0 {
				continue
			}
			open.touched[k] = true
			if err := d.workers.submit(ctx, k, shardWork{ops: ops[k], changes: changes[k], lsn: lsn, keepOpen: true}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := d.workers.wait(ctx); err != nil {
		return err
	}
	if err := d.mover.commit(ctx, open, t.commitLSN); err != nil {
		return err
	}
	if d.ddl != nil {
		return d.ddl.settled(ctx)
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
