package verify

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/reshard/reshard/sharding"
)

// comparer compares ranges of tables between the source servers and the
// destination servers, all in the snapshots of the consistent point.
type comparer struct {
	src, dst []*server
	// leafRows: a differing range of at most this many rows is compared
	// key by key; keyLimit bounds the differing keys kept per table.
	leafRows int64
	keyLimit int
	states   []*tableState
}

// sources are the source servers that hold t's rows: every shard's part
// of a sharded table, shard 0's copy of an omni table.
func (c *comparer) sources(t *table) []*server {
	if t.Omni {
		return c.src[:1]
	}
	return c.src
}

// groups are the destination groups compared against the source, each
// on its own: all shards together for a sharded table, every shard alone
// for an omni table (a whole copy on each).
func (c *comparer) groups(t *table) [][]*server {
	if !t.Omni {
		return [][]*server{c.dst}
	}
	out := make([][]*server, len(c.dst))
	for k, s := range c.dst {
		out[k] = []*server{s}
	}
	return out
}

func (c *comparer) placementOf(s *server) placement {
	if s.side == sideSource {
		return onSource
	}
	return placement{shards: len(c.dst), shard: s.shard}
}

// readSums reads r's sums of t on every server of servers at once.
func (c *comparer) readSums(ctx context.Context, t *table, r keyRange, servers []*server) ([]sums, error) {
	out := make([]sums, len(servers))
	return out, onEach(ctx, servers, func(ctx context.Context, i int, s *server) error {
		rows, err := s.query(ctx, t.rangeSumsSQL(r, c.placementOf(s)))
		if err != nil {
			return err
		}
		if len(rows) != 1 {
			return fmt.Errorf("%s: %d rows of sums", s, len(rows))
		}
		out[i], err = parseSums(rows[0], 0)
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		return nil
	})
}

// chunk compares one range of a table.
func (c *comparer) chunk(ctx context.Context, t *table, r keyRange) error {
	srcs := c.sources(t)
	all := append(append([]*server(nil), srcs...), c.dst...)
	ss, err := c.readSums(ctx, t, r, all)
	if err != nil {
		return err
	}
	return c.settle(ctx, t, r, ss[:len(srcs)], ss[len(srcs):])
}

