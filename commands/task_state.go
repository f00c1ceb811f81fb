package commands

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sync/task"
)

// Task state is persisted on the destination's shard 0 (reshard.tasks), so
// that after a restart SHOW TASKS lists the work a crash or restart
// interrupted, with the command that continues it.
const tasksDDL = `CREATE SCHEMA IF NOT EXISTS reshard;
CREATE TABLE IF NOT EXISTS reshard.tasks (
	slot text PRIMARY KEY,
	kind text NOT NULL,
	source text NOT NULL,
	destination text NOT NULL,
	publication text NOT NULL,
	state text NOT NULL,
	error text NOT NULL DEFAULT '',
	resume text NOT NULL,
	started_at timestamptz NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
)`

// persistTask records a task's state change (in the background: state
// changes must not wait for a database).
func (e *Executor) persistTask(t *task.Task, r task.Row) {
	if t.Slot == "" || t.Resume == "" {
		return
	}
	slot, resume := t.Slot, t.Resume
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cl, ok := e.Catalog.Cluster(r.Destination)
		if !ok {
			return
		}
		dsn, err := e.Catalog.ConnString(cl.Shards[0].Primary, nil)
		if err != nil {
			return
		}
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			e.Logger.Debug("persist task state", "error", err)
			return
		}
		defer conn.Close(context.Background())
		e.persistMu.Lock()
		defer e.persistMu.Unlock()
		if r.State == task.StateDone {
			// Finished: nothing to continue. (A finished migration also
			// dropped the schema: do not create it again.)
			var exists bool
			if conn.QueryRow(ctx, `SELECT to_regclass('reshard.tasks') IS NOT NULL`).Scan(&exists); exists {
				_, _ = conn.Exec(ctx, `DELETE FROM reshard.tasks WHERE slot = $1`, slot)
			}
			return
		}
		if _, err := conn.Exec(ctx, tasksDDL); err != nil {
			e.Logger.Debug("persist task state", "error", err)
			return
		}
		_, err = conn.Exec(ctx, `INSERT INTO reshard.tasks (slot, kind, source, destination, publication, state, error, resume, started_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			ON CONFLICT (slot) DO UPDATE SET kind = EXCLUDED.kind, state = EXCLUDED.state, error = EXCLUDED.error,
				resume = EXCLUDED.resume, updated_at = now()`,
			slot, r.Kind, r.Source, r.Destination, r.Publication, r.State, r.Error, resume, r.StartedAt)
		if err != nil {
			e.Logger.Debug("persist task state", "error", err)
		}
	}()
}

// RecoverTasks lists, as stopped tasks, the work an earlier run of reshard
// left unfinished (read from every cluster's shard 0).
func (e *Executor) RecoverTasks(ctx context.Context) {
	for _, cl := range e.Catalog.Clusters() {
		dsn, err := e.Catalog.ConnString(cl.Shards[0].Primary, nil)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.Connect(cctx, dsn)
		if err != nil {
			cancel()
			continue
		}
		var exists bool
		if conn.QueryRow(cctx, `SELECT to_regclass('reshard.tasks') IS NOT NULL`).Scan(&exists); exists {
			rows, err := conn.Query(cctx, `SELECT kind, source, destination, publication, state, error, resume, started_at, updated_at
				FROM reshard.tasks WHERE state NOT IN ('done', 'failed') ORDER BY started_at`)
			if err == nil {
				for rows.Next() {
					var r task.Row
					var state, msg, resume string
					var started, updated time.Time
					if rows.Scan(&r.Kind, &r.Source, &r.Destination, &r.Publication, &state, &msg, &resume, &started, &updated) != nil {
						continue
					}
					r.StartedAt, r.Elapsed = started, updated.Sub(started)
					if state == task.StateStopped && msg != "" {
						r.Error = msg
					} else {
						r.Error = "interrupted in state " + state + " by a restart of reshard: " + resume + " continues it"
					}
					e.Tasks.Restore(r)
				}
				rows.Close()
			}
		}
		conn.Close(context.Background())
		cancel()
	}
}
