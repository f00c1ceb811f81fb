package verify

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// maxDepth bounds the bisection of one range.
const maxDepth = 48

// narrow finds the rows behind the difference of one range between the
// source servers srcs and a destination group, whose per-server sums are
// given: a range missing on one side entirely is named from the other, a
// small one key by key, a larger one is split at the median key of the
// server that holds most of its rows and each half that differs is
// narrowed again (the second half's sums are the range's minus the
// first's, so each split costs one range of queries).
func (c *comparer) narrow(ctx context.Context, t *table, r keyRange, srcs, group []*server, srcSums, dstSums []sums, d *diffs, depth int) error {
	s, g := total(srcSums), total(dstSums)
	switch {
	case s.same(g):
		return nil
	case g.count == 0:
		return c.oneSided(ctx, t, r, srcs, s.count, d, d.addMissing)
	case s.count == 0:
		return c.oneSided(ctx, t, r, group, g.count, d, d.addExtra)
	case max(s.count, g.count) <= c.leafRows || depth >= maxDepth:
		return c.leaf(ctx, t, r, srcs, group, d)
	}
	busiest, n := srcs[0], int64(-1)
	for i, x := range srcs {
		if srcSums[i].count > n {
			busiest, n = x, srcSums[i].count
		}
	}
	for i, x := range group {
		if dstSums[i].count > n {
			busiest, n = x, dstSums[i].count
		}
	}
	mid, err := c.median(ctx, t, busiest, r, n/2)
	if err != nil {
		return err
	}
	left, right := keyRange{lo: r.lo, hi: mid}, keyRange{lo: mid, hi: r.hi}
	ls, err := c.readSums(ctx, t, left, append(append([]*server(nil), srcs...), group...))
	if err != nil {
		return err
	}
	lsrc, ldst := ls[:len(srcs)], ls[len(srcs):]
	rsrc, rdst := make([]sums, len(srcs)), make([]sums, len(group))
	for i := range srcs {
		rsrc[i] = srcSums[i].minus(lsrc[i])
	}
	for i := range group {
		rdst[i] = dstSums[i].minus(ldst[i])
	}
	if err := c.narrow(ctx, t, left, srcs, group, lsrc, ldst, d, depth+1); err != nil {
		return err
	}
	return c.narrow(ctx, t, right, srcs, group, rsrc, rdst, d, depth+1)
}

// median is the key of the row at offset n of r on s, in key order.
func (c *comparer) median(ctx context.Context, t *table, s *server, r keyRange, n int64) ([]string, error) {
	rows, err := s.query(ctx, fmt.Sprintf("SELECT %s FROM %s x%s ORDER BY %s OFFSET %d LIMIT 1",
		t.keyColumnsText(), t.From(), t.where(r), t.keyList(), n))
	if err != nil {
		return nil, err
	}
	if len(rows) != 1 {
		return nil, fmt.Errorf("%s: no key at offset %d of a range of %s", s, n, t)
	}
	out := make([]string, len(rows[0]))
	for i, v := range rows[0] {
		out[i] = string(v)
	}
	return out, nil
}

// keysSQL reads the key and hash of r's rows.
func (c *comparer) keysSQL(t *table, r keyRange, limit int) string {
	sql := fmt.Sprintf("SELECT %s, (%s)::text FROM %s x%s", t.keyText(), t.hash, t.From(), t.where(r))
	if limit >= 0 {
		sql += " LIMIT " + strconv.Itoa(limit)
	}
	return sql
}

// readKeys reads the keys and hashes of r's rows on every server of
// servers at once (up to limit rows each, unless limit < 0).
func (c *comparer) readKeys(ctx context.Context, t *table, r keyRange, servers []*server, limit int) ([][]keyHash, error) {
	out := make([][]keyHash, len(servers))
	return out, onEach(ctx, servers, func(ctx context.Context, i int, s *server) error {
		rows, err := s.query(ctx, c.keysSQL(t, r, limit))
		if err != nil {
			return err
		}
		out[i] = make([]keyHash, len(rows))
		for j, row := range rows {
			out[i][j] = keyHash{key: string(row[0]), hash: string(row[1])}
		}
		return nil
	})
}

// oneSided counts the n rows of a range that only servers hold (missing
// from a destination group that holds none of the range, or extra on it),
// naming as many as the key limit keeps.
func (c *comparer) oneSided(ctx context.Context, t *table, r keyRange, servers []*server, n int64, d *diffs, add func(keyHash, int)) error {
	room := c.keyLimit - d.keys()
	named := int64(0)
	if room > 0 {
		keys, err := c.readKeys(ctx, t, r, servers, room)
		if err != nil {
			return err
		}
		for _, ks := range keys {
			for _, k := range ks {
				if named < n {
					add(k, c.keyLimit)
					named++
				}
			}
		}
	}
	for ; named < n; named++ {
		add(keyHash{}, 0)
	}
	return nil
}

