package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sync/job"
)

// Rows that change shard.
//
// An UPDATE can move a row to another shard: its new sharding key maps
// elsewhere. When the change carries the old key (REPLICA IDENTITY FULL, or
// a replica identity holding the sharding column) the old shard is known;
// when it does not (the common case: rows keyed by id, placed by owner,
// replica identity the primary key) no shard can tell from the change
// whether the row moved. Either way the row goes through the same steps,
// each shard applying its part of a batch concurrently and in source order:
//
//   - the shards the row may leave (the old one, or every shard but the new
//     one) run a probe: DELETE ... RETURNING of the row by its key, which
//     records the deleted row in reshard.moved_rows in the same transaction;
//   - the new shard runs the UPDATE (none for a known move); if it finds no
//     row, the row is arriving: once every shard has run its probes of the
//     part (the board says so), it takes the row the probe of the same row
//     returned last before the change, fills the unchanged TOASTed values
//     the change left out, and inserts it.
//
// A part ends (the router cuts the batch) before any later statement that
// touches a row still arriving on its shard, so a row is never touched
// before it is there. Each shard commits its part with the batch's commit
// LSN as its origin position, independently: after a crash, a shard that
// committed its probe skips the batch, and a new shard that did not reads
// the row from the old shard's reshard.moved_rows; a shard that did not
// commit its probe runs it again. Records are removed once the shard the
// row moved to has flushed past them.

// movedRowsTable records, on each destination shard, the rows a probe took
// off it, until the shard they moved to has them durably.
const movedRowsTable = "reshard.moved_rows"

// movedRowsSetup creates the table (taking a lock: several streams may
// start at once). Its primary key is its replica identity: a destination
// that publishes every table (reverse replication) can delete from it.
const movedRowsSetup = `SELECT pg_advisory_xact_lock(hashtext('reshard.moved_rows'));
CREATE SCHEMA IF NOT EXISTS reshard;
CREATE TABLE IF NOT EXISTS reshard.moved_rows (slot text NOT NULL, row_id bytea NOT NULL, lsn pg_lsn NOT NULL, seq int NOT NULL, target int NOT NULL, image text[] NOT NULL,
  PRIMARY KEY (slot, row_id, lsn, seq))`

// image is a row a probe took off a shard, at a change's position.
type image struct {
	pos    position
	shard  int
	values [][]byte
}

// board is where the shards of one routed batch meet: each posts the rows
// its probes took and says when it has run the probes of a part; a shard
// whose rows arrive waits for the part's probes of every shard.
type board struct {
	// from is the commit LSN of the batch's first transaction.
	from     pglogrepl.LSN
	mu       sync.Mutex
	images   map[string][]image
	reported []int         // per shard: the last part whose probes have run
	changed  chan struct{} // closed (and replaced) at every report
}

func newBoard(shards int, from pglogrepl.LSN) *board {
	b := &board{from: from, images: map[string][]image{}, reported: make([]int, shards), changed: make(chan struct{})}
	for k := range b.reported {
		b.reported[k] = -1
	}
	return b
}

// add posts a row a probe took.
func (b *board) add(row string, im image) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.images[row] = append(b.images[row], im)
}

// report records that shard k has run the probes of part.
func (b *board) report(k, part int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reported[k] = part
	close(b.changed)
	b.changed = make(chan struct{})
}

