// Package migrate is the migration state machine: the phases a RESHARD,
// COPY_DATA or REPLICATE task goes through (schema PRE, copy, schema POST,
// forward stream, cutover, reverse stream, rollback, and again), the
// persisted state that lets every phase continue after a restart of
// reshard with the task's id, and the end of a migration: finished
// (STOP_TASK after cutover) or aborted (ABORT_TASK, in any state), with
// everything it created removed.
//
// The stages themselves (schema, copier, stream, cutover) know nothing of
// tasks or of each other; this package sequences them.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/sync/stream"
	"github.com/reshard/reshard/sync/task"
	"github.com/reshard/reshard/sync/verify"
)

// PauseEnv names the environment variable that makes a migration stop at
// a cutover or rollback step (its value, such as source_closed) until its
// task ends: the fault tests restart reshard there. Never set it in
// production.
const PauseEnv = "RESHARD_PAUSE_AT"

// PauseUntilEnv names a file whose creation ends a PauseEnv pause (the
// cutover then goes on as it would have): the fault tests stop a shard
// while a cutover waits at a step, then let it go on. Never set it in
// production.
const PauseUntilEnv = "RESHARD_PAUSE_UNTIL"

// Engine runs and tracks the migrations of one reshard process.
type Engine struct {
	cat   *catalog.Catalog
	reg   *progress.Registry
	tasks *task.Manager
	log   hclog.Logger
	store *Store
	// pauseAt is a step to pause at (PauseEnv), until pauseUntil exists
	// when set (PauseUntilEnv).
	pauseAt, pauseUntil string

	mu sync.Mutex
	// migrations are every migration this process knows, by task id:
	// running, or ended but not removed (stopped, failed).
	migrations map[string]*migration
	// inactive are reshard's slots the last watch found inactive.
	inactive []progress.InactiveSlot
}

// migration is one migration: its state, and while it runs, the way to
// reach it.
type migration struct {
	mu sync.Mutex
	st State
	// control takes cutover requests while the migration streams; nil
	// when it does not run.
	control chan switchRequest
	// finish is set when STOP_TASK reached the migration while it
	// streamed in reverse: it ends finished, not stopped.
	finish bool
	// hold holds the stream it runs (either direction) at VERIFY's
	// consistent point.
	hold *stream.Hold
}

// holder is the migration's Hold, given to every stream it runs.
func (m *migration) holder() *stream.Hold {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hold == nil {
		m.hold = stream.NewHold()
	}
	return m.hold
}

func (m *migration) state() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st
}

// New returns the engine of a process.
func New(cat *catalog.Catalog, reg *progress.Registry, tasks *task.Manager, log hclog.Logger) *Engine {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Engine{cat: cat, reg: reg, tasks: tasks, log: log, store: NewStore(cat, log), pauseAt: os.Getenv(PauseEnv), pauseUntil: os.Getenv(PauseUntilEnv),
		migrations: map[string]*migration{}}
}

// Spec is a migration to start (or to continue).
type Spec struct {
	Kind                             string
	Source, Destination, Publication string
	// Slot is the migration's slot.
	Slot string
	// Resume is the command that continues the migration, as the operator
	// writes it (SHOW TASKS names it when the migration is interrupted).
	Resume string
}

// job is the job of a migration's route, for its task.
func (e *Engine) job(st State) (*job.Job, error) {
	return job.New(job.Spec{Catalog: e.cat, Source: st.Source, Destination: st.Destination, Publication: st.Publication,
		Task: st.ID, Registry: e.reg, Logger: e.log})
}

// known is the migration this process knows with spec's route and slot,
// with e.mu held.
func (e *Engine) known(spec Spec) *migration {
	for _, m := range e.migrations {
		st := m.state()
		if st.Source == spec.Source && st.Destination == spec.Destination && st.Publication == spec.Publication &&
			(st.Slot == spec.Slot || (st.Forward != "" && st.Forward == spec.Slot)) {
			return m
		}
	}
	return nil
}

// Knows tells whether Start would continue a migration this process knows
// (running, stopped, failed or interrupted) rather than start a new one.
func (e *Engine) Knows(spec Spec) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.known(spec) != nil
}

// Start starts a migration, or continues the one this process knows with
// the same route and slot (stopped, failed or interrupted) from where it
// was, with its id. It returns the task and whether it continued one.
func (e *Engine) Start(spec Spec) (*task.Task, bool, error) {
	e.mu.Lock()
	if m := e.known(spec); m != nil {
		st := m.state()
		if t, ok := e.tasks.Get(st.ID); ok && t.Running() {
			e.mu.Unlock()
			return nil, false, job.Errorf("55006", "task %s already runs this migration (state %s)", st.ID, t.Row().State).
				WithHint("SHOW TASKS lists it; STOP_TASK %s stops it", st.ID)
		}
		m.mu.Lock()
		m.st.Stopped, m.st.Failed, m.st.Note, m.finish = "", "", "", false
		m.mu.Unlock()
		defer e.mu.Unlock()
		t, err := e.launch(m)
		return t, true, err
	}
	m := &migration{st: State{Kind: spec.Kind, Source: spec.Source, Destination: spec.Destination, Publication: spec.Publication,
		Phase: initialPhase(spec.Kind), Direction: Forward, Slot: spec.Slot, Forward: spec.Slot, Copied: spec.Kind != KindReplicate,
		Resume: spec.Resume, StartedAt: time.Now()}}
	defer e.mu.Unlock()
	t, err := e.launch(m)
	return t, false, err
}