// leaf compares a small range key by key.
func (c *comparer) leaf(ctx context.Context, t *table, r keyRange, srcs, group []*server, d *diffs) error {
	keys, err := c.readKeys(ctx, t, r, append(append([]*server(nil), srcs...), group...), -1)
	if err != nil {
		return err
	}
	src := map[string]string{}
	for _, ks := range keys[:len(srcs)] {
		for _, k := range ks {
			src[k.key] = k.hash
		}
	}
	dst := map[string]string{}
	for _, ks := range keys[len(srcs):] {
		for _, k := range ks {
			if _, dup := dst[k.key]; dup {
				d.addExtra(k, c.keyLimit) // the same key on two shards
				continue
			}
			dst[k.key] = k.hash
		}
	}
	for k, h := range src {
		dh, ok := dst[k]
		switch {
		case !ok:
			d.addMissing(keyHash{key: k, hash: h}, c.keyLimit)
		case dh != h:
			d.addDifferent(k, c.keyLimit)
		}
	}
	for k, h := range dst {
		if _, ok := src[k]; !ok {
			d.addExtra(keyHash{key: k, hash: h}, c.keyLimit)
		}
	}
	return nil
}

// bucketBits: a table without a key is compared in 1,024 buckets of its
// rows' hashes.
const bucketShift = 54

// buckets finds the rows behind the difference of a table without a key:
// the sums of its rows by hash bucket on every server, then the hashes of
// the differing buckets' rows compared as multisets. A changed row counts
// as missing (its old version) and extra (its new one); some of the rows
// on one side only are logged whole.
func (c *comparer) buckets(ctx context.Context, t *table, srcs, group []*server, d *diffs) error {
	servers := append(append([]*server(nil), srcs...), group...)
	hashes := fmt.Sprintf("SELECT %s AS h FROM %s x OFFSET 0", t.hash, t.From())
	type bucketSums map[int64]sums
	got := make([]bucketSums, len(servers))
	err := onEach(ctx, servers, func(ctx context.Context, i int, s *server) error {
		rows, err := s.query(ctx, fmt.Sprintf("SELECT h >> %d, count(*), sum(h)::text, 0 FROM (%s) x GROUP BY 1", bucketShift, hashes))
		if err != nil {
			return err
		}
		got[i] = bucketSums{}
		for _, row := range rows {
			b, err := strconv.ParseInt(string(row[0]), 10, 64)
			if err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
			if got[i][b], err = parseSums(row, 1); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	side := func(from, to int) bucketSums {
		out := bucketSums{}
		for _, bs := range got[from:to] {
			for b, s := range bs {
				if x, ok := out[b]; ok {
					out[b] = x.plus(s)
				} else {
					out[b] = s
				}
			}
		}
		return out
	}
	src, dst := side(0, len(srcs)), side(len(srcs), len(servers))
	var differ []string
	for b, s := range src {
		if x, ok := dst[b]; !ok || !x.same(s) {
			differ = append(differ, strconv.FormatInt(b, 10))
		}
	}
	for b := range dst {
		if _, ok := src[b]; !ok {
			differ = append(differ, strconv.FormatInt(b, 10))
		}
	}
	if len(differ) == 0 {
		return nil
	}
	counts := make([]map[string]int64, len(servers))
	err = onEach(ctx, servers, func(ctx context.Context, i int, s *server) error {
		rows, err := s.query(ctx, fmt.Sprintf("SELECT h::text FROM (%s) x WHERE h >> %d IN (%s)", hashes, bucketShift, strings.Join(differ, ", ")))
		if err != nil {
			return err
		}
		counts[i] = map[string]int64{}
		for _, row := range rows {
			counts[i][string(row[0])]++
		}
		return nil
	})
	if err != nil {
		return err
	}
	net := map[string]int64{} // source count minus destination count
	for i, m := range counts {
		for h, n := range m {
			if i < len(srcs) {
				net[h] += n
			} else {
				net[h] -= n
			}
		}
	}
	var onlySrc, onlyDst []string
	var nSrc, nDst int64
	for h, n := range net {
		switch {
		case n > 0:
			d.nMissing += n
			nSrc += n
			onlySrc = append(onlySrc, h)
		case n < 0:
			d.nExtra -= n
			nDst -= n
			onlyDst = append(onlyDst, h)
		}
	}
	for _, part := range []struct {
		servers []*server
		hashes  []string
		rows    int64
		label   string
	}{{srcs, onlySrc, nSrc, "on the source only"}, {group, onlyDst, nDst, "on the destination only"}} {
		logged := int64(0)
		for _, s := range part.servers {
			limit := min(part.rows-logged, int64(maxLoggedKeys))
			if limit <= 0 {
				break
			}
			rows, err := s.query(ctx, fmt.Sprintf("SELECT left(x::text, 200) FROM %s x WHERE %s IN (%s) LIMIT %d",
				t.From(), t.hash, strings.Join(capKeys(part.hashes), ", "), limit))
			if err != nil {
				return err
			}
			for _, row := range rows {
				d.rows = append(d.rows, fmt.Sprintf("%s (%s)", row[0], part.label))
			}
			logged += int64(len(rows))
		}
	}
	return nil
}
