// Package cutover is the last stage of resharding: it stops writes on the
// old database, lets the stream drain, finishes the schema (interleaved
// sequences, reverse publication), and prepares reverse replication (the
// new shards streaming back into the old database) so the operator can roll
// back.
package cutover

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/ddl"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/schema"
)

// Request is one cutover of a job's streaming task.
type Request struct {
	// Slot is the forward stream's slot (per source shard: <Slot>_<k> when
	// there are several).
	Slot string
	// StopForward stops the forward stream and waits for it; called once
	// the stream has drained.
	StopForward func() error
}

// Result is a completed cutover.
type Result struct {
	// ReverseSlot is the slot name on the destination shards (per shard
	// <ReverseSlot>_<k> when there are several) streaming back.
	ReverseSlot string
}

// aborted is a cutover (or rollback) that did not happen: writes are
// unblocked and the stream goes on. SQLSTATE 57014, as a cancelled
// statement.
func aborted(log hclog.Logger, what, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	log.Warn(what+" aborted", "reason", msg)
	return job.Errorf("57014", "%s", what+" aborted, "+msg)
}

// lag is the bytes between the source's WAL end and what the slot confirmed.
func lag(ctx context.Context, conn *pgx.Conn, slot string) (int64, pglogrepl.LSN, error) {
	var l int64
	var confirmed string
	err := conn.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&l, &confirmed)
	if err != nil {
		return 0, 0, fmt.Errorf("lag of slot %s: %w", slot, err)
	}
	lsn, _ := pglogrepl.ParseLSN(confirmed)
	return l, lsn, nil
}

