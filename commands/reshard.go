package commands

import (
	"context"
	"fmt"
	"hash/fnv"

	"github.com/reshard/reshard/sync/migrate"
	"github.com/reshard/reshard/sync/preflight"
)

// ReshardSlot is the slot RESHARD uses for a route: the same name every
// time, so that running RESHARD again resumes (a finished copy is not
// copied again, POST skips what exists, the stream continues). Slot and
// replication-origin names are global to a PostgreSQL server, so the name
// also covers where the clusters' first shards live: two migrations with
// the same cluster names against other databases do not collide.
func (e *Executor) ReshardSlot(r Route) string {
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

// reshard runs RESHARD as a migration task: SCHEMA_SYNC PRE, copy,
// SCHEMA_SYNC POST (the slot holds the WAL meanwhile), then stream until
// CUTOVER. Run again for a migration that was stopped, failed or
// interrupted, it continues that one, with its id, from where it was.
func (e *Executor) reshard(ctx context.Context, c Reshard) (*Result, error) {
	spec := migrate.Spec{Kind: migrate.KindReshard, Source: c.Source, Destination: c.Destination,
		Publication: c.Publication, Slot: e.ReshardSlot(c.Route), Resume: "RESHARD " + c.Route.String()}
	return e.startMigration(ctx, c.Route, spec, preflight.Request{Command: preflight.Reshard, Slot: spec.Slot}, "RESHARD")
}

// startMigration starts a migration task, after its preflight. A migration
// this process knows (stopped, failed, interrupted) is continued from where
// it was, with its id: its preflight passed when it started, and what it
// created since (its slot, its copy) is its own.
func (e *Executor) startMigration(ctx context.Context, r Route, spec migrate.Spec, pre preflight.Request, tag string) (*Result, error) {
	var notices []string
	if !e.Engine.Knows(spec) {
		n, err := e.preflight(ctx, r, pre)
		if err != nil {
			return nil, err
		}
		notices = n
	}
	t, _, err := e.Engine.Start(spec)
	if err != nil {
		return nil, engineError(err)
	}
	return &Result{Columns: taskIDColumns, Tag: tag, Rows: [][]any{{t.ID}}, Notices: notices}, nil
}