// launch runs m as a task (with its id, when it has one) and registers it,
// with e.mu held.
func (e *Engine) launch(m *migration) (*task.Task, error) {
	st := m.state()
	t, err := e.tasks.Start(task.Spec{ID: st.ID, Kind: st.Kind, Source: st.Source, Destination: st.Destination,
		Publication: st.Publication, State: st.Phase, StartedAt: st.StartedAt},
		func(ctx context.Context, t *task.Task) (task.Outcome, error) {
			m.mu.Lock()
			m.st.ID = t.ID
			m.control = make(chan switchRequest)
			m.mu.Unlock()
			defer func() {
				m.mu.Lock()
				m.control = nil
				m.mu.Unlock()
			}()
			r := &runner{e: e, m: m, t: t}
			return r.run(ctx)
		})
	if err != nil {
		return nil, err
	}
	e.migrations[t.ID] = m
	return t, nil
}

// get returns the migration of a task.
func (e *Engine) get(id string) (*migration, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, ok := e.migrations[id]
	return m, ok
}

// forget drops a migration that ended for good.
func (e *Engine) forget(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.migrations, id)
}

// Recover continues the migrations an earlier run of reshard left, read
// from every cluster's shard 0: those that were running continue by
// themselves, in the phase they were in, with their ids; those the
// operator stopped or that failed are listed, with the command that
// continues them.
func (e *Engine) Recover(ctx context.Context) {
	for _, cl := range e.cat.Clusters() {
		lctx, cancel := context.WithTimeout(ctx, e.cat.NetworkTimeout())
		states, err := Load(lctx, e.cat, cl)
		cancel()
		if err != nil {
			e.log.Warn("could not read the state of earlier migrations", "database", cl.Name, "error", err)
			continue
		}
		for _, st := range states {
			if _, known := e.tasks.Get(st.ID); known {
				continue // already this process's
			}
			m := &migration{st: st}
			e.mu.Lock()
			e.migrations[st.ID] = m
			e.mu.Unlock()
			if st.Stopped != "" || st.Failed != "" {
				state := task.StateStopped
				if st.Failed != "" {
					state = task.StateFailed
				}
				e.tasks.Restore(task.Row{ID: st.ID, Kind: st.Kind, Source: st.Source, Destination: st.Destination,
					Publication: st.Publication, State: state, Error: st.message(), StartedAt: st.StartedAt})
				continue
			}
			e.log.Info("continuing a migration an earlier run left", "task", st.ID, "kind", st.Kind, "phase", st.Phase, "step", st.Step)
			e.mu.Lock()
			_, err := e.launch(m)
			e.mu.Unlock()
			if err != nil {
				e.log.Error("could not continue a migration", "task", st.ID, "error", err)
			}
		}
	}
}

// Streams finds the migration that streams a route: its task id ("" when
// none streams it), whether it streams in reverse (after its cutover), and
// what holds its streams (one per source shard of the direction it
// streams) at a VERIFY's consistent point (nil when none streams).
func (e *Engine) Streams(source, destination, publication string) (id string, reverse bool, holder verify.Holder) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range e.migrations {
		st := m.state()
		if st.Source != source || st.Destination != destination || st.Publication != publication {
			continue
		}
		t, ok := e.tasks.Get(st.ID)
		if !ok || !t.Running() {
			continue
		}
		switch t.Row().State {
		case task.StateStreaming:
			return st.ID, false, streamHolder{m.holder()}
		case task.StateReverseStreaming:
			return st.ID, true, streamHolder{m.holder()}
		}
	}
	return "", false, nil
}

// streamHolder is a migration's Hold as VERIFY holds it.
type streamHolder struct{ h *stream.Hold }

// Hold holds the migration's running stream (see stream.Hold.Hold).
func (s streamHolder) Hold(ctx context.Context, take func(context.Context) ([]pglogrepl.LSN, error)) (func() time.Duration, error) {
	release, err := s.h.Hold(ctx, take)
	if errors.Is(err, stream.ErrPassed) {
		err = fmt.Errorf("%w: %w", verify.ErrPassed, err)
	}
	return release, err
}

// Cutover asks the migration of task id, streaming in either direction,
// to cut over (or, streaming in reverse, to roll back), and waits for the
// outcome: the task's new state and the slot it streams from.
func (e *Engine) Cutover(ctx context.Context, id string) (state, slot string, err error) {
	m, ok := e.get(id)
	t, tok := e.tasks.Get(id)
	if !ok || !tok {
		return "", "", job.Errorf("42704", "task %q is not a migration: CUTOVER needs a RESHARD, COPY_DATA or REPLICATE task", id).
			WithHint("SHOW TASKS lists the tasks")
	}
	m.mu.Lock()
	control := m.control
	m.mu.Unlock()
	row := t.Row()
	if control == nil || (row.State != task.StateStreaming && row.State != task.StateReverseStreaming) {
		return "", "", job.Errorf("55000", "task %s is %s: CUTOVER needs a task in state streaming (or reverse_streaming, to roll back)", id, row.State)
	}
	req := switchRequest{reply: make(chan switchReply, 1)}
	select {
	case control <- req:
	case <-ctx.Done():
		return "", "", ctx.Err()
	case <-t.Done():
		return "", "", job.Errorf("55000", "task %s ended", id)
	}
	rep := <-req.reply
	return rep.state, rep.slot, rep.err
}

// errAborting is the cause of a task ABORT_TASK stops: the migration does
// not record itself as stopped, its state is about to be removed.
var errAborting = errors.New("stopped by ABORT_TASK")

// stopRunning stops the migration's task if it runs, with cause.
func (e *Engine) stopRunning(ctx context.Context, id string, cause error) error {
	t, ok := e.tasks.Get(id)
	if !ok || !t.Running() {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := e.tasks.StopCause(sctx, id, cause); err != nil {
		return fmt.Errorf("task %s did not stop within a minute: %w", id, err)
	}
	return nil
}
