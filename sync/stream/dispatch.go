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
		if t.spool == nil && !movesRows(t) {
			run = append(run, t)
			continue
		}
		if err := flush(); err != nil {
			return err
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
	err := t.spool.changes(d.partChanges, func(batch []*change) error {
		part := &txn{xid: t.xid, commitLSN: t.commitLSN, changes: batch}
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
	return d.mover.commit(ctx, open, t.commitLSN)
}

// releaseSpools frees what streamed transactions hold (memory, files).
func releaseSpools(b *spoolBudget, txns []*txn) {
	for _, t := range txns {
		if t.spool != nil {
			t.spool.release(b)
		}
	}
}
