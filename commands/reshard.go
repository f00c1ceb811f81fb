package commands

import (
	"context"
	"fmt"
	"hash/fnv"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/ddl"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/preflight"
	"github.com/reshard/reshard/sync/schema"
	"github.com/reshard/reshard/sync/task"
)

// reshardSlot is the slot RESHARD uses for a route: the same name every
// time, so that running RESHARD again resumes (a finished copy is not
// copied again, POST skips what exists, the stream continues). Slot and
// replication-origin names are global to a PostgreSQL server, so the name
// also covers where the clusters' first shards live: two migrations with
// the same cluster names against other databases do not collide.
func (e *Executor) reshardSlot(r Route) string {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%s\x00%s", r.Source, r.Destination, r.Publication)
	for _, name := range []string{r.Source, r.Destination} {
		if cl, ok := e.Catalog.Cluster(name); ok {
			n := cl.Shards[0].Primary
			fmt.Fprintf(h, "\x00%s/%s", n.Addr(), n.Database)
		}
	}
	return fmt.Sprintf("reshard_%016x", h.Sum64())
}

// preAndCopy is RESHARD's SCHEMA_SYNC PRE and copy from one point of the
// source: DDL capture is installed (resharding_ddl = "replicate"), the
// slots are created first, the schema is dumped at source shard 0's
// exported snapshot (pg_dump --snapshot), applied on the shards, and the
// copy reads at the same snapshots, so the shards' schema, the copied rows
// and the stream's start are one point (DDL run since is in the stream).
// The snapshots live while their replication connections stay idle:
// pg_dump and every copy worker import them before anything else runs
// there. A copy already recorded (RESHARD run again) resumes with its
// slots, after PRE (idempotent) from the schema as it is; slots a RESHARD
// left before recording its copy are dropped and made again.
func preAndCopy(ctx context.Context, j *job.Job, slot string, copying func()) error {
	if err := ddl.Prepare(ctx, j); err != nil {
		return fmt.Errorf("SCHEMA_SYNC PRE: %w", err)
	}
	recorded, err := copier.StaleSlots(ctx, j, slot)
	if err != nil {
		return fmt.Errorf("SCHEMA_SYNC PRE: %w", err)
	}
	var slots *copier.Slots
	if !recorded {
		if slots, err = copier.CreateSlots(ctx, j, slot); err != nil {
			return fmt.Errorf("SCHEMA_SYNC PRE: %w", err)
		}
		defer slots.Close()
	}
	req := schema.Request{Phase: schema.PhasePre}
	if slots != nil {
		req.Snapshot = slots.Snapshot(0)
	}
	if _, err := schema.Run(ctx, j, req); err != nil {
		return fmt.Errorf("SCHEMA_SYNC %s: %w", schema.PhasePre, err)
	}
	copying()
	if _, err := copier.Run(ctx, j, copier.Request{Slot: slot, Slots: slots}); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	return nil
}

// reshard runs RESHARD as a task: SCHEMA_SYNC PRE and the copy from the
// slots' snapshot (preAndCopy), SCHEMA_SYNC POST (the slot holds the WAL
// meanwhile), then stream.
func (e *Executor) reshard(ctx context.Context, c Reshard) (*Result, error) {
	slot := e.reshardSlot(c.Route)
	notices, err := e.preflight(ctx, c.Route, preflight.Request{Command: preflight.Reshard, Slot: slot})
	if err != nil {
		return nil, err
	}
	t := e.Tasks.Start("reshard", c.Source, c.Destination, c.Publication, task.StateSchemaPre,
		func(ctx context.Context, t *task.Task) (task.Outcome, error) {
			t.SetResume(slot, "RESHARD "+c.Route.String())
			defer func() { go func() { <-t.Done(); e.Registry.RemoveCopies(t.ID) }() }()
			j, err := e.newJob(c.Route, t.ID)
			if err != nil {
				return task.Outcome{}, err
			}
			phase := func(p schema.Phase) error {
				if _, err := schema.Run(ctx, j, schema.Request{Phase: p}); err != nil {
					return fmt.Errorf("SCHEMA_SYNC %s: %w", p, err)
				}
				return nil
			}
			if err := preAndCopy(ctx, j, slot, func() { t.SetState(task.StateCopying) }); err != nil {
				return task.Outcome{}, err
			}
			t.SetState(task.StateSchemaPost)
			if err := phase(schema.PhasePost); err != nil {
				return task.Outcome{}, err
			}
			t.SetState(task.StateStreaming)
			finished, err := e.runStream(ctx, t, j, slot, true)
			if err != nil {
				return task.Outcome{}, err
			}
			if finished {
				return task.Outcome{}, nil
			}
			return task.Outcome{Stopped: fmt.Sprintf("stopped; RESHARD %s (or REPLICATE %s %s) continues", c.Route.String(), c.Route.String(), slot)}, nil
		})
	return &Result{Columns: taskIDColumns, Tag: "RESHARD", Rows: [][]any{{t.ID}}, Notices: notices}, nil
}
