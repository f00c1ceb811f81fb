package migrate

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// The state of migrations lives on their destination's shard 0, in
// reshard's own schema (which the stream never replicates and the
// migration's end removes).
const storeDDL = `CREATE SCHEMA IF NOT EXISTS reshard;
CREATE TABLE IF NOT EXISTS reshard.migrations (
	id text PRIMARY KEY,
	kind text NOT NULL,
	source text NOT NULL,
	destination text NOT NULL,
	publication text NOT NULL,
	phase text NOT NULL,
	direction text NOT NULL,
	step text NOT NULL,
	slot text NOT NULL,
	forward_slot text NOT NULL,
	reverse_slot text NOT NULL,
	round int NOT NULL,
	copied bool NOT NULL,
	slots text[] NOT NULL,
	origins text[] NOT NULL,
	stopped text NOT NULL,
	error text NOT NULL,
	resume text NOT NULL,
	note text NOT NULL,
	started_at timestamptz NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	version bigint NOT NULL
)`

const upsertState = `INSERT INTO reshard.migrations AS m (id, kind, source, destination, publication, phase, direction, step,
	slot, forward_slot, reverse_slot, round, copied, slots, origins, stopped, error, resume, note, started_at, version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, phase = EXCLUDED.phase, direction = EXCLUDED.direction,
	step = EXCLUDED.step, forward_slot = EXCLUDED.forward_slot, reverse_slot = EXCLUDED.reverse_slot,
	round = EXCLUDED.round, copied = EXCLUDED.copied, slots = EXCLUDED.slots, origins = EXCLUDED.origins,
	stopped = EXCLUDED.stopped, error = EXCLUDED.error, resume = EXCLUDED.resume, note = EXCLUDED.note,
	version = EXCLUDED.version, updated_at = now()
WHERE m.version < EXCLUDED.version`

// storeWriteTimeout bounds how long one write keeps being retried.
const storeWriteTimeout = 30 * time.Second

// Store persists migration states. One goroutine writes, in the order the
// writes were asked for; a write still waiting when a newer state of the
// same migration arrives is replaced by it (and both callers are told once
// the newer one is written), and the version guard of the SQL keeps an
// older state from ever overwriting a newer one.
type Store struct {
	cat *catalog.Catalog
	log hclog.Logger

	mu      sync.Mutex
	queue   []*write
	started bool // the writer goroutine runs
	// conns are the writer's sessions, by destination cluster (only the
	// writer uses them).
	conns map[string]*pgx.Conn
}

// write is one queued write: a state to save, or to delete.
type write struct {
	st      State
	delete  bool
	waiters []chan error
}

// NewStore returns a store for the catalog's clusters; its writer starts
// with the first write.
func NewStore(cat *catalog.Catalog, log hclog.Logger) *Store {
	return &Store{cat: cat, log: log.Named("state"), conns: map[string]*pgx.Conn{}}
}

// Save persists st and returns once it (or a newer state of the same
// migration) is written, or ctx ends.
func (s *Store) Save(ctx context.Context, st State) error { return s.enqueue(ctx, st, false) }

// Delete removes the migration's state and returns once it is removed.
func (s *Store) Delete(ctx context.Context, st State) error { return s.enqueue(ctx, st, true) }

func (s *Store) enqueue(ctx context.Context, st State, del bool) error {
	done := make(chan error, 1)
	s.mu.Lock()
	if !s.started {
		s.started = true
		go s.writer()
	}
	replaced := false
	for i := len(s.queue) - 1; i >= 0; i-- {
		if w := s.queue[i]; w.st.ID == st.ID {
			if !w.delete && !del {
				w.st, w.waiters, replaced = st, append(w.waiters, done), true
			}
			break
		}
	}
	if !replaced {
		s.queue = append(s.queue, &write{st: st, delete: del, waiters: []chan error{done}})
	}
	s.mu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writer writes the queue in order until it is empty; its sessions close
// then (state changes are rare: a phase, a cutover step).
func (s *Store) writer() {
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.started = false
			for name, c := range s.conns {
				c.Close(context.Background())
				delete(s.conns, name)
			}
			s.mu.Unlock()
			return
		}
		w := s.queue[0]
		s.queue = s.queue[1:]
		s.mu.Unlock()
		err := s.retry(w)
		for _, d := range w.waiters {
			d <- err
		}
	}
}

