package stream

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/reshard/reshard/sync/copier"
)

// ddlBarrier lines up the streams of several source shards at each
// captured statement. Every source shard runs the application's DDL
// (through a pooler that sends it to all of them); the statement of source
// shard 0 is the one applied on the destination, once every other source
// shard's stream has reached its own (so no stream still has changes of
// the old shape to apply), and the others then check that theirs is the
// same. Statements are matched by their place among each source shard's
// captured statements (the ordinal recorded in reshard.ddl_applied).
//
// A stream waits there without an open destination transaction: what it
// applied before is committed, so the statement finds no lock held by
// another stream. The state is in memory for the streams of one process,
// and in reshard.ddl_applied on destination shard 0 for what was decided
// before a restart.
type ddlBarrier struct {
	sources int
	base    string // the copy's slot name: source shard k streams SlotNames(base)[k]

	mu sync.Mutex
	// arrived is, per source shard other than 0, the ordinal its stream
	// waits at; done the statements source shard 0 applied, by ordinal.
	arrived map[int]int
	done    map[int]string
	changed chan struct{}
}

func newDDLBarrier(sources int, base string) *ddlBarrier {
	return &ddlBarrier{sources: sources, base: base, arrived: map[int]int{}, done: map[int]string{}, changed: make(chan struct{})}
}

// signal wakes every waiter (b.mu held).
func (b *ddlBarrier) signal() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// origin0 is source shard k's replication origin on destination shard 0.
func (b *ddlBarrier) origin0(k int) string {
	return OriginName(copier.SlotNames(b.base, b.sources)[k], 0)
}

// wait calls ready until it is true, waking on every change and at least
// every half second (for what another process recorded).
func (b *ddlBarrier) wait(ctx context.Context, ready func() (bool, error)) error {
	for {
		b.mu.Lock()
		ch := b.changed
		b.mu.Unlock()
		ok, err := ready()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// arrive is source shard 0's stream at its statement ord: it returns once
// every other source shard's stream has reached its statement ord (or
// went past it before).
func (b *ddlBarrier) arrive(ctx context.Context, s *ddlStage, ord int) error {
	if b == nil {
		return nil
	}
	return b.wait(ctx, func() (bool, error) {
		var missing []string
		for k := 1; k < b.sources; k++ {
			b.mu.Lock()
			at, ok := b.arrived[k]
			b.mu.Unlock()
			if ok && at >= ord {
				continue
			}
			var past bool
			qctx, cancel := context.WithTimeout(ctx, s.timeout)
			err := s.shapeConn.QueryRow(qctx, `SELECT EXISTS (SELECT 1 FROM reshard.ddl_applied WHERE origin = $1 AND ordinal >= $2)`, b.origin0(k), ord).Scan(&past)
			cancel()
			if err != nil {
				return false, fmt.Errorf("destination shard 0: read reshard.ddl_applied: %w", err)
			}
			if !past {
				missing = append(missing, fmt.Sprint(k))
			}
		}
		if len(missing) > 0 {
			s.log.Debug("captured statement waits for the other source shards", "ordinal", ord, "waiting_for", strings.Join(missing, ","))
		}
		return len(missing) == 0, nil
	})
}

// applied records that source shard 0's statement ord was applied.
func (b *ddlBarrier) applied(ord int, stmt string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done[ord] = stmt
	b.signal()
}

// match is another source shard's stream at its statement ord: it waits
// until source shard 0's statement ord is applied, and checks that it is
// the same statement.
func (b *ddlBarrier) match(ctx context.Context, s *ddlStage, ord int, stmt string) error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	b.arrived[s.sourceShard] = ord
	b.signal()
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.arrived, s.sourceShard)
		b.mu.Unlock()
	}()
	var applied string
	err := b.wait(ctx, func() (bool, error) {
		b.mu.Lock()
		a, ok := b.done[ord]
		b.mu.Unlock()
		if ok {
			applied = a
			return true, nil
		}
		qctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		rows, err := s.shapeConn.Query(qctx, `SELECT statement FROM reshard.ddl_applied WHERE origin = $1 AND ordinal = $2`, b.origin0(0), ord)
		if err != nil {
			return false, fmt.Errorf("destination shard 0: read reshard.ddl_applied: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := rows.Scan(&applied); err != nil {
				return false, err
			}
			return true, nil
		}
		return false, rows.Err()
	})
	if err != nil {
		return err
	}
	if normalize(applied) != normalize(stmt) {
		return fmt.Errorf("source shard %d ran %q as its DDL statement #%d, where source shard 0 ran %q: the source shards' schemas differ; run the same statement on every source shard (in the same order), or stop the migration (ABORT)",
			s.sourceShard, abbrevSQL(stmt), ord, abbrevSQL(applied))
	}
	return nil
}

// normalize compares statements with their white space collapsed.
func normalize(s string) string { return strings.Join(strings.Fields(s), " ") }