// wait returns once every shard has run the probes of part, or with the
// error that stops it (ctx ending, a shard's failure).
func (b *board) wait(ctx context.Context, part int, failed <-chan struct{}) error {
	for {
		b.mu.Lock()
		done := true
		for _, r := range b.reported {
			if r < part {
				done = false
			}
		}
		ch := b.changed
		b.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-failed:
			return errShardFailed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// errShardFailed stops a shard waiting for others when one of them failed
// (the failure itself is what the session reports).
var errShardFailed = errors.New("another destination shard failed")

// latest is the row a probe took last, at or before pos.
func (b *board) latest(row string, pos position) (image, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var best image
	found := false
	for _, im := range b.images[row] {
		if !im.pos.after(pos) && (!found || im.pos.after(best.pos)) {
			best, found = im, true
		}
	}
	return best, found
}

// cut splits each shard's statements of a batch into parts: a part ends
// before the changes (at one source position, on every shard) of which a
// statement touches a row still arriving on its shard (an arrival is
// settled at the end of its part), or is a TRUNCATE of a shard with rows
// arriving. ops[k] are shard k's statements in source order; the result is
// parts[i][k].
func cut(ops [][]op) [][][]op {
	// Tables are told by their id, not by their relation: the source
	// describes a table again (a new relation) whenever its relcache entry
	// is invalidated (an ANALYZE, autovacuum, a TRUNCATE), possibly between
	// two changes of one row in one batch.
	type pending struct {
		rows map[string]bool
		rels map[uint32]bool
	}
	shards := len(ops)
	arriving := make([]pending, shards)
	reset := func() {
		for k := range arriving {
			arriving[k] = pending{rows: map[string]bool{}, rels: map[uint32]bool{}}
		}
	}
	reset()
	conflicts := func(k int, o op) bool {
		a := arriving[k]
		return len(a.rels) > 0 && (o.rel == nil || a.rels[o.rel.id] && (o.row == "" || o.rel.identity == 'f' || a.rows[o.row]))
	}
	idx := make([]int, shards)   // next statement of each shard
	start := make([]int, shards) // where each shard's current part starts
	var parts [][][]op
	for {
		// The next position in source order over all shards.
		var at position
		found := false
		for k := range ops {
			if idx[k] < len(ops[k]) && (!found || at.after(ops[k][idx[k]].pos)) {
				at, found = ops[k][idx[k]].pos, true
			}
		}
		if !found {
			break
		}
		// The statements of every shard at that position.
		end := make([]int, shards)
		conflict := false
		for k := range ops {
			end[k] = idx[k]
			for end[k] < len(ops[k]) && ops[k][end[k]].pos == at {
				conflict = conflict || conflicts(k, ops[k][end[k]])
				end[k]++
			}
		}
		if conflict {
			part := make([][]op, shards)
			for k := range ops {
				part[k] = ops[k][start[k]:idx[k]]
				start[k] = idx[k]
			}
			parts = append(parts, part)
			reset()
		}
		for k := range ops {
			for _, o := range ops[k][idx[k]:end[k]] {
				if o.arrive != nil {
					arriving[k].rels[o.rel.id] = true
					for _, id := range o.arrive.rowIDs {
						arriving[k].rows[id] = true
					}
				}
			}
			idx[k] = end[k]
		}
	}
	last := make([][]op, shards)
	for k := range ops {
		last[k] = ops[k][start[k]:]
	}
	return append(parts, last)
}

// mover settles the rows arriving on a shard: it takes them from the
// board, or from the records of shards that applied their probes in an
// earlier session, and inserts them.
type mover struct {
	slot string
	// origins are the shards' origin positions when the session started:
	// a shard skips the transactions at or before its own.
	origins []pglogrepl.LSN
	dsns    []string
	timeout time.Duration

	mu      sync.Mutex
	lookups map[int]*pgx.Conn // connections reading other shards' records
}

func newMover(slot string, origins []pglogrepl.LSN, dsns []string, timeout time.Duration) *mover {
	return &mover{slot: slot, origins: origins, dsns: dsns, timeout: timeout, lookups: map[int]*pgx.Conn{}}
}

// close closes the lookup connections.
func (m *mover) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, c := range m.lookups {
		c.Close(context.Background())
		delete(m.lookups, k)
	}
}

// settle inserts on shard k (applier a, in its open transaction) the rows
// of the arrivals that found no row there, once every shard has run the
// probes of part. It returns how many rows it inserted.
func (m *mover) settle(ctx context.Context, a *applier, b *board, part int, arrivals []op, failed <-chan struct{}) (int, error) {
	if err := b.wait(ctx, part, failed); err != nil {
		return 0, err
	}
	for _, o := range arrivals {
		im, ok := b.latest(o.row, o.pos)
		rec, rok, err := m.recorded(ctx, a.shard, b.from, o)
		if err != nil {
			return 0, err
		}
		if rok && (!ok || rec.pos.after(im.pos)) {
			im, ok = rec, true
		}
		newRow := o.arrive.newRow
		full := newRow
		if ok {
			full = make([]value, len(newRow))
			for i, v := range newRow {
				full[i] = v
				if v.toasted && i < len(im.values) {
					full[i] = value{data: im.values[i], null: im.values[i] == nil}
				}
			}
		} else if o.sql != "" {
			// An UPDATE that found its row nowhere: the shards do not hold
			// what the source updated.
			return 0, job.Errorf("XX000", "an UPDATE of %s found its row on no destination shard (it was not on shard %d, where its new sharding key places it, and no other shard had it)", o.rel, a.shard)
		}
		args := make([][]byte, len(full))
		for i, v := range full {
			if v.toasted {
				return 0, job.Errorf("XX000", "%s: a row moved to destination shard %d, but an unchanged TOASTed value (column %s) could not be read from the shard it left", o.rel, a.shard, o.rel.columns[i])
			}
			if !v.null {
				args[i] = v.data
			}
		}
		ictx, cancel := context.WithTimeout(ctx, m.timeout)
		_, err = a.exec(ictx, o.rel.plan.insert(len(full)), args)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("destination shard %d: insert a row of %s moved here: %w", a.shard, o.rel, err)
		}
	}
	return len(arrivals), nil
}

