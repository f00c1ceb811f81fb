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

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/sync/schema"
)

// Request is one cutover of a streaming task.
type Request struct {
	Catalog                          *catalog.Catalog
	Source, Destination, Publication string
	// Slot is the forward stream's slot (per source shard: <Slot>_<k> when
	// there are several).
	Slot string
	// StopForward stops the forward stream and waits for it; called once
	// the stream has drained.
	StopForward func() error
	Task        string
	Registry    *progress.Registry
	Logger      hclog.Logger
}

// Result is a completed cutover.
type Result struct {
	// ReverseSlot is the slot name on the destination shards (per shard
	// <ReverseSlot>_<k> when there are several) streaming back.
	ReverseSlot string
}

// Error is a cutover that did not happen; writes on the source are
// unblocked and the forward stream goes on.
type Error struct {
	Code, Message string
	Err           error
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// SQLState is the SQLSTATE to answer with.
func (e *Error) SQLState() string { return e.Code }

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
func Run(ctx context.Context, req Request) (*Result, error) {
	log := req.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log = log.Named("cutover")
	g := req.Catalog.Config.General
	timeout := time.Duration(g.CutoverTimeout) * time.Millisecond
	deadline := time.Now().Add(timeout)
	src, ok := req.Catalog.Cluster(req.Source)
	if !ok {
		return nil, fmt.Errorf("database %q is not configured", req.Source)
	}
	dst, ok := req.Catalog.Cluster(req.Destination)
	if !ok {
		return nil, fmt.Errorf("database %q is not configured", req.Destination)
	}
	slots := copier.SlotNames(req.Slot, len(src.Shards))
	conns := make([]*pgx.Conn, len(src.Shards))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	for i, sh := range src.Shards {
		dsn, err := req.Catalog.ConnString(sh.Primary, nil)
		if err != nil {
			return nil, err
		}
		if conns[i], err = pgx.Connect(ctx, dsn); err != nil {
			return nil, fmt.Errorf("connect to source %s: %w", sh.Primary, err)
		}
	}
	abort := func(format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		log.Warn("cutover aborted", "reason", msg)
		return &Error{Code: "57014", Message: "cutover aborted, writes on the source unblocked, streaming goes on: " + msg}
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
	tables, err := copier.Tables(ctx, conns[0], req.Publication, dst)
	if err != nil {
		return nil, abort("%v", err)
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.Qualified()
	}
	locks := make([]*pgx.Conn, len(src.Shards))
	release := func() {
		for _, l := range locks {
			if l != nil {
				_, _ = l.Exec(context.Background(), "ROLLBACK")
				l.Close(context.Background())
			}
		}
	}
	for i, sh := range src.Shards {
		dsn, _ := req.Catalog.ConnString(sh.Primary, nil)
		l, err := pgx.Connect(ctx, dsn)
		if err != nil {
			release()
			return nil, abort("connect to %s: %v", sh.Primary, err)
		}
		locks[i] = l
		if err := lockTables(ctx, l, names, deadline); err != nil {
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
	for _, sh := range dst.Shards {
		if err := openToApplication(ctx, req.Catalog, sh.Primary); err != nil {
			release()
			return nil, err
		}
	}
	for _, phase := range []schema.Phase{schema.PhaseCutover, schema.PhasePostCutover} {
		if _, err := schema.Run(ctx, schema.Request{Catalog: req.Catalog, Source: req.Source, Destination: req.Destination,
			Publication: req.Publication, Phase: phase, Registry: req.Registry, Logger: req.Logger}); err != nil {
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

	// 6. Reverse slots on the shards.
	reverse := req.Slot + "_rev"
	for i, name := range copier.SlotNames(reverse, len(dst.Shards)) {
		node := dst.Shards[i].Primary
		dsn, err := req.Catalog.ConnString(node, map[string]string{"replication": "database"})
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
		cmd.Env = append(os.Environ(), "RESHARD_TASK="+req.Task, "RESHARD_SOURCE="+req.Source, "RESHARD_DESTINATION="+req.Destination)
		if out, err := cmd.CombinedOutput(); err != nil {
			log.Warn("cutover_command failed", "command", g.CutoverCommand, "error", err, "output", string(out))
		} else {
			log.Info("cutover_command ran", "command", g.CutoverCommand)
		}
	}
	log.Info("cutover done: the shards are the writable side; reverse replication keeps the old database in sync", "reverse_slot", reverse)
	return &Result{ReverseSlot: reverse}, nil
}
