package copier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/progress"
)

// DefaultSplitThreshold is the table size above which a table is copied as
// several ranges at once ([general] resharding_split_threshold).
const DefaultSplitThreshold = 256 << 20

// maxAttempts bounds how often a unit is tried on transient failures.
const maxAttempts = 5

// Request is one copy of a job's publication.
type Request struct {
	// Slot names the replication slot (generated when empty). With several
	// source shards the slot of shard k is <Slot>_<k>. Running again with
	// the same slot resumes.
	Slot string
	// SyncOnly skips the primary-key check (no streaming follows).
	SyncOnly bool
	// SplitThreshold overrides [general] resharding_split_threshold.
	SplitThreshold int64
	// Slots, when set, are the fresh copy's slots, created beforehand
	// (CreateSlots) with slot name Slot: the copy reads at their
	// snapshots, and describes the tables as those snapshots see them
	// (the schema the shards were given from the same snapshot), so DDL
	// run on the source since does not stop it. The copy closes them.
	Slots *Slots
}

// Result is what a copy did.
type Result struct {
	// Slot is the slot name given or generated; Slots the per-shard names.
	Slot  string
	Slots []string
	// ConsistentLSN is each source shard's slot position: the copy equals
	// the source as of these LSNs (for units copied by this run or the
	// first one), and streaming starts there.
	ConsistentLSN []pglogrepl.LSN
	// Resumed tells whether an earlier copy with this slot was continued.
	Resumed bool
	// Tables, Units, UnitsSkipped: tables copied, units copied in this run,
	// units finished by an earlier run.
	Tables, Units, UnitsSkipped int
	Rows, Bytes                 int64
	Elapsed                     time.Duration
}

// copyRun is the state shared by a copy's workers.
type copyRun struct {
	job     *job.Job
	req     *Request
	log     hclog.Logger
	format  sharding.Format
	srcDSN  []string // per source shard
	dstDSN  []string // per destination shard
	state   *pgx.Conn
	stateMu sync.Mutex
	// rewritten are the tables (schema, name) whose storage the source
	// replaced after the copy's snapshot (a TRUNCATE): their units were
	// left undone, to be copied again at a new snapshot (copyAgain).
	// Guarded by stateMu.
	rewritten [][2]string
}

// maxRewriteRounds bounds how many times tables rewritten on the source
// during their copy are copied again at a new snapshot.
const maxRewriteRounds = 5

// takeRewritten returns the tables found rewritten since the last call.
func (r *copyRun) takeRewritten() [][2]string {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	out := r.rewritten
	r.rewritten = nil
	return out
}

// noteRewritten records that table t was rewritten after the snapshot.
func (r *copyRun) noteRewritten(t *Table) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	k := [2]string{t.Schema, t.Name}
	for _, x := range r.rewritten {
		if x == k {
			return
		}
	}
	r.rewritten = append(r.rewritten, k)
}

// SlotNames returns the slot of each of n source shards for slot base: base
// itself for one shard, <base>_<k> for shard k of several.
func SlotNames(base string, n int) []string {
	if n == 1 {
		return []string{base}
	}
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s_%d", base, i)
	}
	return out
}

// NewSlotName returns a fresh slot name (reshard_ and 8 hex digits).
func NewSlotName() string { return newSlotName() }

func newSlotName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "reshard_" + hex.EncodeToString(b)
}