// settle takes a range's sums on both sides: counts them, checks the
// placement of mapped tables, names misplaced rows, and narrows every
// destination group that differs from the source down to its rows.
func (c *comparer) settle(ctx context.Context, t *table, r keyRange, srcSums, dstSums []sums) error {
	st := c.states[t.index]
	if t.Mapped && !t.Omni {
		if err := c.mappedPlacement(ctx, t, r, dstSums); err != nil {
			return err
		}
	}
	st.addSums(total(srcSums), dstSums)
	for k, d := range dstSums {
		if d.misplaced > 0 {
			if err := c.misplacedKeys(ctx, t, r, c.dst[k]); err != nil {
				return err
			}
		}
	}
	srcs := c.sources(t)
	for gi, group := range c.groups(t) {
		gs := dstSums
		if t.Omni {
			gs = dstSums[gi : gi+1]
		}
		if total(srcSums).same(total(gs)) {
			continue
		}
		d := st.groups[gi]
		var err error
		if len(t.key) == 0 {
			err = c.buckets(ctx, t, srcs, group, d)
		} else {
			err = c.narrow(ctx, t, r, srcs, group, srcSums, gs, d, 0)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// misplacedKeys names (up to the limit) the rows of r on s that belong on
// another shard.
func (c *comparer) misplacedKeys(ctx context.Context, t *table, r keyRange, s *server) error {
	st := c.states[t.index]
	st.mu.Lock()
	room := maxLoggedKeys - len(st.misplaced)
	st.mu.Unlock()
	if room <= 0 {
		return nil
	}
	var cond string
	if t.hashPlaced() {
		cond = t.notPlacedSQL(c.placementOf(s))
	} else {
		return nil // mappedPlacement names them
	}
	rows, err := s.query(ctx, fmt.Sprintf("SELECT %s FROM %s x%s LIMIT %d", t.keyText(), t.From(), t.where(r, cond), room))
	if err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, row := range rows {
		st.misplaced = append(st.misplaced, fmt.Sprintf("%s (on shard %d)", row[0], s.shard))
	}
	return nil
}

// mappedPlacement counts, for a table placed by list or range mappings,
// the rows of r on each destination shard that the sharding function puts
// on another, by the distinct sharding keys the shard holds there, and
// names some of them.
func (c *comparer) mappedPlacement(ctx context.Context, t *table, r keyRange, dstSums []sums) error {
	return onEach(ctx, c.dst, func(ctx context.Context, k int, s *server) error {
		rows, err := s.query(ctx, t.shardValuesSQL(r))
		if err != nil {
			return err
		}
		var bad []string
		for _, row := range rows {
			n, err := strconv.ParseInt(string(row[1]), 10, 64)
			if err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
			shard, err := t.Router.Shard(sharding.FormatText, row[0], row[0] == nil)
			if err == nil && shard == k {
				continue
			}
			dstSums[k].misplaced += n
			if row[0] != nil && len(bad) < maxLoggedKeys {
				bad = append(bad, quote(string(row[0])))
			}
		}
		if len(bad) == 0 {
			return nil
		}
		keys, err := s.query(ctx, fmt.Sprintf("SELECT %s FROM %s x%s LIMIT %d", t.keyText(), t.From(),
			t.where(r, fmt.Sprintf("x.%s::text IN (%s)", ident(t.ShardColumn), strings.Join(bad, ", "))), maxLoggedKeys))
		if err != nil {
			return err
		}
		st := c.states[t.index]
		st.mu.Lock()
		defer st.mu.Unlock()
		for _, row := range keys {
			if len(st.misplaced) < maxLoggedKeys {
				st.misplaced = append(st.misplaced, fmt.Sprintf("%s (on shard %d)", row[0], k))
			}
		}
		return nil
	})
}

// batch compares several small tables whole, one statement per server for
// all of them. When the statement fails (one of the tables cannot be
// read), each table is compared on its own so that the others still are.
func (c *comparer) batch(ctx context.Context, tables []*table) error {
	type serverSums map[int]sums // by table index
	servers := append(append([]*server(nil), c.src...), c.dst...)
	got := make([]serverSums, len(servers))
	err := onEach(ctx, servers, func(ctx context.Context, i int, s *server) error {
		var mine []*table
		for _, t := range tables {
			if s.side == sideDestination || !t.Omni || s.shard == 0 {
				mine = append(mine, t)
			}
		}
		if len(mine) == 0 {
			return nil
		}
		rows, err := s.query(ctx, batchSumsSQL(mine, c.placementOf(s)))
		if err != nil {
			return err
		}
		got[i] = serverSums{}
		for _, row := range rows {
			idx, err := strconv.Atoi(string(row[0]))
			if err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
			if got[i][idx], err = parseSums(row, 1); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return nil
	})
	if err != nil {
		var te *tableError
		if !errors.As(err, &te) {
			return err
		}
		for _, t := range tables {
			if err := c.compareWhole(ctx, t); err != nil {
				return err
			}
		}
		return nil
	}
	for _, t := range tables {
		var srcSums, dstSums []sums
		for i, s := range servers {
			if got[i] == nil {
				continue
			}
			v, ok := got[i][t.index]
			if !ok {
				continue
			}
			if s.side == sideSource {
				srcSums = append(srcSums, v)
			} else {
				dstSums = append(dstSums, v)
			}
		}
		if err := c.finishRange(ctx, t, func() error { return c.settle(ctx, t, keyRange{}, srcSums, dstSums) }); err != nil {
			return err
		}
	}
	return nil
}

// compareWhole compares a whole table as one range.
func (c *comparer) compareWhole(ctx context.Context, t *table) error {
	return c.finishRange(ctx, t, func() error { return c.chunk(ctx, t, keyRange{}) })
}

// finishRange runs one range's comparison of t: a failure on a server
// whose session survived fails the table (the others go on), any other
// failure ends the VERIFY.
func (c *comparer) finishRange(ctx context.Context, t *table, compare func() error) error {
	err := compare()
	var te *tableError
	if errors.As(err, &te) {
		c.states[t.index].fail(fmt.Errorf("%s: %w", t, err))
		err = nil
	}
	return err
}
