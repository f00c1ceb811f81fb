package copier

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// maxRanges bounds how many ranges one table is split into.
const maxRanges = 64

// planUnits splits a table on one source shard into copy units: the whole
// table when it is small, else ranges of about threshold bytes — by the
// primary key when it is one integer column (ranges stay meaningful on the
// destination, so a failed range can be cleared and copied again), else by
// ctid block ranges. The first and last ranges are open-ended, so rows
// outside the bounds seen at planning time are still copied.
func planUnits(ctx context.Context, conn *pgx.Conn, t *Table, sourceShard int, threshold int64) ([]*unit, error) {
	// A partitioned table's size is its leaves'; its ctid ranges cover the
	// block numbers of its largest leaf (a ctid condition applies to each
	// leaf), so every row falls in exactly one range.
	var size, blocks, blockSize int64
	if err := conn.QueryRow(ctx, `SELECT `+treeSize+`,
		(SELECT coalesce(max(pg_relation_size(p.relid)), 0)::bigint FROM pg_partition_tree(c.oid) p WHERE p.isleaf) / current_setting('block_size')::bigint,
		current_setting('block_size')::bigint
		FROM pg_class c WHERE c.oid = to_regclass($1)`, t.sourceName()).Scan(&size, &blocks, &blockSize); err != nil {
		return nil, fmt.Errorf("size of %s: %w", t, err)
	}
	if !t.Partitioned {
		blocks = size / blockSize
	}
	whole := []*unit{{sourceShard: sourceShard, table: t, n: 1, of: 1, kind: unitWhole, predicate: t.onlyOwnRows(""), estimateBytes: size}}
	k := int64(1)
	if threshold > 0 {
		k = (size + threshold - 1) / threshold
	}
	if k > maxRanges {
		k = maxRanges
	}
	if k <= 1 {
		return whole, nil
	}
	var preds []string
	var ranges [][2]*int64
	kind := unitCtid
	switch t.PKType {
	case "int2", "int4", "int8":
		kind = unitPK
		var lo, hi *int64
		pk := pgx.Identifier{t.PK[0]}.Sanitize()
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT min(%s)::bigint, max(%s)::bigint FROM %s", pk, pk, t.sourceFrom())).Scan(&lo, &hi); err != nil {
			return nil, fmt.Errorf("key range of %s: %w", t, err)
		}
		if lo == nil || hi == nil {
			return whole, nil
		}
		span := *hi - *lo + 1
		if span < k {
			k = span
		}
		if k <= 1 {
			return whole, nil
		}
		bounds := make([]int64, 0, k-1)
		ranges = make([][2]*int64, 0, k)
		for i := int64(1); i < k; i++ {
			bounds = append(bounds, *lo+span/k*i)
		}
		for i := 0; i <= len(bounds); i++ {
			var lo, hi *int64
			if i > 0 {
				lo = &bounds[i-1]
			}
			if i < len(bounds) {
				hi = &bounds[i]
			}
			ranges = append(ranges, [2]*int64{lo, hi})
			switch {
			case i == 0:
				preds = append(preds, fmt.Sprintf("%s < %d", pk, bounds[0]))
			case i == len(bounds):
				preds = append(preds, fmt.Sprintf("%s >= %d", pk, bounds[i-1]))
			default:
				preds = append(preds, fmt.Sprintf("%s >= %d AND %s < %d", pk, bounds[i-1], pk, bounds[i]))
			}
		}
	default:
		if blocks < k {
			k = blocks
		}
		if k <= 1 {
			return whole, nil
		}
		step := blocks / k
		for i := int64(0); i < k; i++ {
			switch {
			case i == 0:
				preds = append(preds, fmt.Sprintf("ctid < '(%d,0)'::tid", step))
			case i == k-1:
				preds = append(preds, fmt.Sprintf("ctid >= '(%d,0)'::tid", step*i))
			default:
				preds = append(preds, fmt.Sprintf("ctid >= '(%d,0)'::tid AND ctid < '(%d,0)'::tid", step*i, step*(i+1)))
			}
		}
	}
	units := make([]*unit, len(preds))
	for i, p := range preds {
		units[i] = &unit{sourceShard: sourceShard, table: t, n: i + 1, of: len(preds), kind: kind, predicate: t.onlyOwnRows(p), estimateBytes: size / int64(len(preds))}
		if ranges != nil {
			units[i].lo, units[i].hi = ranges[i][0], ranges[i][1]
		}
	}
	return units, nil
}
