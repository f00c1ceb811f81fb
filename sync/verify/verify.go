// Package verify is the proof stage of resharding: it compares every table
// of the publication between the source and the destination shards at one
// consistent point, while the application writes and the streams apply.
//
// The stages, one file each:
//   - point: a temporary logical slot on every shard the streams read from
//     gives a snapshot and its exact LSN; the streams are held at those
//     LSNs while the other side's snapshots are taken (milliseconds), then
//     released;
//   - plan: each table's key (primary key, replica identity index, unique
//     index) and row hash, from one catalog query;
//   - chunker: key ranges of about Request.ChunkRows rows, from a sample;
//   - checksum: a count and an order-independent 64-bit checksum per range
//     and server, computed inside PostgreSQL (with the rows on the wrong
//     shard), small tables many to a statement;
//   - narrow: a range that differs is bisected down to keys (a table
//     without a key: to hash buckets, and its differences counted);
//   - report: missing, extra, different and misplaced counts per table,
//     and the keys of each kind in the log.
//
// Every server is read through a bounded pool of sessions that share its
// snapshot (server.go).
package verify

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/progress"
)

// Request is one verification of a job's publication.
type Request struct {
	// Parallel is the sessions, and so the queries at once, per server
	// (default: resharding_parallel_copies).
	Parallel int
	// ChunkRows is the rows of a chunk (default 100,000); tables of fewer
	// rows are compared whole, many to a statement.
	ChunkRows int64
	// LeafRows: a differing range of at most this many rows is compared
	// key by key (default 4,096).
	LeafRows int64
	// KeyLimit bounds the differing keys kept per table (default 100,000);
	// beyond it differences are counted, not named.
	KeyLimit int
	// Hold holds the streams that feed the destination (or, with Reverse,
	// the source) at the consistent point; nil when none runs.
	Hold Holder
	// Reverse tells that the streams run from the destination shards back
	// into the source (after a cutover): the consistent point is taken on
	// the destination shards and the source's snapshots while held.
	Reverse bool
}

// Result sums up a verification.
type Result struct {
	// Tables were compared; Mismatched differ; Failed could not be read.
	Tables, Mismatched, Failed int
	// ConsistentLSN is the point compared at, one LSN per shard of the side
	// the streams read from.
	ConsistentLSN string
	// Held tells that streams were held, Hold for how long.
	Held bool
	Hold time.Duration
}

