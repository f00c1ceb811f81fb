package copier

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/progress"
)

// A streaming migration copies a table again when the stream cannot carry
// its rows: a table added to the publication with rows the stream never
// saw (ALTER PUBLICATION ... ADD TABLE), a column added with a volatile
// default (the source rewrote the table, which logical decoding does not
// carry). The stream's DDL stage marks the table in the copy state inside
// the destination transaction that applies the statement (MarkForCopy),
// then copies it (CopyAgain): emptied on every shard, copied from every
// source shard at a new snapshot, each unit's watermark that snapshot's
// LSN, so the stream skips the table's changes committed before it. A
// restart in between finds the mark (Pending) and copies before it
// streams on.

// MarkForCopy records, through conn (destination shard 0, inside the
// caller's transaction), that tables (schema, name) of the copy with slot
// base must be copied again.
func MarkForCopy(ctx context.Context, conn *pgx.Conn, slot string, sourceShards int, tables [][2]string) error {
	if err := ensureState(ctx, conn); err != nil {
		return err
	}
	for _, t := range tables {
		tag, err := conn.Exec(ctx, `UPDATE reshard.copy_units SET done = false, watermark_lsn = NULL, rows = NULL, bytes = NULL, finished_at = NULL
			WHERE slot = $1 AND table_schema = $2 AND table_name = $3`, slot, t[0], t[1])
		if err != nil {
			return fmt.Errorf("mark %s.%s to be copied again: %w", t[0], t[1], err)
		}
		if tag.RowsAffected() > 0 {
			continue
		}
		for k := 0; k < sourceShards; k++ {
			if _, err := conn.Exec(ctx, `INSERT INTO reshard.copy_units (slot, source_shard, table_schema, table_name, unit, units, kind, predicate, estimate_bytes)
				VALUES ($1, $2, $3, $4, 1, 1, $5, '', 0) ON CONFLICT DO NOTHING`, slot, k, t[0], t[1], unitWhole); err != nil {
				return fmt.Errorf("mark %s.%s to be copied again: %w", t[0], t[1], err)
			}
		}
	}
	return nil
}