// Run copies every table of the publication. Before anything is created it
// checks the source shards (logical WAL, a free slot and sender, the
// publication), the tables (a primary key or replica identity, unless
// SyncOnly) and the destination (tables exist with compatible columns and,
// for a fresh copy, are empty). Then it creates one slot per source shard
// with an exported snapshot, and copies.
func Run(ctx context.Context, j *job.Job, req Request) (*Result, error) {
	start := time.Now()
	log := j.Logger("copy")
	cfg := j.Catalog.Config.General
	if req.SplitThreshold == 0 {
		req.SplitThreshold = cfg.ReshardingSplitThreshold
	}
	if req.SplitThreshold == 0 {
		req.SplitThreshold = DefaultSplitThreshold
	}
	format, err := sharding.ParseFormat(cfg.ReshardingCopyFormat)
	if err != nil {
		return nil, err
	}
	src := j.Source
	run := &copyRun{job: j, req: &req, log: log, format: format, srcDSN: j.SourceDSN, dstDSN: j.DestinationDSN}
	res := &Result{Slot: req.Slot}
	if res.Slot == "" {
		res.Slot = newSlotName()
	}
	req.Slot = res.Slot
	res.Slots = SlotNames(res.Slot, len(src.Shards))

	// Connections used for planning and checks.
	srcConns, err := j.ConnectSources(ctx)
	if err != nil {
		return nil, err
	}
	defer srcConns.Close()
	dstConns, err := j.ConnectDestinations(ctx)
	if err != nil {
		return nil, err
	}
	defer dstConns.Close()
	run.state = dstConns[0]
	saved, err := loadState(ctx, run.state, res.Slot)
	if err != nil {
		return nil, err
	}
	res.Resumed = len(saved) > 0

	// Preflight.
	mode := CheckFresh
	if res.Resumed {
		mode = CheckResume
	}
	check := CheckRequest{Slot: res.Slot, Mode: mode, SyncOnly: req.SyncOnly}
	if req.Slots != nil && !res.Resumed {
		// The slots were made for this copy; the tables are described as
		// their snapshot sees them (the schema the shards got from it).
		snap, err := snapshotConn(ctx, j.SourceDSN[0], req.Slots.Snapshot(0), 0)
		if err != nil {
			return nil, err
		}
		defer snap.Close(context.Background())
		check.SlotsMade, check.Describe = true, snap
	}
	tables, problems, err := Check(ctx, j, srcConns, dstConns, check)
	if err != nil {
		return nil, err
	}
	// The servers' versions (for the format), and the replicas each source
	// shard is read from, with what they lack (replicas.go).
	var versions []serverVersion
	srcVersions := make([]int, len(src.Shards))
	picked := make([][]replicaProbe, len(src.Shards))
	noReplica := make([]string, len(src.Shards))
	for i, sh := range src.Shards {
		v, err := readVersion(ctx, srcConns[i], fmt.Sprintf("source shard %d (%s)", sh.Number, sh.Primary.Addr()))
		if err != nil {
			return nil, err
		}
		versions = append(versions, v)
		srcVersions[i] = v.version
		if picked[i], noReplica[i], err = pickReplicas(ctx, j, i, srcConns[i]); err != nil {
			return nil, err
		}
		for _, r := range picked[i] {
			problems = append(problems, r.problems...)
			versions = append(versions, serverVersion{where: fmt.Sprintf("source shard %d replica %s", sh.Number, r.node.Addr()), version: r.version})
		}
	}
	for i, sh := range j.Destination.Shards {
		v, err := readVersion(ctx, dstConns[i], fmt.Sprintf("destination shard %d (%s)", sh.Number, sh.Primary.Addr()))
		if err != nil {
			return nil, err
		}
		versions = append(versions, v)
	}
	if len(problems) > 0 {
		return nil, job.Refused("55000", "cannot copy", problems)
	}
	if len(tables) == 0 {
		return nil, job.Errorf("55000", "publication %q has no tables", j.Publication)
	}
	format, why := chooseFormat(format, versions)
	run.format = format
	log.Info("copy format", "format", format, "reason", why)

	// Slots and snapshots: the permanent slots on a fresh copy; temporary
	// ones (for a newer snapshot) on a resumed one.
	slots := make([]*snapshotSlot, len(src.Shards))
	nodes := make([][]*copyNode, len(src.Shards))
	defer func() {
		for _, s := range slots {
			s.close()
		}
		for _, ns := range nodes {
			for _, n := range ns {
				if n.node.Role == "replica" {
					n.slot.close()
				}
			}
		}
	}()
	dropCreated := func() {
		for i, s := range slots {
			if s != nil && !res.Resumed {
				s.close()
				slots[i] = nil
				_, _ = srcConns[i].Exec(context.Background(), "SELECT pg_drop_replication_slot($1)", s.name)
			}
		}
	}
	for i, sh := range src.Shards {
		if req.Slots != nil && !res.Resumed {
			slots[i] = req.Slots.slots[i]
			continue
		}
		name, temporary := res.Slots[i], false
		if res.Resumed {
			name, temporary = newSlotName()+"_resume", true
		}
		s, err := createSlot(ctx, j.Catalog, sh.Primary, name, temporary)
		if err != nil {
			dropCreated()
			return nil, job.Wrap("55000", err, "%v", err)
		}
		slots[i] = s
		log.Info("snapshot exported", "source_shard", sh.Number, "slot", s.name, "temporary", temporary, "lsn", s.lsn, "snapshot", s.snapshot)
	}
	// The nodes each source shard is read from: its replicas, each with
	// its own snapshot taken after the primary's (see replicas.go), or the
	// primary.
	for i := range src.Shards {
		if nodes[i], err = copyNodes(ctx, j, i, slots[i], srcVersions[i], picked[i], noReplica[i], log); err != nil {
			dropCreated()
			return nil, err
		}
	}
	if !res.Resumed {
		for _, s := range slots {
			res.ConsistentLSN = append(res.ConsistentLSN, s.lsn)
		}
	} else {
		for i := range src.Shards {
			var lsn string
			if err := srcConns[i].QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, res.Slots[i]).Scan(&lsn); err != nil {
				return nil, err
			}
			l, _ := pglogrepl.ParseLSN(lsn)
			res.ConsistentLSN = append(res.ConsistentLSN, l)
		}
	}

	// Plan, or reload the plan and decide what to copy again.
	var units []*unit
	if !res.Resumed {
		for i := range src.Shards {
			for _, t := range tables {
				if t.Omni && i > 0 {
					continue // omni tables come from source shard 0 only
				}
				us, err := planUnits(ctx, srcConns[i], t, src.Shards[i].Number, req.SplitThreshold)
				if err != nil {
					dropCreated()
					return nil, err
				}
				units = append(units, us...)
			}
		}
		if err := ensureState(ctx, run.state); err != nil {
			dropCreated()
			return nil, err
		}
		if err := saveUnits(ctx, run.state, res.Slot, units); err != nil {
			dropCreated()
			return nil, err
		}
	} else {
		units, err = resumePlan(ctx, run, saved, tables, len(src.Shards), dstConns)
		if err != nil {
			return nil, err
		}
	}

	// Copy.
	var todo []*unit
	items := map[*unit]*progress.TableCopy{}
	for _, u := range units {
		if u.done {
			res.UnitsSkipped++
			continue
		}
		todo = append(todo, u)
		where := ""
		if u.predicate != "" {
			where = " WHERE " + u.predicate
		}
		item := &progress.TableCopy{Task: j.Task, Schema: u.table.Schema, Table: u.table.Name, SourceShard: u.sourceShard,
			Unit: u.n, Units: u.of, EstimateBytes: u.estimateBytes, Format: format.String(),
			SQL: u.table.copyOutSQL(where, format)}
		items[u] = item
	}
	// Biggest first, so the long ones start early.
	sort.SliceStable(todo, func(a, b int) bool { return todo[a].estimateBytes > todo[b].estimateBytes })
	for _, u := range todo {
		j.Registry.AddCopies(items[u])
	}
	log.Info("copy starting", "tables", len(tables), "units", len(todo), "already_done", res.UnitsSkipped, "resumed", res.Resumed,
		"workers_per_node", cfg.ReshardingParallelCopies, "nodes", nodeList(nodes), "format", format)
	err = run.copyAll(ctx, todo, items, nodes, cfg.ReshardingParallelCopies)
	if again := run.takeRewritten(); err == nil && len(again) > 0 {
		// A TRUNCATE is not MVCC-safe: a snapshot older than it reads
		// the table as empty. Copied again at a new snapshot, the units'
		// watermark is its LSN, and the stream skips the tables' changes
		// committed before it (the TRUNCATE among them).
		err = copyAgain(ctx, j, res.Slot, again, 1)
	}
	for _, it := range j.Registry.Copies() {
		if it.Task == j.Task && it.State == progress.CopyDone {
			res.Rows += it.Rows
			res.Bytes += it.Bytes
		}
	}
	res.Tables = len(tables)
	res.Units = len(todo)
	res.Elapsed = time.Since(start)
	if err != nil {
		return res, err
	}
	log.Info("copy done", "tables", res.Tables, "units", res.Units, "rows", res.Rows, "bytes", res.Bytes, "elapsed", res.Elapsed.Round(time.Millisecond))
	return res, nil
}