func (s *Store) retry(w *write) error {
	deadline := time.Now().Add(storeWriteTimeout)
	backoff := 100 * time.Millisecond
	for {
		err := s.apply(w)
		if err == nil {
			return nil
		}
		if c := s.conns[w.st.Destination]; c != nil {
			c.Close(context.Background())
			delete(s.conns, w.st.Destination)
		}
		if time.Now().After(deadline) {
			s.log.Warn("could not persist a migration's state", "task", w.st.ID, "phase", w.st.Phase, "error", err)
			return err
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, 2*time.Second)
	}
}

// apply runs one write on the destination's shard 0.
func (s *Store) apply(w *write) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cat.NetworkTimeout())
	defer cancel()
	conn, err := s.conn(ctx, w.st.Destination)
	if err != nil {
		return err
	}
	if w.delete {
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT to_regclass('reshard.migrations') IS NOT NULL`).Scan(&exists); err != nil || !exists {
			return err
		}
		_, err := conn.Exec(ctx, `DELETE FROM reshard.migrations WHERE id = $1`, w.st.ID)
		return err
	}
	if _, err := conn.Exec(ctx, storeDDL); err != nil {
		return fmt.Errorf("create reshard.migrations: %w", err)
	}
	st := w.st
	sources, shards := s.shardCounts(st)
	slots, origins := st.SlotsInUse(sources, shards), st.OriginsInUse(sources, shards)
	if slots == nil {
		slots = []string{}
	}
	if origins == nil {
		origins = []string{}
	}
	_, err = conn.Exec(ctx, upsertState, st.ID, st.Kind, st.Source, st.Destination, st.Publication, st.Phase, st.Direction,
		st.Step, st.Slot, st.Forward, st.Reverse, st.Round, st.Copied, slots, origins, st.Stopped, st.Failed, st.Resume,
		st.Note, st.StartedAt, st.Version)
	return err
}

func (s *Store) shardCounts(st State) (sources, shards int) {
	if cl, ok := s.cat.Cluster(st.Source); ok {
		sources = len(cl.Shards)
	}
	if cl, ok := s.cat.Cluster(st.Destination); ok {
		shards = len(cl.Shards)
	}
	return sources, shards
}

// conn is the writer's session on the destination's shard 0: writable
// even when reshard made that database read-only for the application (the
// shards after a rollback).
func (s *Store) conn(ctx context.Context, destination string) (*pgx.Conn, error) {
	if c := s.conns[destination]; c != nil {
		return c, nil
	}
	cl, ok := s.cat.Cluster(destination)
	if !ok {
		return nil, fmt.Errorf("database %q is not configured", destination)
	}
	dsn, err := s.cat.ConnString(cl.Shards[0].Primary, nil)
	if err != nil {
		return nil, err
	}
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to %s to persist task state: %w", cl.Shards[0].Primary, err)
	}
	if _, err := c.Exec(ctx, "SET default_transaction_read_only = off"); err != nil {
		c.Close(context.Background())
		return nil, err
	}
	s.conns[destination] = c
	return c, nil
}

// Load reads the states persisted on cluster's shard 0 (none when it holds
// no reshard state).
func Load(ctx context.Context, cat *catalog.Catalog, cluster *catalog.Cluster) ([]State, error) {
	dsn, err := cat.ConnString(cluster.Shards[0].Primary, nil)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('reshard.migrations') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	rows, err := conn.Query(ctx, `SELECT id, kind, source, destination, publication, phase, direction, step, slot,
		forward_slot, reverse_slot, round, copied, stopped, error, resume, note, started_at, version
		FROM reshard.migrations WHERE destination = $1 ORDER BY started_at, id`, cluster.Name)
	if err != nil {
		return nil, fmt.Errorf("read reshard.migrations on %s: %w", cluster.Shards[0].Primary, err)
	}
	defer rows.Close()
	var out []State
	for rows.Next() {
		var st State
		if err := rows.Scan(&st.ID, &st.Kind, &st.Source, &st.Destination, &st.Publication, &st.Phase, &st.Direction,
			&st.Step, &st.Slot, &st.Forward, &st.Reverse, &st.Round, &st.Copied, &st.Stopped, &st.Failed, &st.Resume,
			&st.Note, &st.StartedAt, &st.Version); err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
