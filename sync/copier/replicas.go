package copier

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/job"
)

// Copying from replicas.
//
// On PostgreSQL 16 and later a standby can hold a logical slot, so a source
// shard's copy can be read from its replicas instead of its primary:
//
//   - Which replicas: the shard's resharding_only replicas when any of them
//     can copy, else its other replicas, else the primary. A replica that
//     cannot be reached, or runs PostgreSQL 15 or older, is left out and
//     the log says why; one that could copy but for its settings
//     (hot_standby_feedback, wal_level, free slots and WAL senders, the
//     publication, being a standby of that primary) is a preflight problem
//     naming the replica and what to set.
//   - Snapshots: the primary's permanent slot is created first (the stream
//     starts at its consistent point C). Then each replica, once it has
//     replayed past C, creates a temporary logical slot exporting a
//     snapshot; its workers import that snapshot, and every unit they copy
//     records that snapshot's LSN R as its watermark (reshard.copy_units).
//   - The stream from the primary's slot (starting at C) skips a change to
//     a unit's rows when its transaction's commit record starts before the
//     unit's watermark: the unit's snapshot already has it. This is the
//     rule the stream applies to units of a resumed copy (sync/stream's
//     watermark filter); for units copied from the primary R = C and
//     nothing is skipped.
//
// Nothing is lost or applied twice exactly when R >= C for every replica
// snapshot. A transaction committing before C is in every snapshot (R >= C)
// and not in the stream. One committing at L with C <= L < R is in the
// replica's snapshot and in the stream, which skips it for the units read
// there (L < R). One committing at L >= R is in no snapshot and applied by
// the stream. Were R < C, a transaction committing in [R, C) would be in
// neither the replica's snapshot nor the stream. R >= C holds by
// construction: a logical slot created on a standby starts decoding at
// the standby's replay position (its restart_lsn) and becomes consistent
// at a running-transactions record at or after it, so R >= restart_lsn >=
// the replay position when the slot was created, which replicaSnapshot
// waits to be >= C. It is then checked, not assumed: a replica snapshot
// with R < C is refused and the replica left out.

// minReplicaVersion is the first PostgreSQL whose standbys hold logical
// slots (server_version_num).
const minReplicaVersion = 160000

// copyNode is a server one source shard's units are read from, with the
// snapshot its workers import.
type copyNode struct {
	shard int // source shard (index)
	node  *catalog.Node
	dsn   string
	slot  *snapshotSlot
	// version is the server's server_version_num.
	version int
}

// label names the node in SHOW TABLE_COPIES and the log.
func (n *copyNode) label() string {
	return n.node.Role + " " + n.node.Addr()
}

// watermark is the LSN of the node's snapshot: units copied there hold
// every transaction whose commit record starts before it.
func (n *copyNode) watermark() pglogrepl.LSN { return n.slot.lsn }

// replicaProbe is what preflight found out about one replica.
type replicaProbe struct {
	node    *catalog.Node
	dsn     string
	version int    // server_version_num; 0 when unreachable
	skip    string // why it cannot copy at all ("" when it can)
	// problems are settings to fix before it can copy.
	problems []string
}

// versionName renders a server_version_num ("PostgreSQL 17.10").
func versionName(v int) string {
	if v >= 100000 {
		return fmt.Sprintf("PostgreSQL %d.%d", v/10000, v%10000)
	}
	return fmt.Sprintf("PostgreSQL %d.%d.%d", v/10000, v/100%100, v%100)
}