// resumePlan rebuilds the units of an earlier copy and prepares the
// unfinished ones per the resume rule (see state.go).
func resumePlan(ctx context.Context, run *copyRun, saved []savedUnit, tables []*Table, sourceShards int, dst []*pgx.Conn) ([]*unit, error) {
	byName := map[string]*Table{}
	for _, t := range tables {
		byName[t.Schema+"."+t.Name] = t
	}
	for k, c := range dst {
		if err := endLeftoverCopies(ctx, c); err != nil {
			return nil, fmt.Errorf("destination shard %d: %w", k, err)
		}
	}
	var units []*unit
	reset := map[*Table]bool{}
	for _, s := range saved {
		t, ok := byName[s.schema+"."+s.name]
		if !ok {
			return nil, job.Errorf("55000", "cannot resume: table %s.%s of the earlier copy is no longer in the publication", s.schema, s.name)
		}
		u := &unit{sourceShard: s.sourceShard, table: t, n: s.unit, of: s.units, kind: s.kind, predicate: s.predicate, estimateBytes: s.estimate, done: s.done}
		units = append(units, u)
		clearable := u.kind != unitCtid && (sourceShards == 1 || t.Omni)
		if !u.done && !clearable {
			reset[t] = true
		}
	}
	for t := range reset {
		for k, c := range dst {
			if _, err := c.Exec(ctx, t.EmptySQL()); err != nil {
				return nil, fmt.Errorf("empty %s on destination shard %d to copy it again: %w", t, k, err)
			}
		}
		if err := markTableUndone(ctx, run.state, run.req.Slot, t); err != nil {
			return nil, err
		}
		run.log.Info("table emptied to be copied again: its unfinished ranges cannot be told apart on the destination", "table", t.String())
	}
	for _, u := range units {
		if reset[u.table] {
			u.done = false
			continue
		}
		if u.done {
			continue
		}
		for k, c := range dst {
			if _, err := c.Exec(ctx, u.clearSQL()); err != nil {
				return nil, fmt.Errorf("clear partial rows of %s on destination shard %d: %w", u, k, err)
			}
		}
	}
	return units, nil
}

