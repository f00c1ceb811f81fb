package cutover

import (
	"context"
	"errors"
	"fmt"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/schema"
)

// The steps of a rollback, in order, each reported once done.
const (
	RollbackWritesBlocked  = "shard_writes_blocked"
	RollbackDrained        = "reverse_drained"
	RollbackReverseStopped = "reverse_stopped"
	RollbackSequences      = "source_sequences"
	RollbackForwardSlots   = "forward_slots"
	// RollbackShardsClosed is the commit point: the shards are read-only
	// for the application; the rollback completes from here.
	RollbackShardsClosed = "shards_closed"
	RollbackSourceOpen   = "source_open"
	RollbackFinished     = "finished"
)

var rollbackSteps = []string{RollbackWritesBlocked, RollbackDrained, RollbackReverseStopped, RollbackSequences,
	RollbackForwardSlots, RollbackShardsClosed, RollbackSourceOpen, RollbackFinished}

// RolledBack tells whether a rollback that reached step is past its commit
// point (and must be completed, not undone).
func RolledBack(step string) bool {
	return stepIndex(rollbackSteps, step) >= stepIndex(rollbackSteps, RollbackShardsClosed)
}

// RollbackRequest swaps a cut-over task back: the old database becomes the
// writable side again and the shards follow it.
type RollbackRequest struct {
	// ReverseSlot is the reverse stream's slot on the shards.
	ReverseSlot string
	// StopReverse stops the reverse stream and waits for it.
	StopReverse func() error
	// NewSlot is the name of the forward slot to create on the source.
	NewSlot string
	// Step is told each step reached, as Request.Step.
	Step func(ctx context.Context, step string) error
}

func (r *RollbackRequest) step(ctx context.Context, step string) error {
	if r.Step == nil {
		return nil
	}
	return r.Step(ctx, step)
}

// Rollback mirrors Run: writes blocked on the shards (SHARE locks within
// cutover_timeout), the reverse stream drained and stopped, the old
// database's sequences moved above every shard's values, new forward slots
// created on the old database (before any write can reach it), the shards
// read-only for new sessions (the commit point), then the old database
// writable again and the reverse slots dropped. Before the commit point any
// failure aborts: UndoRollback drops the new forward slots and leaves the
// shards writable; the caller streams in reverse again.
func Rollback(ctx context.Context, j *job.Job, req RollbackRequest) error {
	log := j.Logger("rollback")
	g := j.Catalog.Config.General
	bud := newBudget(g, log)
	dst := j.Destination
	abort := func(format string, args ...any) error {
		return aborted(log, "rollback", "writes on the shards unblocked, reverse replication goes on: "+format, args...)
	}
	shardConns, err := j.ConnectDestinations(ctx)
	if err != nil {
		return abort("%v", err)
	}
	defer shardConns.Close()
	// The tables are the source publication's (the shards' own
	// publication can hold more, such as reshard's state).
	srcConn, err := j.ConnectSource(ctx, 0)
	if err != nil {
		return abort("%v", err)
	}
	tables, err := copier.Tables(ctx, srcConn, j.Publication, dst)
	srcConn.Close(context.Background())
	if err != nil {
		return abort("%v", err)
	}
	b, err := blockWrites(ctx, j.ConnectDestinations, dst.Shards, tables, bud)
	if err != nil {
		return abort("%v", err)
	}
	defer b.release()
	fail := func(err error) error {
		b.release()
		if uerr := UndoRollback(context.WithoutCancel(ctx), j, req); uerr != nil {
			log.Error("undoing the rollback failed: run CUTOVER again, or ABORT_TASK", "error", uerr)
		}
		var je *job.Error
		if errors.As(err, &je) {
			return err
		}
		return abort("%v", err)
	}
	if err := req.step(ctx, RollbackWritesBlocked); err != nil {
		return fail(err)
	}
	if err := drain(ctx, b.conns, shardConns, copier.SlotNames(req.ReverseSlot, len(dst.Shards)), bud); err != nil {
		return fail(err)
	}
	if err := req.step(ctx, RollbackDrained); err != nil {
		return fail(err)
	}
	if err := req.StopReverse(); err != nil && !errors.Is(err, context.Canceled) {
		return fail(fmt.Errorf("stop the reverse stream: %w", err))
	}
	if err := req.step(ctx, RollbackReverseStopped); err != nil {
		return fail(err)
	}
	// The old database must not hand out ids the shards already used.
	if err := schema.MoveSourceSequences(ctx, j); err != nil {
		return fail(err)
	}
	if err := req.step(ctx, RollbackSequences); err != nil {
		return fail(err)
	}
	// New forward slots, before any write can reach the old database.
	if err := createSlots(ctx, j, j.Source, req.NewSlot); err != nil {
		return fail(err)
	}
	if err := req.step(ctx, RollbackForwardSlots); err != nil {
		return fail(err)
	}
	// The commit point: the shards become read-only for the application.
	for k, sh := range dst.Shards {
		if err := closeToApplication(ctx, shardConns[k], sh.Primary.Database, b.conns[k]); err != nil {
			return fail(fmt.Errorf("shard %d: %w", k, err))
		}
	}
	if err := req.step(ctx, RollbackShardsClosed); err != nil {
		return fail(err)
	}
	b.release()
	return CompleteRollback(context.WithoutCancel(ctx), j, req, RollbackShardsClosed)
}

// UndoRollback takes back a rollback that stopped before its commit point:
// the new forward slots are dropped and the shards are writable (they stay
// the application's side). The reverse slots were not touched: the reverse
// stream continues from them.
func UndoRollback(ctx context.Context, j *job.Job, req RollbackRequest) error {
	var errs []error
	if req.NewSlot != "" {
		if err := dropSlots(ctx, j.ConnectSource, len(j.Source.Shards), req.NewSlot); err != nil {
			errs = append(errs, err)
		}
	}
	if err := OpenToApplication(ctx, j.ConnectDestination, len(j.Destination.Shards)); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	j.Logger("rollback").Info("rollback undone: the shards take the writes, reverse replication goes on", "reverse_slot", req.ReverseSlot)
	return nil
}

// CompleteRollback finishes a rollback that reached its commit point: the
// old database is writable again, the reverse slots and their origins are
// dropped.
func CompleteRollback(ctx context.Context, j *job.Job, req RollbackRequest, from string) error {
	log := j.Logger("rollback")
	if stepIndex(rollbackSteps, from) < stepIndex(rollbackSteps, RollbackSourceOpen) {
		if err := OpenToApplication(ctx, j.ConnectSource, len(j.Source.Shards)); err != nil {
			return err
		}
		if err := req.step(ctx, RollbackSourceOpen); err != nil {
			log.Warn("could not record the rollback step", "step", RollbackSourceOpen, "error", err)
		}
	}
	if err := dropSlots(ctx, j.ConnectDestination, len(j.Destination.Shards), req.ReverseSlot); err != nil {
		return err
	}
	if err := dropOrigins(ctx, j.ConnectSources, req.ReverseSlot, len(j.Destination.Shards)); err != nil {
		return err
	}
	if err := req.step(ctx, RollbackFinished); err != nil {
		log.Warn("could not record the rollback step", "step", RollbackFinished, "error", err)
	}
	log.Info("rolled back: the old database is the writable side again; the shards follow it", "slot", req.NewSlot)
	return nil
}
