// Package task runs engine work in the background: each task has an id, a
// state the SHOW TASKS view reports, and a context that STOP_TASK cancels.
// Tasks outlive the admin connection that started them. Ids are numbers;
// a task continued after a restart (or by its command) keeps its id, and
// new tasks get ids above every id in use.
package task

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// States, as DESIGN §1 lists them, and those reshard adds.
const (
	StateSchemaPre        = "schema_pre"
	StateCopying          = "copying"
	StateSchemaPost       = "schema_post"
	StateStreaming        = "streaming"
	StateCutover          = "cutover"
	StateReverseStreaming = "reverse_streaming"
	// StateRollback is a rollback (CUTOVER of a reverse_streaming task)
	// under way.
	StateRollback = "rollback"
	StateDone     = "done"
	StateStopped  = "stopped"
	StateFailed   = "failed"
	// StateAborted is a migration ABORT_TASK ended, its slots, origins and
	// state removed.
	StateAborted = "aborted"
)

// Causes of a cancelled task context (context.Cause).
var (
	// ErrStopped: STOP_TASK (or ABORT_TASK) stopped the task.
	ErrStopped = errors.New("stopped by STOP_TASK")
	// ErrShutdown: reshard is shutting down; the task continues when it
	// starts again.
	ErrShutdown = errors.New("reshard is shutting down")
)

// Task is one background operation.
type Task struct {
	ID, Kind, Source, Destination, Publication string

	mu      sync.Mutex
	state   string
	started time.Time
	ended   time.Time
	err     string
	cancel  context.CancelCauseFunc
	done    chan struct{}
	// states is every state the task entered, in order; changed is
	// closed (and replaced) at each new one.
	states  []string
	changed chan struct{}
}

// SetState moves the task to a state.
func (t *Task) SetState(s string) {
	t.mu.Lock()
	t.enter(s)
	t.mu.Unlock()
}

// enter records a move to state s, with t.mu held: a state the task is
// already in is not a new event.
func (t *Task) enter(s string) {
	t.state = s
	if n := len(t.states); n > 0 && t.states[n-1] == s {
		return
	}
	t.states = append(t.states, s)
	if t.changed != nil {
		close(t.changed)
	}
	t.changed = make(chan struct{})
}

// States returns every state the task has entered, in order, from the one
// it started in to the current one (its final state once it has ended):
// the task's own events, which a poll of SHOW TASKS can miss.
func (t *Task) States() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.states...)
}

// Changed returns a channel closed when the task enters its next state.
func (t *Task) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.changed == nil {
		t.changed = make(chan struct{})
	}
	return t.changed
}

// WaitState waits until the task has entered a state for which ok is true
// (checked on every state it enters, in order, so that none is missed) and
// returns it with the states so far; or until the task ends or ctx does,
// with an error naming the states seen.
func (t *Task) WaitState(ctx context.Context, ok func(state string) bool) (string, []string, error) {
	seen := 0
	for {
		changed := t.Changed()
		states := t.States()
		for ; seen < len(states); seen++ {
			if ok(states[seen]) {
				return states[seen], states, nil
			}
		}
		select {
		case <-changed:
		case <-t.done:
			if len(t.States()) == len(states) {
				return "", states, fmt.Errorf("task %s ended in %s (states %v): %s", t.ID, states[len(states)-1], states, t.Row().Error)
			}
		case <-ctx.Done():
			return "", states, fmt.Errorf("task %s: states %v: %w", t.ID, states, ctx.Err())
		}
	}
}

// SetNote sets the text the error column shows while the task runs (such
// as why a cutover was not done); "" clears it.
func (t *Task) SetNote(s string) {
	t.mu.Lock()
	t.err = s
	t.mu.Unlock()
}

// Done is closed when the task's function has returned.
func (t *Task) Done() <-chan struct{} { return t.done }

// Running tells whether the task's function has not returned yet.
func (t *Task) Running() bool {
	select {
	case <-t.done:
		return false
	default:
		return true
	}
}

// Row is a point-in-time view of a task.
type Row struct {
	ID, Kind, Source, Destination, Publication, State, Error string
	StartedAt                                                time.Time
	Elapsed                                                  time.Duration
}

// Row returns the task's current view.
func (t *Task) Row() Row {
	t.mu.Lock()
	defer t.mu.Unlock()
	end := t.ended
	if end.IsZero() {
		end = time.Now()
	}
	return Row{ID: t.ID, Kind: t.Kind, Source: t.Source, Destination: t.Destination, Publication: t.Publication,
		State: t.state, Error: t.err, StartedAt: t.started, Elapsed: end.Sub(t.started)}
}

// Manager holds the tasks of one reshard process.
type Manager struct {
	mu    sync.Mutex
	next  int
	tasks []*Task
}

