package schema

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sync/job"
)

// SequenceGap is added above the highest value any node has handed out (or
// stored) before the shards' interleaved sequences start, so that values
// issued meanwhile on the source cannot collide.
const SequenceGap = 10_000

// sequenceInfo is a sequence on the destination and the column it feeds.
type sequenceInfo struct {
	name                 string // quoted, schema-qualified
	increment, min, max  int64
	ownerTable, ownerCol string // quoted; empty when not owned
}

const listSequences = `
SELECT quote_ident(ns.nspname) || '.' || quote_ident(c.relname),
       s.seqincrement, s.seqmin, s.seqmax,
       COALESCE((SELECT quote_ident(tn.nspname) || '.' || quote_ident(t.relname)
                 FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
                   AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i') LIMIT 1), ''),
       COALESCE((SELECT quote_ident(a.attname)
                 FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
                   AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i') LIMIT 1), '')
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace ns ON ns.oid = c.relnamespace
WHERE ns.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1`

// seqPosition reads a sequence's position and its column's maximum on one
// node. exists is false when the sequence is not there.
func seqPosition(ctx context.Context, conn *pgx.Conn, s sequenceInfo) (last int64, called, exists bool, colMax *int64, err error) {
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", s.name).Scan(&exists); err != nil || !exists {
		return 0, false, false, nil, err
	}
	if err := conn.QueryRow(ctx, "SELECT last_value, is_called FROM "+s.name).Scan(&last, &called); err != nil {
		return 0, false, true, nil, fmt.Errorf("read sequence %s: %w", s.name, err)
	}
	if s.ownerTable != "" {
		var present bool
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", s.ownerTable).Scan(&present); err != nil {
			return 0, false, true, nil, err
		}
		if present {
			if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT max(%s)::bigint FROM %s", s.ownerCol, s.ownerTable)).Scan(&colMax); err != nil {
				return 0, false, true, nil, fmt.Errorf("max of %s.%s: %w", s.ownerTable, s.ownerCol, err)
			}
		}
	}
	return last, called, true, colMax, nil
}