// Run performs the cutover:
//  1. wait until every forward slot's lag is under
//     cutover_traffic_stop_threshold;
//  2. block writes on the source: every published table locked in SHARE
//     mode (reads go on, writes wait);
//  3. wait until the slots have confirmed the source's WAL position taken
//     under the locks (lag 0);
//  4. stop the forward stream, run SCHEMA_SYNC CUTOVER (interleaved
//     sequences) and POST_CUTOVER;
//  5. make the source read-only by default for new sessions, end the
//     application sessions still waiting, release the locks;
//  6. create the reverse slots on the shards and run cutover_command.
//
// Until step 4, any failure or cutover_timeout aborts: locks released,
// source writable, forward stream untouched.
func Run(ctx context.Context, j *job.Job, req Request) (*Result, error) {
	log := j.Logger("cutover")
	g := j.Catalog.Config.General
	timeout := time.Duration(g.CutoverTimeout) * time.Millisecond
	deadline := time.Now().Add(timeout)
	src, dst := j.Source, j.Destination
	slots := copier.SlotNames(req.Slot, len(src.Shards))
	conns, err := j.ConnectSources(ctx)
	if err != nil {
		return nil, err
	}
	defer conns.Close()
	abort := func(format string, args ...any) error {
		return aborted(log, "cutover", "writes on the source unblocked, streaming goes on: "+format, args...)
	}

	// 1. Lag under the traffic-stop threshold.
	for {
		worst := int64(0)
		for i, c := range conns {
			l, _, err := lag(ctx, c, slots[i])
			if err != nil {
				return nil, abort("%v", err)
			}
			if l > worst {
				worst = l
			}
		}
		if worst <= g.CutoverTrafficStopThreshold {
			break
		}
		if time.Now().After(deadline) {
			return nil, abort("replication lag %d bytes stayed above cutover_traffic_stop_threshold (%d) for cutover_timeout (%s)", worst, g.CutoverTrafficStopThreshold, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// 2. Block writes: SHARE locks on every published table.
	tables, err := copier.Tables(ctx, conns[0], j.Publication, dst)
	if err != nil {
		return nil, abort("%v", err)
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.Qualified()
	}
	locks, err := j.ConnectSources(ctx)
	if err != nil {
		return nil, abort("%v", err)
	}
	release := func() {
		for _, l := range locks {
			_, _ = l.Exec(context.Background(), "ROLLBACK")
		}
		locks.Close()
	}
	for i, sh := range src.Shards {
		if err := lockTables(ctx, locks[i], names, deadline); err != nil {
			release()
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "55P03" {
				return nil, abort("could not block writes on %s within cutover_timeout (%s): a transaction kept writing (%s)", sh.Primary, timeout, pe.Message)
			}
			return nil, abort("lock tables on %s: %v", sh.Primary, err)
		}
	}
	log.Info("writes blocked on the source", "tables", len(names))

	// 3. Drain: the slots confirm the WAL position taken under the locks.
	targets := make([]pglogrepl.LSN, len(src.Shards))
	for i, l := range locks {
		var s string
		if err := l.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
			release()
			return nil, abort("%v", err)
		}
		targets[i], _ = pglogrepl.ParseLSN(s)
	}
	for {
		drained := true
		for i, c := range conns {
			_, confirmed, err := lag(ctx, c, slots[i])
			if err != nil {
				release()
				return nil, abort("%v", err)
			}
			if confirmed < targets[i] {
				drained = false
			}
		}
		if drained {
			break
		}
		if time.Now().After(deadline) {
			release()
			return nil, abort("the stream did not drain to lag 0 within cutover_timeout (%s)", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Info("stream drained")

	// 4. Past this point the cutover completes.
	if err := req.StopForward(); err != nil && !errors.Is(err, context.Canceled) {
		release()
		return nil, fmt.Errorf("stop the forward stream: %w", err)
	}
	// The shards become the application's side: open to writes again if a
	// rollback closed them.
	if err := openToApplication(ctx, j.ConnectDestinations); err != nil {
		release()
		return nil, err
	}
	for _, phase := range []schema.Phase{schema.PhaseCutover, schema.PhasePostCutover} {
		if _, err := schema.Run(ctx, j, schema.Request{Phase: phase}); err != nil {
			release()
			return nil, fmt.Errorf("SCHEMA_SYNC %s: %w", phase, err)
		}
	}

	// 5. The source becomes read-only for the application.
	for i, sh := range src.Shards {
		if err := closeToApplication(ctx, conns[i], sh.Primary.Database, locks[i]); err != nil {
			release()
			return nil, fmt.Errorf("%s: %w", sh.Primary, err)
		}
	}
	release()

	// 6. Reverse slots on the shards, after DDL capture there
	// (resharding_ddl = "replicate"): the application's DDL on the new
	// shards reaches the old database through the reverse stream.
	if err := ddl.Prepare(ctx, j.Reversed()); err != nil {
		log.Warn("DDL capture could not be installed on the shards: DDL run there after the cutover does not reach the old database", "error", err)
	}
	reverse := req.Slot + "_rev"
	for i, name := range copier.SlotNames(reverse, len(dst.Shards)) {
		node := dst.Shards[i].Primary
		dsn, err := j.Catalog.ConnString(node, map[string]string{"replication": "database"})
		if err != nil {
			return nil, err
		}
		rc, err := pgconn.Connect(ctx, dsn)
		if err != nil {
			return nil, fmt.Errorf("replication connection to %s: %w", node, err)
		}
		_, err = pglogrepl.CreateReplicationSlot(ctx, rc, name, "pgoutput", pglogrepl.CreateReplicationSlotOptions{SnapshotAction: "NOEXPORT_SNAPSHOT"})
		rc.Close(context.Background())
		if err != nil {
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "42710" { // already there: a re-run
				return nil, fmt.Errorf("create reverse slot %s on %s: %w", name, node, err)
			}
		}
	}
	// The forward slots are done with: left behind they would hold WAL on
	// the old database (and a rollback starts new ones). Until here a
	// failed cutover streams on from them.
	for i, c := range conns {
		if err := dropSlot(ctx, c, slots[i]); err != nil {
			log.Warn("could not drop the forward slot: drop it by hand", "slot", slots[i], "error", err)
		}
	}
	if g.CutoverCommand != "" {
		cmd := exec.CommandContext(ctx, "sh", "-c", g.CutoverCommand)
		cmd.Env = append(os.Environ(), "RESHARD_TASK="+j.Task, "RESHARD_SOURCE="+src.Name, "RESHARD_DESTINATION="+dst.Name)
		if out, err := cmd.CombinedOutput(); err != nil {
			log.Warn("cutover_command failed", "command", g.CutoverCommand, "error", err, "output", string(out))
		} else {
			log.Info("cutover_command ran", "command", g.CutoverCommand)
		}
	}
	log.Info("cutover done: the shards are the writable side; reverse replication keeps the old database in sync", "reverse_slot", reverse)
	return &Result{ReverseSlot: reverse}, nil
}