// Pending lists the tables marked to be copied again for the copy with
// slot base, through conn (destination shard 0).
func Pending(ctx context.Context, conn *pgx.Conn, slot string) ([][2]string, error) {
	saved, err := loadState(ctx, conn, slot)
	if err != nil {
		return nil, err
	}
	seen := map[[2]string]bool{}
	var out [][2]string
	for _, s := range saved {
		k := [2]string{s.schema, s.name}
		if !s.done && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out, nil
}

// CopyAgain copies tables (schema, name) of the copy with slot base again:
// emptied on every destination shard, then copied from every source shard
// (omni tables from shard 0) at a new snapshot of each, through the
// columns the shards have. It returns once every unit is done.
func CopyAgain(ctx context.Context, j *job.Job, slot string, tables [][2]string) error {
	return copyAgain(ctx, j, slot, tables, 1)
}

// copyAgain is CopyAgain's round-th try: the tables a try finds rewritten
// on the source after its snapshot (a TRUNCATE: see worker.rewritten) are
// copied again at a newer one, at most maxRewriteRounds times.
func copyAgain(ctx context.Context, j *job.Job, slot string, tables [][2]string, round int) error {
	if round > maxRewriteRounds {
		names := make([]string, len(tables))
		for i, t := range tables {
			names[i] = t[0] + "." + t[1]
		}
		return job.Errorf("55000", "%s: rewritten on the source (a TRUNCATE) during each of %d copies at a new snapshot; copy again when the table is not being truncated", strings.Join(names, ", "), maxRewriteRounds)
	}
	start := time.Now()
	log := j.Logger("copy")
	cfg := j.Catalog.Config.General
	format, err := sharding.ParseFormat(cfg.ReshardingCopyFormat)
	if err != nil {
		return err
	}
	threshold := cfg.ReshardingSplitThreshold
	if threshold == 0 {
		threshold = DefaultSplitThreshold
	}
	srcConns, err := j.ConnectSources(ctx)
	if err != nil {
		return err
	}
	defer srcConns.Close()
	dstConns, err := j.ConnectDestinations(ctx)
	if err != nil {
		return err
	}
	defer dstConns.Close()
	req := &Request{Slot: slot}
	run := &copyRun{job: j, req: req, log: log, format: format, srcDSN: j.SourceDSN, dstDSN: j.DestinationDSN, state: dstConns[0]}
	if err := ensureState(ctx, run.state); err != nil {
		return err
	}
	var described []*Table
	for _, n := range tables {
		t, err := describeTable(ctx, srcConns[0], n[0], n[1])
		if err != nil {
			return err
		}
		if len(t.Columns) == 0 {
			// Gone from the source since: nothing to copy; the stream
			// carries its DROP.
			if _, err := run.state.Exec(ctx, `DELETE FROM reshard.copy_units WHERE slot = $1 AND table_schema = $2 AND table_name = $3`, slot, n[0], n[1]); err != nil {
				return err
			}
			continue
		}
		// The columns the shards have: the source may be ahead of the
		// stream (a column added since is added by the stream later).
		cols, err := tableColumns(ctx, dstConns[0], t.Qualified())
		if err != nil {
			return err
		}
		has := map[string]bool{}
		for _, c := range cols {
			has[c.name] = !c.generated
		}
		kept := t.Columns[:0]
		for _, c := range t.Columns {
			if has[c.Name] {
				kept = append(kept, c)
			}
		}
		t.Columns = kept
		if err := route(t, j.Destination); err != nil {
			return err
		}
		described = append(described, t)
	}
	var problems []string
	for k, sh := range j.Destination.Shards {
		p, err := destinationChecks(ctx, dstConns[k], fmt.Sprintf("destination %s", sh.Primary), described, wantPresent)
		if err != nil {
			return err
		}
		problems = append(problems, p...)
	}
	if len(problems) > 0 {
		return job.Refused("55000", "cannot copy again", problems)
	}
	if len(described) == 0 {
		return nil
	}
	var units []*unit
	for i := range j.Source.Shards {
		for _, t := range described {
			if t.Omni && i > 0 {
				continue
			}
			us, err := planUnits(ctx, srcConns[i], t, j.Source.Shards[i].Number, threshold)
			if err != nil {
				return err
			}
			units = append(units, us...)
		}
	}
	// The new plan replaces the tables' units; they are emptied on every
	// shard; then a snapshot per source shard.
	for _, t := range described {
		if _, err := run.state.Exec(ctx, `DELETE FROM reshard.copy_units WHERE slot = $1 AND table_schema = $2 AND table_name = $3`, slot, t.Schema, t.Name); err != nil {
			return fmt.Errorf("replace the copy plan of %s: %w", t, err)
		}
		for k, c := range dstConns {
			if _, err := c.Exec(ctx, t.EmptySQL()); err != nil {
				return fmt.Errorf("empty %s on destination shard %d to copy it again: %w", t, k, err)
			}
		}
	}
	if err := saveUnits(ctx, run.state, slot, units); err != nil {
		return err
	}
	// The format as a copy chooses it (binary only between servers of one
	// major version); every unit read from its shard's primary.
	var versions []serverVersion
	for i, c := range srcConns {
		v, err := readVersion(ctx, c, fmt.Sprintf("source shard %d", i))
		if err != nil {
			return err
		}
		versions = append(versions, v)
	}
	for k, c := range dstConns {
		v, err := readVersion(ctx, c, fmt.Sprintf("destination shard %d", k))
		if err != nil {
			return err
		}
		versions = append(versions, v)
	}
	run.format, _ = chooseFormat(format, versions)
	nodes := make([][]*copyNode, len(j.Source.Shards))
	defer func() {
		for _, ns := range nodes {
			for _, n := range ns {
				n.slot.close()
			}
		}
	}()
	for i, sh := range j.Source.Shards {
		s, err := createSlot(ctx, j.Catalog, sh.Primary, newSlotName()+"_again", true)
		if err != nil {
			return job.Wrap("55000", err, "%v", err)
		}
		nodes[i] = []*copyNode{{shard: i, node: sh.Primary, dsn: j.SourceDSN[i], slot: s, version: versions[i].version}}
	}
	items := map[*unit]*progress.TableCopy{}
	for _, u := range units {
		where := ""
		if u.predicate != "" {
			where = " WHERE " + u.predicate
		}
		item := &progress.TableCopy{Task: j.Task, Schema: u.table.Schema, Table: u.table.Name, SourceShard: u.sourceShard,
			Unit: u.n, Units: u.of, EstimateBytes: u.estimateBytes, SQL: u.table.copyOutSQL(where, run.format)}
		items[u] = item
		j.Registry.AddCopies(item)
	}
	sort.SliceStable(units, func(a, b int) bool { return units[a].estimateBytes > units[b].estimateBytes })
	log.Info("copying tables again", "tables", len(described), "units", len(units))
	if err := run.copyAll(ctx, units, items, nodes, cfg.ReshardingParallelCopies); err != nil {
		return err
	}
	if again := run.takeRewritten(); len(again) > 0 {
		if err := copyAgain(ctx, j, slot, again, round+1); err != nil {
			return err
		}
	}
	log.Info("tables copied again", "tables", len(described), "units", len(units), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}