// Run verifies every table of the publication and reports each in the
// job's registry (SHOW VERIFY) as it goes. Mismatches are results, not
// errors; a table that cannot be read is an error in its row and counts
// in Result.Failed; losing a server or the context ends the run with an
// error.
func Run(ctx context.Context, j *job.Job, req Request) (*Result, error) {
	log := j.Logger("verify")
	if req.Parallel <= 0 {
		req.Parallel = j.Catalog.Config.General.ReshardingParallelCopies
	}
	if req.Parallel <= 0 {
		req.Parallel = 4
	}
	if req.ChunkRows <= 0 {
		req.ChunkRows = 100_000
	}
	if req.LeafRows <= 0 {
		req.LeafRows = 4096
	}
	if req.KeyLimit <= 0 {
		req.KeyLimit = 100_000
	}
	started := time.Now()
	// The tables are listed while the sessions on every server open.
	var described []*copier.Table
	var published int
	var src, dst []*server
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		conn, err := j.ConnectSource(gctx, 0)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		if described, err = copier.Tables(gctx, conn, j.Publication, j.Destination); err != nil {
			return job.Wrap(codeOf(err, "XX000"), err, "list the tables of publication %q: %v", j.Publication, err)
		}
		// The tables the shards have that the publication does not carry
		// are compared too: rows nothing will bring over are a failure, not
		// an omission.
		published = len(described)
		extra, err := unpublished(gctx, j, conn, log)
		if err != nil {
			return job.Wrap(codeOf(err, "XX000"), err, "list the tables the publication does not carry: %v", err)
		}
		described = append(described, extra...)
		return nil
	})
	g.Go(func() (err error) {
		src, err = openServers(gctx, j.Source, j.SourceDSN, sideSource, req.Parallel, "")
		return err
	})
	g.Go(func() (err error) {
		dst, err = openServers(gctx, j.Destination, j.DestinationDSN, sideDestination, req.Parallel, placementSetup)
		return err
	})
	err := g.Wait()
	defer closeServers(src)
	defer closeServers(dst)
	if err != nil {
		return nil, err
	}
	j.Registry.StartVerify(j.Task, j.Source.Name, j.Destination.Name, j.Publication)
	states := make([]*tableState, len(described))
	for i, t := range described {
		states[i] = &tableState{row: progress.VerifyRow{Task: j.Task, Schema: t.Schema, Table: t.Name, Status: StatusRunning,
			Source: j.Source.Name, Destination: j.Destination.Name, Publication: j.Publication,
			ShardRows: make([]int64, len(j.DestinationDSN)), Started: started}, started: started, reverse: req.Reverse, notPublished: i >= published}
		j.Registry.SetVerify(states[i].row)
	}
	fail := func(err error) (*Result, error) {
		for _, s := range states {
			r := s.snapshot()
			if !r.Finished() {
				r.Status, r.Elapsed = "error: "+err.Error(), time.Since(started)
				j.Registry.SetVerify(r)
			}
		}
		return nil, err
	}
	log.Debug("tables listed, sessions open", "tables", len(described), "elapsed", time.Since(started))
	tables, err := plan(ctx, src, described)
	if err != nil {
		return fail(job.Wrap(codeOf(err, "XX000"), err, "plan the comparison: %v", err))
	}
	for i, t := range tables {
		states[i].t = t
		states[i].row.RowsEstimate = t.estimate
		if t.Omni {
			states[i].groups = make([]*diffs, len(dst))
		} else {
			states[i].groups = make([]*diffs, 1)
		}
		for k := range states[i].groups {
			states[i].groups[k] = newDiffs()
		}
	}

	// The consistent point.
	leaders, followers := src, dst
	if req.Reverse {
		leaders, followers = dst, src
	}
	log.Debug("comparison planned", "elapsed", time.Since(started))
	p, err := takePoint(ctx, j.Catalog, leaders, followers, req.Hold, log)
	if err != nil {
		return fail(err)
	}
	res := &Result{Tables: len(tables), ConsistentLSN: p.String(), Held: p.held, Hold: p.hold}
	if p.held {
		r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
		log.Info("consistent point taken: streams held while the snapshots were taken", "lsn", p.String(),
			"hold", r(p.hold), "slots_in", r(p.take), "reached_in", r(p.reach), "snapshots_in", r(p.snapshot),
			"retries", p.retries, "reverse", req.Reverse)
	} else {
		log.Info("consistent point taken; no stream feeds the route, so the destination is compared as it is", "lsn", p.String())
	}
	for _, s := range states {
		s.row.ConsistentLSN, s.row.Held, s.row.Hold = p.String(), p.held, p.hold
		j.Registry.SetVerify(s.snapshot())
	}

	// Chunks of the large tables, from samples of source shard 0's keys.
	ranges := make([][]keyRange, len(tables))
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(req.Parallel)
	for i, t := range tables {
		if chunkCount(t, req.ChunkRows) <= 1 {
			continue
		}
		g.Go(func() error {
			rs, err := chunks(gctx, src[0], t, req.ChunkRows)
			var te *tableError
			if errors.As(err, &te) {
				states[i].fail(fmt.Errorf("%s: %w", t, err))
				return nil
			}
			ranges[i] = rs
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fail(err)
	}

	log.Debug("chunks sampled", "elapsed", time.Since(started))
	c := &comparer{src: src, dst: dst, leafRows: req.LeafRows, keyLimit: req.KeyLimit, states: states}
	finish := func(t *table) {
		row := states[t.index].finish(log)
		j.Registry.SetVerify(row)
	}
	// Work: the chunks of the largest tables first, then the small tables
	// in batches.
	order := append([]*table(nil), tables...)
	sort.SliceStable(order, func(a, b int) bool { return order[a].estimate > order[b].estimate })
	type item struct {
		t      *table
		r      keyRange
		tables []*table
	}
	var items []item
	var small []*table
	var smallRows int64
	flush := func() {
		if len(small) > 0 {
			items = append(items, item{tables: small})
			small, smallRows = nil, 0
		}
	}
	for _, t := range order {
		if states[t.index].err != nil {
			states[t.index].pending = 0
			continue
		}
		if ranges[t.index] == nil {
			if t.estimate <= req.ChunkRows {
				small = append(small, t)
				smallRows += t.estimate
				states[t.index].pending = 1
				if len(small) >= batchTables || smallRows >= req.ChunkRows {
					flush()
				}
				continue
			}
			ranges[t.index] = []keyRange{{}}
		}
		states[t.index].pending = len(ranges[t.index])
		for _, r := range ranges[t.index] {
			items = append(items, item{t: t, r: r})
		}
	}
	flush()
	for _, s := range states {
		if s.pending == 0 {
			finish(s.t)
		}
	}
	servers := len(src) + len(dst)
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(req.Parallel * servers)
	for _, it := range items {
		g.Go(func() error {
			if it.tables != nil {
				if err := c.batch(gctx, it.tables); err != nil {
					return err
				}
				for _, t := range it.tables {
					if states[t.index].done() {
						finish(t)
					}
				}
				return nil
			}
			err := c.finishRange(gctx, it.t, func() error { return c.chunk(gctx, it.t, it.r) })
			if err != nil {
				return err
			}
			if states[it.t.index].done() {
				finish(it.t)
			} else {
				j.Registry.SetVerify(states[it.t.index].snapshot())
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fail(job.Wrap(codeOf(err, "XX000"), err, "verify: %v", err))
	}
	for _, s := range states {
		switch r := s.snapshot(); {
		case r.Status == StatusMismatch || r.Status == StatusNotPublished:
			res.Mismatched++
		case r.Status != StatusMatch:
			res.Failed++
		}
	}
	log.Info("verify done", "tables", res.Tables, "mismatched", res.Mismatched, "failed", res.Failed,
		"elapsed", time.Since(started).Round(time.Millisecond))
	return res, nil
}

// batchTables bounds the small tables compared in one statement.
const batchTables = 100

// String describes the result for messages.
func (r *Result) String() string {
	return fmt.Sprintf("%d tables, %d differ, %d could not be read", r.Tables, r.Mismatched, r.Failed)
}
