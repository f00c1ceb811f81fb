package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/progress"
)

// Request is one stream: every source shard's slot into the destination.
type Request struct {
	Catalog *catalog.Catalog
	// Source and Destination are cluster names; Publication is on the source.
	Source, Destination, Publication string
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
	Task         string
	Registry     *progress.Registry
	Logger       hclog.Logger
}

// DefaultStreamMemory is the default of Request.StreamMemory.
const DefaultStreamMemory = 64 << 20

// Run streams until ctx ends (nil) or a change cannot be applied (an error
// naming it). Lost connections and transient failures (job.Retryable) are
// retried with backoff; every restart resumes from the slot and the
// destination shards' origins, so no change is skipped or applied twice.
func Run(ctx context.Context, req Request) error {
	if req.BatchChanges == 0 {
		req.BatchChanges = 10000
	}
	if req.BatchDelay == 0 {
		req.BatchDelay = 50 * time.Millisecond
	}
	if req.StreamMemory == 0 {
		req.StreamMemory = req.Catalog.Config.General.ReshardingStreamMemory
	}
	if req.StreamMemory == 0 {
		req.StreamMemory = DefaultStreamMemory
	}
	if req.SpillDir == "" {
		req.SpillDir = req.Catalog.Config.General.ReshardingSpillDir
	}
	if req.Registry == nil {
		req.Registry = progress.NewRegistry()
	}
	log := req.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	src, ok := req.Catalog.Cluster(req.Source)
	if !ok {
		return fmt.Errorf("database %q is not configured", req.Source)
	}
	dst, ok := req.Catalog.Cluster(req.Destination)
	if !ok {
		return fmt.Errorf("database %q is not configured", req.Destination)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(src.Shards))
	var wg sync.WaitGroup
	slots := copier.SlotNames(req.Slot, len(src.Shards))
	for i, sh := range src.Shards {
		slot := slots[i]
		slog := log.Named("stream").With("slot", slot)
		status := &progress.Slot{Task: req.Task, Host: sh.Primary.Host, Port: sh.Primary.Port, Database: sh.Primary.Database, Name: slot, CopyData: req.CopyData}
		budget := &spoolBudget{limit: req.StreamMemory, dir: req.SpillDir, onSpill: func(xid uint32, file string) {
			slog.Info("streamed transaction spilled to disk", "xid", xid, "file", file, "memory_limit", req.StreamMemory)
			status.Spilled()
		}}
		cfg := sessionConfig{cat: req.Catalog, node: sh.Primary, slot: slot, copySlot: req.Slot,
			sourceShard: sh.Number, sourceShards: len(src.Shards), dst: dst, sourceRules: req.SourceRules,
			publication: req.Publication, batchChanges: req.BatchChanges, batchDelay: req.BatchDelay,
			budget: budget, status: status, log: slog}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			req.Registry.AddSlot(status)
			defer req.Registry.RemoveSlot(status)
			if errs[i] = runSlot(ctx, cfg); errs[i] != nil {
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
