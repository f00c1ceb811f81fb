package stream

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/sync/progress"
)

// mover applies the source transactions that move rows between shards (an
// UPDATE whose sharding key changes shard), which need more than one shard
// at once: in source order, with a transaction open on every shard it
// touches; a moved row is deleted on its old shard (returning it, to fill
// values the change left out) and inserted on its new one. It runs while
// the shard workers are idle, on their appliers.
type mover struct {
	appliers []*applier
	router   *router
	pos      *positions
	status   *progress.Slot
	timeout  time.Duration
}

// openShards are the shards with an open destination transaction for one
// source transaction, and those of them that received moved rows.
type openShards struct {
	touched, receivers map[int]bool
}

func newOpenShards() *openShards {
	return &openShards{touched: map[int]bool{}, receivers: map[int]bool{}}
}

// apply applies one transaction that moves rows. Shards that receive rows
// commit first, so a crash in between can only leave a delete to replay.
//
// With open set, the shards' transactions are left open (recorded in open)
// for the caller to commit with commit: t is then one part of a larger
// source transaction.
func (m *mover) apply(ctx context.Context, t *txn, open *openShards) error {
	commit := open == nil
	if commit {
		open = newOpenShards()
	}
	touched := open.touched
	// One source transaction: its exchanges are bounded together.
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	changes := make([]int, len(m.appliers)) // row changes per shard, for metrics
	fail := func(err error) error {
		for _, a := range m.appliers {
			a.rollback()
		}
		return err
	}
	exec := func(k int, o op) (int64, error) {
		a := m.appliers[k]
		if t.commitLSN <= a.applied {
			return 1, nil
		}
		if err := a.begin(ctx); err != nil {
			return 0, fmt.Errorf("destination shard %d: begin: %w", k, err)
		}
		touched[k] = true
		changes[k]++
		n, err := a.exec(ctx, o.sql, o.args)
		if err != nil {
			return 0, fmt.Errorf("destination shard %d: %s: %w", k, abbrevSQL(o.sql), err)
		}
		return n, nil
	}
	for _, c := range t.changes {
		if m.router.marks.covered(c, t.commitLSN) {
			continue
		}
		if movesRow(c) {
			so, _ := c.rel.shardOf(c.oldRow)
			if so != sharding.AllShards {
				if err := m.move(ctx, t, c, so, open, changes, exec); err != nil {
					return fail(err)
				}
				continue
			}
		}
		var ops []routed
		if err := m.router.route(c, func(k int, o op) { ops = append(ops, routed{k, o}) }); err != nil {
			return fail(err)
		}
		for _, r := range ops {
			affected, err := exec(r.shard, r.op)
			if err != nil {
				return fail(err)
			}
			if r.op.mustHit != nil && affected == 0 {
				return fail(fmt.Errorf("an UPDATE of %s found no row on destination shard %d (its sharding key changed but is not in the replica identity): ALTER TABLE %s REPLICA IDENTITY FULL on the source", r.op.mustHit, r.shard, r.op.mustHit.qualified))
			}
		}
	}
	statements := 0
	for _, n := range changes {
		statements += n // one statement per row change here
	}
	if commit {
		if err := m.commit(ctx, open, t.commitLSN); err != nil {
			return err
		}
	}
	m.status.Applied(int64(statements))
	m.status.AppliedChanges(changes)
	return nil
}

// move deletes a row on its old shard so (returning it, to fill the
// unchanged TOASTed values the change left out) and inserts it where its
// new row routes.
func (m *mover) move(ctx context.Context, t *txn, c *change, so int, open *openShards, changes []int, exec func(int, op) (int64, error)) error {
	keyCols, keyVals, err := keyOf(c.rel, c)
	if err != nil {
		return err
	}
	newRow := newRowOf(c)
	a := m.appliers[so]
	full := newRow
	if t.commitLSN > a.applied {
		if err := a.begin(ctx); err != nil {
			return fmt.Errorf("destination shard %d: begin: %w", so, err)
		}
		open.touched[so] = true
		changes[so]++
		old, found, err := a.query(ctx, c.rel.plan.deleteReturning(keyCols), keyVals)
		if err != nil {
			return fmt.Errorf("destination shard %d: move a row of %s: %w", so, c.rel, err)
		}
		if found {
			full = append([]value(nil), newRow...)
			for i, v := range full {
				if v.toasted && i < len(old) {
					full[i] = value{data: old[i], null: old[i] == nil}
				}
			}
		}
	}
	for _, v := range full {
		if v.toasted {
			return fmt.Errorf("%s: a row moved between shards, but an unchanged TOASTed value could not be read from its old shard", c.rel)
		}
	}
	var ins []routed
	if err := m.router.route(&change{kind: opInsert, rel: c.rel, newRow: full}, func(k int, o op) { ins = append(ins, routed{k, o}) }); err != nil {
		return err
	}
	for _, r := range ins {
		open.receivers[r.shard] = true
		if _, err := exec(r.shard, r.op); err != nil {
			return err
		}
	}
	return nil
}

// commit commits the open destination transactions of one source
// transaction with its commit LSN as their origin position. Shards that
// received moved rows commit first, so a crash in between can only leave a
// delete to replay. The shard workers must be idle.
func (m *mover) commit(ctx context.Context, open *openShards, lsn pglogrepl.LSN) error {
	order := make([]int, 0, len(open.touched))
	for k := range open.touched {
		if open.receivers[k] {
			order = append(order, k)
		}
	}
	for k := range open.touched {
		if !open.receivers[k] {
			order = append(order, k)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	for _, k := range order {
		if err := m.appliers[k].commit(ctx, lsn, time.Now()); err != nil {
			for _, a := range m.appliers {
				a.rollback()
			}
			return err
		}
		m.pos.committedOn(k, lsn)
	}
	m.pos.handledAll(lsn)
	return nil
}
