package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/progress"
)

// Request is what a stream needs beyond its job (the source and
// destination clusters, the publication, the task, the registry and the
// logger): every source shard's slot is streamed into the destination.
type Request struct {
	// Slot is the slot name (<Slot>_<k> for source shard k when the source
	// has several shards).
	Slot string
	// CopyData tells SHOW REPLICATION_SLOTS the slot was created by a copy.
	CopyData bool
	// SourceRules, for reverse replication (new shards back into the old
	// database), is the cluster whose sharding rules tell which tables the
	// source shards hold parts of (taken from every shard) and which they
	// each hold whole (taken from shard 0 only).
	SourceRules *catalog.Cluster
	// BatchChanges and BatchDelay bound a destination transaction: this
	// many changes, or this long since its first source transaction.
	BatchChanges int
	BatchDelay   time.Duration
	// StreamMemory bounds the memory that source transactions streamed
	// while in progress may use before their changes are spilled to files
	// in SpillDir (default: the system's temporary directory).
	StreamMemory int64
	SpillDir     string
	// Hold, when set, lets VERIFY (or CUTOVER) hold the stream at source
	// positions while it runs (hold.go).
	Hold *Hold
}

// DefaultStreamMemory is the default of Request.StreamMemory.
const DefaultStreamMemory = 64 << 20

// Run streams the job's source into its destination until ctx ends (nil)
// or a change cannot be applied (an error naming it, with its SQLSTATE).
// Lost connections and transient failures (job.Retryable) are retried with
// backoff; every restart resumes from the slot and the destination shards'
// origins, so no change is skipped or applied twice.
func Run(ctx context.Context, j *job.Job, req Request) error {
	cat := j.Catalog
	if req.BatchChanges == 0 {
		req.BatchChanges = 10000
	}
	if req.BatchDelay == 0 {
		req.BatchDelay = 50 * time.Millisecond
	}
	if req.StreamMemory == 0 {
		req.StreamMemory = cat.Config.General.ReshardingStreamMemory
	}
	if req.StreamMemory == 0 {
		req.StreamMemory = DefaultStreamMemory
	}
	if req.SpillDir == "" {
		req.SpillDir = cat.Config.General.ReshardingSpillDir
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var barrier *ddlBarrier
	if cat.Config.General.ReshardingDDL == catalog.DDLReplicate {
		// Tables an earlier run marked to be copied again are copied
		// before any stream applies their changes.
		if req.SourceRules == nil {
			if err := copyMarked(ctx, j, req.Slot); err != nil {
				return err
			}
		}
		if len(j.Source.Shards) > 1 {
			barrier = newDDLBarrier(len(j.Source.Shards), req.Slot)
		}
	}
	errs := make([]error, len(j.Source.Shards))
	var wg sync.WaitGroup
	slots := copier.SlotNames(req.Slot, len(j.Source.Shards))
	gates := req.Hold.begin(slots, j.Logger("stream"))
	defer req.Hold.end(gates)
	// The slots' in-progress transactions share one budget.
	var spoolMemory atomic.Int64
	for i, sh := range j.Source.Shards {
		slot := slots[i]
		slog := j.Logger("stream").With("slot", slot)
		status := &progress.Slot{Task: j.Task, Host: sh.Primary.Host, Port: sh.Primary.Port, Database: sh.Primary.Database, Name: slot, CopyData: req.CopyData}
		budget := &spoolBudget{limit: req.StreamMemory, shared: &spoolMemory, dir: req.SpillDir, onSpill: func(xid uint32, file string) {
			slog.Info("streamed transaction spilled to disk", "xid", xid, "file", file, "memory_limit", req.StreamMemory)
			status.Spilled()
		}}
		cfg := sessionConfig{cat: cat, node: sh.Primary, sourceDSN: j.SourceDSN[i], dstDSN: j.DestinationDSN, slot: slot, copySlot: req.Slot,
			sourceShard: sh.Number, sourceShards: len(j.Source.Shards), dst: j.Destination, sourceRules: req.SourceRules,
			publication: j.Publication, batchChanges: req.BatchChanges, batchDelay: req.BatchDelay,
			budget: budget, status: status, log: slog, job: j, ddl: barrier, gate: gates[i]}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			j.Registry.AddSlot(status)
			defer j.Registry.RemoveSlot(status)
			if errs[i] = runSlot(ctx, cfg); errs[i] != nil {
				errs[i] = fmt.Errorf("stream from slot %s on %s: %w", slot, sh.Primary, errs[i])
				cancel()
			}
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return nil
}

// runSlot streams one source shard's slot: one session after another,
// with backoff, while their failures are retryable.
func runSlot(ctx context.Context, cfg sessionConfig) error {
	backoff := 500 * time.Millisecond
	for {
		err := runSession(ctx, cfg)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil || !job.Retryable(err) {
			return err
		}
		cfg.log.Warn("stream interrupted, reconnecting", "error", err, "backoff", backoff)
		cfg.status.Interrupted(err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
		if backoff < 10*time.Second {
			backoff *= 2
		}
	}
}