// probeReplica connects to a replica and checks what copying from it
// needs. primarySystem is the primary's system identifier ("" when it could
// not be read).
func probeReplica(ctx context.Context, cat *catalog.Catalog, node *catalog.Node, dsn, publication, primarySystem string) (replicaProbe, error) {
	p := replicaProbe{node: node, dsn: dsn}
	cctx, cancel := context.WithTimeout(ctx, cat.NetworkTimeout())
	defer cancel()
	conn, err := pgx.Connect(cctx, dsn)
	if err != nil {
		if ctx.Err() != nil {
			return p, ctx.Err()
		}
		p.skip = fmt.Sprintf("cannot connect: %v", err)
		return p, nil
	}
	defer conn.Close(context.Background())
	var inRecovery bool
	var feedback string
	if err := conn.QueryRow(cctx, `SELECT current_setting('server_version_num')::int, pg_is_in_recovery(), current_setting('hot_standby_feedback')`).
		Scan(&p.version, &inRecovery, &feedback); err != nil {
		return p, fmt.Errorf("read settings of replica %s: %w", node, err)
	}
	if p.version < minReplicaVersion {
		p.skip = fmt.Sprintf("it runs %s, and a standby holds a logical slot only from PostgreSQL 16 on", versionName(p.version))
		return p, nil
	}
	where := node.String()
	if !inRecovery {
		p.problems = append(p.problems, fmt.Sprintf("%s is not a standby (pg_is_in_recovery() is false): configure it as a hot standby of the shard's primary, or list it with role = \"primary\" elsewhere", where))
	}
	if primarySystem != "" {
		var system string
		// pg_control_system() may be refused to a non-superuser: then the
		// check is skipped.
		if err := conn.QueryRow(cctx, `SELECT system_identifier::text FROM pg_control_system()`).Scan(&system); err == nil && system != primarySystem {
			p.problems = append(p.problems, fmt.Sprintf("%s is not a standby of the shard's primary (system identifier %s, the primary's is %s): fix its host or port", where, system, primarySystem))
		}
	}
	if feedback != "on" {
		p.problems = append(p.problems, fmt.Sprintf("%s has hot_standby_feedback = %s: set it on (ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf()), so the primary keeps the rows and catalog entries the copy's snapshot and slot need", where, feedback))
	}
	checks, err := CheckSource(cctx, conn, where, publication, 1)
	if err != nil {
		return p, err
	}
	for _, c := range checks {
		if strings.Contains(c, "wal_level") {
			c += " (logical decoding on a standby needs wal_level = logical on the standby and on its primary)"
		}
		p.problems = append(p.problems, c)
	}
	return p, nil
}

// pickReplicas chooses the replicas a source shard's copy reads from: its
// resharding_only replicas when any can copy, else its other replicas.
// It returns the chosen ones (with the problems preflight must report) or,
// when none can copy, why the primary copies ("" when the shard has no
// replicas).
func pickReplicas(ctx context.Context, j *job.Job, k int, primary *pgx.Conn) (picked []replicaProbe, why string, err error) {
	sh := j.Source.Shards[k]
	if len(sh.Replicas) == 0 {
		return nil, "", nil
	}
	var primarySystem string
	_ = primary.QueryRow(ctx, `SELECT system_identifier::text FROM pg_control_system()`).Scan(&primarySystem)
	probes := make([]replicaProbe, len(sh.Replicas))
	for i, r := range sh.Replicas {
		if probes[i], err = probeReplica(ctx, j.Catalog, r, j.SourceReplicaDSN[k][i], j.Publication, primarySystem); err != nil {
			return nil, "", err
		}
	}
	for _, reserved := range []bool{true, false} {
		for _, p := range probes {
			if p.node.ReshardingOnly == reserved && p.skip == "" {
				picked = append(picked, p)
			}
		}
		if len(picked) > 0 {
			return picked, "", nil
		}
	}
	reasons := make([]string, len(probes))
	for i, p := range probes {
		reasons[i] = fmt.Sprintf("replica %s: %s", p.node.Addr(), p.skip)
	}
	return nil, "no replica can copy (" + strings.Join(reasons, "; ") + ")", nil
}

