// Package task runs engine work in the background: each task has an id, a
// state the SHOW TASKS view reports, and a context that STOP_TASK cancels.
// Tasks outlive the admin connection that started them.
package task

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// States, as DESIGN §1 lists them.
const (
	StateSchemaPre        = "schema_pre"
	StateCopying          = "copying"
	StateSchemaPost       = "schema_post"
	StateStreaming        = "streaming"
	StateCutover          = "cutover"
	StateReverseStreaming = "reverse_streaming"
	StateDone             = "done"
	StateStopped          = "stopped"
	StateFailed           = "failed"
)

// Task is one background operation.
type Task struct {
	ID, Kind, Source, Destination, Publication string
	// Slot is the replication slot the task streams from, once known.
	Slot string
	// Resume is the command that continues the task if it is interrupted.
	Resume string

	manager *Manager

	mu      sync.Mutex
	state   string
	started time.Time
	ended   time.Time
	err     string
	cancel  context.CancelFunc
	done    chan struct{}
}

// SetState moves the task to a state.
func (t *Task) SetState(s string) {
	t.mu.Lock()
	t.state = s
	t.mu.Unlock()
	t.manager.changed(t)
}

// SetResume records the task's slot and the command that continues it.
func (t *Task) SetResume(slot, resume string) {
	t.mu.Lock()
	t.Slot, t.Resume = slot, resume
	t.mu.Unlock()
	t.manager.changed(t)
}

// Done is closed when the task's function has returned.
func (t *Task) Done() <-chan struct{} { return t.done }

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
	// OnChange, when set, is told every state change (to persist it).
	OnChange func(t *Task, r Row)
}

func (m *Manager) changed(t *Task) {
	if m != nil && m.OnChange != nil {
		m.OnChange(t, t.Row())
	}
}

// Restore lists a task of an earlier run of reshard (read back from where
// its state was persisted), stopped, with the reason and how to continue.
func (m *Manager) Restore(r Row) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	done := make(chan struct{})
	close(done)
	t := &Task{ID: strconv.Itoa(m.next), Kind: r.Kind, Source: r.Source, Destination: r.Destination, Publication: r.Publication,
		state: StateStopped, started: r.StartedAt, ended: r.StartedAt.Add(r.Elapsed), err: r.Error, cancel: func() {}, done: done, manager: m}
	m.tasks = append(m.tasks, t)
}

// NewManager returns an empty manager.
func NewManager() *Manager { return &Manager{} }

// Outcome is what a task function returns: nil error ends it in done, an
// error in failed, a cancelled context in stopped. Stopped ends it in
// stopped with a message (work paused on purpose, resumable).
type Outcome struct {
	Stopped string
}

// Start runs fn in the background as a new task in state initial.
func (m *Manager) Start(kind, source, destination, publication, initial string, fn func(ctx context.Context, t *Task) (Outcome, error)) *Task {
	m.mu.Lock()
	m.next++
	ctx, cancel := context.WithCancel(context.Background())
	t := &Task{ID: strconv.Itoa(m.next), Kind: kind, Source: source, Destination: destination, Publication: publication,
		state: initial, started: time.Now(), cancel: cancel, done: make(chan struct{}), manager: m}
	m.tasks = append(m.tasks, t)
	m.mu.Unlock()
	go func() {
		defer close(t.done)
		defer cancel()
		out, err := fn(ctx, t)
		defer m.changed(t)
		t.mu.Lock()
		defer t.mu.Unlock()
		t.ended = time.Now()
		switch {
		case err != nil && ctx.Err() != nil:
			t.state, t.err = StateStopped, "stopped by STOP_TASK: "+err.Error()
		case err != nil:
			t.state, t.err = StateFailed, err.Error()
		case out.Stopped != "":
			t.state, t.err = StateStopped, out.Stopped
		default:
			t.state = StateDone
		}
	}()
	return t
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

// Stop cancels a task and waits for it to end.
func (m *Manager) Stop(ctx context.Context, id string) error {
	t, ok := m.Get(id)
	if !ok {
		return fmt.Errorf("task %q does not exist", id)
	}
	t.cancel()
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

// StopAll stops every running task and waits for them (on shutdown: their
// work is resumable, slots are kept).
func (m *Manager) StopAll(ctx context.Context) {
	m.mu.Lock()
	tasks := append([]*Task(nil), m.tasks...)
	m.mu.Unlock()
	for _, t := range tasks {
		t.cancel()
	}
	for _, t := range tasks {
		select {
		case <-t.done:
		case <-ctx.Done():
			return
		}
	}
}