// NewManager returns an empty manager.
func NewManager() *Manager { return &Manager{} }

// Outcome is what a task function returns: nil error ends it in done, an
// error in failed, a cancelled context in stopped. State, when set, is the
// final state instead (stopped: work paused on purpose, resumable;
// aborted), with Message in the error column.
type Outcome struct {
	State, Message string
}

// Spec describes a task to start.
type Spec struct {
	// ID is the task's id; "" picks a new one. A task continued keeps
	// its id: the ended task with that id is replaced in place.
	ID                                     string
	Kind, Source, Destination, Publication string
	// State is the state the task starts in.
	State string
	// StartedAt is when the work began (a continued task keeps it); zero
	// means now.
	StartedAt time.Time
}

// Restore lists a task of an earlier run of reshard (read back from where
// its state was persisted) that is not running, in its state (stopped or
// failed), with the reason and how to continue. It keeps its id.
func (m *Manager) Restore(r Row) {
	m.mu.Lock()
	defer m.mu.Unlock()
	done := make(chan struct{})
	close(done)
	t := &Task{ID: r.ID, Kind: r.Kind, Source: r.Source, Destination: r.Destination, Publication: r.Publication,
		state: r.State, started: r.StartedAt, ended: r.StartedAt.Add(r.Elapsed), err: r.Error,
		cancel: func(error) {}, done: done}
	t.enter(r.State)
	m.put(t)
}

// put adds t, replacing an ended task with its id (or picking an id), with
// m.mu held.
func (m *Manager) put(t *Task) {
	if t.ID == "" {
		m.next++
		t.ID = strconv.Itoa(m.next)
	} else if n, err := strconv.Atoi(t.ID); err == nil && n > m.next {
		m.next = n
	}
	for i, old := range m.tasks {
		if old.ID == t.ID {
			m.tasks[i] = t
			return
		}
	}
	m.tasks = append(m.tasks, t)
}

// Start runs fn in the background as a task. A spec with the id of a task
// that is still running is refused.
func (m *Manager) Start(s Spec, fn func(ctx context.Context, t *Task) (Outcome, error)) (*Task, error) {
	m.mu.Lock()
	if s.ID != "" {
		for _, old := range m.tasks {
			if old.ID == s.ID && old.Running() {
				m.mu.Unlock()
				return nil, fmt.Errorf("task %s is running", s.ID)
			}
		}
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	started := s.StartedAt
	if started.IsZero() {
		started = time.Now()
	}
	t := &Task{ID: s.ID, Kind: s.Kind, Source: s.Source, Destination: s.Destination, Publication: s.Publication,
		started: started, cancel: cancel, done: make(chan struct{})}
	t.enter(s.State)
	m.put(t)
	m.mu.Unlock()
	go func() {
		defer close(t.done)
		defer cancel(nil)
		out, err := fn(ctx, t)
		t.mu.Lock()
		defer t.mu.Unlock()
		t.ended = time.Now()
		switch {
		case out.State != "":
			t.enter(out.State)
			t.err = out.Message
		case err != nil && ctx.Err() != nil:
			t.enter(StateStopped)
			t.err = context.Cause(ctx).Error() + ": " + err.Error()
		case err != nil:
			t.enter(StateFailed)
			t.err = err.Error()
		default:
			t.enter(StateDone)
			t.err = out.Message
		}
	}()
	return t, nil
}

// Get returns the task with the id.
func (m *Manager) Get(id string) (*Task, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.tasks {
		if t.ID == id {
			return t, true
		}
	}
	return nil, false
}

// Stop cancels a task (cause ErrStopped) and waits for it to end.
func (m *Manager) Stop(ctx context.Context, id string) error {
	return m.StopCause(ctx, id, ErrStopped)
}

// StopCause cancels a task with a cause (context.Cause of its context) and
// waits for it to end.
func (m *Manager) StopCause(ctx context.Context, id string, cause error) error {
	t, ok := m.Get(id)
	if !ok {
		return fmt.Errorf("task %q does not exist", id)
	}
	t.cancel(cause)
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// List returns every task, oldest first.
func (m *Manager) List() []Row {
	m.mu.Lock()
	tasks := append([]*Task(nil), m.tasks...)
	m.mu.Unlock()
	out := make([]Row, len(tasks))
	for i, t := range tasks {
		out[i] = t.Row()
	}
	return out
}

// StopAll stops every running task (cause ErrShutdown) and waits for them
// (on shutdown: their work is resumable, slots are kept).
func (m *Manager) StopAll(ctx context.Context) {
	m.mu.Lock()
	tasks := append([]*Task(nil), m.tasks...)
	m.mu.Unlock()
	for _, t := range tasks {
		t.cancel(ErrShutdown)
	}
	for _, t := range tasks {
		select {
		case <-t.done:
		case <-ctx.Done():
			return
		}
	}
}