// recorded is the row that shards which skipped part of the batch (they
// had applied it in an earlier session: their origin is at or past from,
// its first commit) recorded last at or before the arrival, if any. Their
// probes of that part did not run in this session, so they are not on the
// board; the row may have left one of them there (at the arrival, or at an
// earlier change of the batch whose arrival was coalesced into this one).
func (m *mover) recorded(ctx context.Context, target int, from pglogrepl.LSN, o op) (image, bool, error) {
	var best image
	found := false
	for j, origin := range m.origins {
		if j == target || origin < from {
			continue
		}
		im, ok, err := m.lookup(ctx, j, o)
		if err != nil {
			return image{}, false, err
		}
		if ok && (!found || im.pos.after(best.pos)) {
			best, found = im, true
		}
	}
	return best, found, nil
}

// lookup reads shard j's last record of the arrival's row at or before it.
func (m *mover) lookup(ctx context.Context, j int, o op) (image, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	conn := m.lookups[j]
	if conn == nil {
		c, err := pgx.Connect(ctx, m.dsns[j])
		if err != nil {
			return image{}, false, fmt.Errorf("connect to destination shard %d: %w", j, err)
		}
		conn, m.lookups[j] = c, c
	}
	var vals []*string
	var lsn string
	im := image{shard: j}
	err := conn.QueryRow(ctx, `SELECT image, lsn::text, seq FROM reshard.moved_rows
		WHERE slot = $1 AND row_id = $2 AND (lsn, seq) <= ($3::pg_lsn, $4)
		ORDER BY lsn DESC, seq DESC LIMIT 1`, m.slot, []byte(o.row), o.pos.lsn.String(), o.pos.seq).Scan(&vals, &lsn, &im.pos.seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return image{}, false, nil
	}
	if err != nil {
		conn.Close(context.Background())
		delete(m.lookups, j)
		return image{}, false, fmt.Errorf("destination shard %d: read the rows moved off it: %w", j, err)
	}
	if im.pos.lsn, err = pglogrepl.ParseLSN(lsn); err != nil {
		return image{}, false, err
	}
	for _, v := range vals {
		if v == nil {
			im.values = append(im.values, nil)
		} else {
			im.values = append(im.values, []byte(*v))
		}
	}
	return im, true, nil
}

// cleanMovedRows removes, on one shard, the records of rows that the
// shards they moved to have durably (flushed[k]: shard k's flushed origin).
func cleanMovedRows(ctx context.Context, conn *pgx.Conn, slot string, flushed []pglogrepl.LSN) error {
	lsns := make([]string, len(flushed))
	for k, l := range flushed {
		lsns[k] = l.String()
	}
	_, err := conn.Exec(ctx, `DELETE FROM reshard.moved_rows WHERE slot = $1 AND lsn <= ($2::pg_lsn[])[target + 1]`, slot, "{"+strings.Join(lsns, ",")+"}")
	return err
}