// replicaSnapshot creates a temporary logical slot on a replica and
// returns it with its exported snapshot, whose LSN is at least after (the
// primary slot's consistent point; see "Copying from replicas" above). It
// first waits, within a bound, for the replica to replay past after;
// while the slot is created, the primary is asked to log its running
// transactions (pg_log_standby_snapshot), which a standby's slot waits
// for, instead of waiting for the background writer's next one.
func replicaSnapshot(ctx context.Context, j *job.Job, r replicaProbe, primaryDSN string, after pglogrepl.LSN, log hclog.Logger) (*snapshotSlot, error) {
	conn, err := pgx.Connect(ctx, r.dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to replica %s: %w", r.node, err)
	}
	bound := 2 * time.Minute
	if nt := 4 * j.Catalog.NetworkTimeout(); nt > bound {
		bound = nt
	}
	deadline := time.Now().Add(bound)
	for {
		var replayed *string
		err := conn.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn()::text`).Scan(&replayed)
		if err != nil {
			conn.Close(context.Background())
			return nil, fmt.Errorf("replay position of replica %s: %w", r.node, err)
		}
		if replayed != nil {
			if l, err := pglogrepl.ParseLSN(*replayed); err == nil && l >= after {
				break
			}
		}
		if time.Now().After(deadline) {
			conn.Close(context.Background())
			at := "nothing"
			if replayed != nil {
				at = *replayed
			}
			return nil, fmt.Errorf("replica %s has not replayed up to the primary slot's consistent point %s within %s (at %s)", r.node, after, bound, at)
		}
		select {
		case <-ctx.Done():
			conn.Close(context.Background())
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	conn.Close(context.Background())

	nctx, stopNudge := context.WithCancel(ctx)
	var nudges sync.WaitGroup
	nudges.Add(1)
	go func() {
		defer nudges.Done()
		nudgeStandbySnapshot(nctx, primaryDSN, log)
	}()
	s, err := createSlot(ctx, j.Catalog, r.node, newSlotName()+"_replica", true)
	stopNudge()
	nudges.Wait()
	if err != nil {
		return nil, err
	}
	if s.lsn < after {
		s.close()
		return nil, fmt.Errorf("replica %s exported a snapshot at %s, before the primary slot's consistent point %s: transactions in between would be lost", r.node, s.lsn, after)
	}
	return s, nil
}

// nudgeStandbySnapshot runs pg_log_standby_snapshot() on the primary every
// 100 ms until ctx ends. Refused (a non-superuser without the grant), it
// stops: the standby's slot then waits for the primary's background
// writer, which logs one every 15 seconds.
func nudgeStandbySnapshot(ctx context.Context, primaryDSN string, log hclog.Logger) {
	conn, err := pgx.Connect(ctx, primaryDSN)
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := conn.Exec(ctx, `SELECT pg_log_standby_snapshot()`); err != nil {
			if ctx.Err() == nil {
				log.Debug("pg_log_standby_snapshot() refused: the replica's slot waits for the primary's next running-transactions record", "error", err)
			}
			return
		}
	}
}

// copyNodes creates the replica snapshots of source shard k and returns
// the nodes its units are read from: the picked replicas whose snapshot
// could be made, else the primary (with the primary's slot). A replica
// whose snapshot fails is left out, and the log says why.
func copyNodes(ctx context.Context, j *job.Job, k int, primarySlot *snapshotSlot, primaryVersion int, picked []replicaProbe, why string, log hclog.Logger) ([]*copyNode, error) {
	sh := j.Source.Shards[k]
	var nodes []*copyNode
	var failed []string
	for _, r := range picked {
		s, err := replicaSnapshot(ctx, j, r, j.SourceDSN[k], primarySlot.lsn, log)
		if err != nil {
			if ctx.Err() != nil {
				for _, n := range nodes {
					n.slot.close()
				}
				return nil, ctx.Err()
			}
			log.Warn("replica left out of the copy", "source_shard", sh.Number, "replica", r.node.Addr(), "error", err)
			failed = append(failed, fmt.Sprintf("replica %s: %v", r.node.Addr(), err))
			continue
		}
		log.Info("copying from replica", "source_shard", sh.Number, "replica", r.node.Addr(), "version", versionName(r.version),
			"resharding_only", r.node.ReshardingOnly, "slot", s.name, "snapshot_lsn", s.lsn, "primary_slot_lsn", primarySlot.lsn)
		nodes = append(nodes, &copyNode{shard: k, node: r.node, dsn: r.dsn, slot: s, version: r.version})
	}
	if len(nodes) > 0 {
		return nodes, nil
	}
	if len(failed) > 0 {
		why = "no replica snapshot could be made (" + strings.Join(failed, "; ") + ")"
	}
	if why != "" {
		log.Info("the primary does the copy", "source_shard", sh.Number, "primary", sh.Primary.Addr(), "version", versionName(primaryVersion), "reason", why)
	}
	return []*copyNode{{shard: k, node: sh.Primary, dsn: j.SourceDSN[k], slot: primarySlot, version: primaryVersion}}, nil
}

// unitQueue hands one source shard's units, biggest first, to the workers
// of its nodes. The ctid-range units of a table are all read from the node
// that took the first of them: a change in the stream cannot be placed in
// a ctid range, so such a table needs one watermark (one snapshot).
// Primary-key ranges and whole tables go to whichever node asks first.
type unitQueue struct {
	mu     sync.Mutex
	units  []*unit
	pinned map[*Table]*copyNode
}

func newUnitQueue(units []*unit) *unitQueue {
	return &unitQueue{units: units, pinned: map[*Table]*copyNode{}}
}

// next returns the next unit node may copy, or nil when none is left.
func (q *unitQueue) next(node *copyNode) *unit {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, u := range q.units {
		if u.kind == unitCtid {
			if p, ok := q.pinned[u.table]; ok && p != node {
				continue
			}
			q.pinned[u.table] = node
		}
		q.units = append(q.units[:i], q.units[i+1:]...)
		return u
	}
	return nil
}