// cutoverStatements interleaves every sequence across the destination
// shards: shard k of N restarts above the global maximum (the source and
// every shard, values handed out and values stored, plus SequenceGap) at
// offset k with INCREMENT BY N, so no two shards can ever hand out the same
// value. Sequences already interleaved that way above the data are left
// alone, which makes the phase idempotent.
//
// Then, for every hash-sharded table whose key takes its values from a
// sequence, shard-local ids (see local_ids.go).
func cutoverStatements(ctx context.Context, src *pgx.Conn, ep *endpoints, publication string, log hclog.Logger) (map[int][]*Statement, error) {
	n := int64(len(ep.targets))
	conns := ep.shards
	rows, err := conns[0].Query(ctx, listSequences)
	if err != nil {
		return nil, fmt.Errorf("list sequences: %w", err)
	}
	var seqs []sequenceInfo
	for rows.Next() {
		var s sequenceInfo
		if err := rows.Scan(&s.name, &s.increment, &s.min, &s.max, &s.ownerTable, &s.ownerCol); err != nil {
			rows.Close()
			return nil, err
		}
		seqs = append(seqs, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := map[int][]*Statement{}
	for _, s := range seqs {
		if s.increment < 0 {
			log.Warn("descending sequence left as it is", "sequence", s.name)
			continue
		}
		// dataMax: the highest value stored or handed out anywhere.
		var dataMax int64
		consider := func(v int64) {
			if v > dataMax {
				dataMax = v
			}
		}
		last, called, exists, colMax, err := seqPosition(ctx, src, s)
		if err != nil {
			return nil, err
		}
		if exists && called {
			consider(last)
		}
		if colMax != nil {
			consider(*colMax)
		}
		shardLast := make([]int64, len(conns))
		interleaved := true
		for i, c := range conns {
			last, _, exists, colMax, err := seqPosition(ctx, c, s)
			if err != nil {
				return nil, err
			}
			if !exists {
				return nil, job.Errorf("42P01", "sequence %s is missing on %s shard %d: run SCHEMA_SYNC PRE first", s.name, ep.targets[i].Database, ep.targets[i].Shard)
			}
			if colMax != nil {
				consider(*colMax)
			}
			shardLast[i] = last
			var inc int64
			if err := c.QueryRow(ctx, "SELECT seqincrement FROM pg_sequence WHERE seqrelid = to_regclass($1)", s.name).Scan(&inc); err != nil {
				return nil, err
			}
			k := int64(ep.targets[i].Shard)
			if inc != n || ((last-k)%n+n)%n != 0 {
				interleaved = false
			}
		}
		for _, l := range shardLast {
			if l <= dataMax {
				interleaved = false
			}
		}
		if interleaved {
			continue
		}
		base := dataMax + SequenceGap
		for _, l := range shardLast {
			if l+1 > base {
				base = l + 1
			}
		}
		base = ((base + n - 1) / n) * n
		for _, t := range ep.targets {
			start := base + int64(t.Shard)
			if start > s.max {
				return nil, job.Errorf("22003", "sequence %s: interleaved start %d on shard %d exceeds its MAXVALUE %d", s.name, start, t.Shard, s.max).
					WithHint("widen the sequence (ALTER SEQUENCE ... AS bigint) or raise its MAXVALUE")
			}
			out[t.Shard] = append(out[t.Shard], &Statement{
				SQL:  fmt.Sprintf("ALTER SEQUENCE %s INCREMENT BY %d RESTART WITH %d", s.name, n, start),
				Kind: "sequence", Phase: PhaseCutover, Table: s.name,
			})
		}
	}
	keys, err := sequenceKeys(ctx, src, conns[0], publication, ep.dst, log)
	if err != nil {
		return nil, err
	}
	for _, t := range ep.targets {
		out[t.Shard] = append(out[t.Shard], localIDStatements(keys, int(n), t.Shard)...)
	}
	return out, nil
}

// MoveSourceSequences moves every sequence of the source above the highest
// value any destination shard has handed out or stored (plus SequenceGap):
// after a rollback the old database takes the writes again and must not
// hand out ids the shards already used.
func MoveSourceSequences(ctx context.Context, j *job.Job) error {
	log := j.Logger("sequences")
	shards, err := j.ConnectDestinations(ctx)
	if err != nil {
		return err
	}
	defer shards.Close()
	sources, err := j.ConnectSources(ctx)
	if err != nil {
		return err
	}
	defer sources.Close()
	for _, c := range sources {
		if _, err := c.Exec(ctx, "SET default_transaction_read_only = off"); err != nil {
			return err
		}
		rows, err := c.Query(ctx, listSequences)
		if err != nil {
			return fmt.Errorf("list sequences: %w", err)
		}
		var seqs []sequenceInfo
		for rows.Next() {
			var s sequenceInfo
			if err := rows.Scan(&s.name, &s.increment, &s.min, &s.max, &s.ownerTable, &s.ownerCol); err != nil {
				rows.Close()
				return err
			}
			seqs = append(seqs, s)
		}
		rows.Close()
		for _, s := range seqs {
			if s.increment < 0 {
				continue
			}
			var top int64
			for _, conn := range append([]*pgx.Conn{c}, shards...) {
				last, called, exists, colMax, err := seqPosition(ctx, conn, s)
				if err != nil {
					return err
				}
				if exists && (called || conn != c) && last > top {
					top = last
				}
				if colMax != nil && *colMax > top {
					top = *colMax
				}
			}
			target := top + SequenceGap
			if target > s.max {
				log.Warn("sequence cannot move above the shards' values: its MAXVALUE is lower", "sequence", s.name)
				continue
			}
			if _, err := c.Exec(ctx, "SELECT setval($1, $2)", s.name, target); err != nil {
				return fmt.Errorf("move sequence %s: %w", s.name, err)
			}
		}
	}
	return nil
}