// endLeftoverCopies ends the COPYs into conn's database that an earlier
// reshard left running: its process died, but the server may still be
// working through rows it had already sent, and would commit them after
// the partial rows are cleared. It returns once they are gone.
func endLeftoverCopies(ctx context.Context, conn *pgx.Conn) error {
	for start := time.Now(); ; {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(p.pid)) FROM pg_stat_progress_copy p
			JOIN pg_stat_activity a ON a.pid = p.pid
			WHERE p.datname = current_database() AND p.command = 'COPY FROM'
			  AND a.application_name = 'reshard' AND p.pid <> pg_backend_pid()`).Scan(&n); err != nil {
			return fmt.Errorf("end the COPYs an earlier reshard left running: %w", err)
		}
		if n == 0 {
			return nil
		}
		if time.Since(start) > time.Minute {
			return fmt.Errorf("%d COPY sessions of an earlier reshard are still running after a minute", n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// copyAll runs the units with `parallel` workers per node (a source
// shard's primary, or each of its replicas), all source shards at once.
// The first unit that fails for good stops the rest.
func (r *copyRun) copyAll(ctx context.Context, todo []*unit, items map[*unit]*progress.TableCopy, nodes [][]*copyNode, parallel int) error {
	perShard := make([][]*unit, len(nodes))
	for _, u := range todo {
		perShard[u.sourceShard] = append(perShard[u.sourceShard], u)
	}
	g, gctx := errgroup.WithContext(ctx)
	for s := range nodes {
		queue := newUnitQueue(perShard[s])
		for _, n := range nodes[s] {
			for k := 0; k < parallel; k++ {
				g.Go(func() error {
					w := &worker{run: r, shard: s, node: n, dst: make([]*pgx.Conn, len(r.dstDSN))}
					defer w.close()
					for u := queue.next(n); u != nil; u = queue.next(n) {
						if gctx.Err() != nil {
							return nil
						}
						if err := r.copyWithRetry(gctx, w, u, items[u]); err != nil {
							return err
						}
					}
					return nil
				})
			}
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// nodeList names the nodes of every source shard for the log.
func nodeList(nodes [][]*copyNode) string {
	var parts []string
	for s, ns := range nodes {
		for _, n := range ns {
			parts = append(parts, fmt.Sprintf("%d:%s", s, n.label()))
		}
	}
	return strings.Join(parts, ", ")
}

func (r *copyRun) copyWithRetry(ctx context.Context, w *worker, u *unit, item *progress.TableCopy) error {
	reg := r.job.Registry
	clearable := u.kind != unitCtid && (len(r.srcDSN) == 1 || u.table.Omni)
	backoff := 500 * time.Millisecond
	item.ReadFrom(w.node.label())
	for attempt := 1; ; attempt++ {
		reg.StartCopy(item)
		item.Reset()
		started := time.Now()
		rows, bytes, committed, err := w.copyUnit(ctx, u, item)
		if errors.Is(err, errRewritten) {
			// Left undone: the table is copied again at a new snapshot
			// once this copy ends (copyAgain).
			r.noteRewritten(u.table)
			w.close() // its transaction holds the table's lock
			reg.FinishCopy(item, err)
			r.log.Warn("table rewritten on the source after the copy's snapshot (a TRUNCATE): it is copied again at a new snapshot", "unit", u.String(), "error", err)
			return nil
		}
		if err == nil {
			r.stateMu.Lock()
			mctx, cancel := context.WithTimeout(ctx, r.job.Catalog.NetworkTimeout())
			err = markDone(mctx, r.state, r.req.Slot, u, w.node.watermark(), rows, bytes)
			cancel()
			r.stateMu.Unlock()
			if err == nil {
				reg.FinishCopy(item, nil)
				r.log.Info("copied", "unit", u.String(), "from", w.node.label(), "rows", rows, "bytes", bytes, "elapsed", time.Since(started).Round(time.Millisecond))
				return nil
			}
			committed = true
		}
		w.close() // a failed COPY leaves connections in unknown states
		if ctx.Err() == nil && r.format == sharding.FormatBinary && !u.text && unreadableValue(err) && (!committed || clearable) {
			// One value its type cannot read back from binary: this unit
			// goes again in text, the rest stays binary.
			if committed {
				if cerr := w.clearUnit(ctx, u); cerr != nil {
					reg.FinishCopy(item, cerr)
					return fmt.Errorf("copy %s: clear it to copy it again in text: %w", u, cerr)
				}
			}
			u.text = true
			where := ""
			if u.predicate != "" {
				where = " WHERE " + u.predicate
			}
			item.SetSQL(fmt.Sprintf("-- binary COPY failed on a value its type cannot read back (%v): copied in text\n%s", err, u.table.copyOutSQL(where, sharding.FormatText)))
			r.log.Warn("binary COPY failed on a value its type cannot read back: copying the unit again in text format", "unit", u.String(), "error", err)
			attempt--
			continue
		}
		if !retryable(err) || attempt >= maxAttempts || ctx.Err() != nil {
			reg.FinishCopy(item, err)
			return fmt.Errorf("copy %s: %w", u, err)
		}
		if committed && !clearable {
			reg.FinishCopy(item, err)
			return fmt.Errorf("copy %s failed after some shards committed (run the copy again to resume: the table is copied again): %w", u, err)
		}
		r.log.Warn("copy failed, retrying", "unit", u.String(), "attempt", attempt, "error", err, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			reg.FinishCopy(item, ctx.Err())
			return ctx.Err()
		}
		backoff *= 2
		if committed {
			if cerr := w.clearUnit(ctx, u); cerr != nil {
				if !retryable(cerr) {
					reg.FinishCopy(item, cerr)
					return cerr
				}
				w.close()
			}
		}
	}
}

func joinList(s []string) string {
	if len(s) > 20 {
		return fmt.Sprintf("%s and %d more", joinList(s[:20]), len(s)-20)
	}
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ", "
		}
		out += x
	}
	return out
}
