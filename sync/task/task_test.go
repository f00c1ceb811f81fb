package task

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func start(t *testing.T, m *Manager, s Spec, fn func(ctx context.Context, t *Task) (Outcome, error)) *Task {
	t.Helper()
	if s.Kind == "" {
		s.Kind, s.Source, s.Destination, s.Publication, s.State = "copy", "a", "b", "p", StateCopying
	}
	tk, err := m.Start(s, fn)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestTaskLifecycle(t *testing.T) {
	m := NewManager()
	ok := start(t, m, Spec{}, func(ctx context.Context, t *Task) (Outcome, error) {
		t.SetState(StateStreaming)
		return Outcome{}, nil
	})
	bad := start(t, m, Spec{}, func(ctx context.Context, t *Task) (Outcome, error) {
		return Outcome{}, errors.New("boom")
	})
	paused := start(t, m, Spec{}, func(ctx context.Context, t *Task) (Outcome, error) {
		return Outcome{State: StateStopped, Message: "resume with X"}, nil
	})
	blocked := start(t, m, Spec{}, func(ctx context.Context, t *Task) (Outcome, error) {
		<-ctx.Done()
		return Outcome{}, ctx.Err()
	})
	for _, tk := range []*Task{ok, bad, paused} {
		<-tk.Done()
	}
	if r := blocked.Row(); r.State != StateCopying {
		t.Fatalf("blocked task state %s", r.State)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Stop(ctx, blocked.ID); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{ok.ID: StateDone, bad.ID: StateFailed, paused.ID: StateStopped, blocked.ID: StateStopped}
	rows := m.List()
	if len(rows) != 4 {
		t.Fatalf("%d tasks", len(rows))
	}
	for _, r := range rows {
		if r.State != want[r.ID] {
			t.Errorf("task %s state %s, want %s (%s)", r.ID, r.State, want[r.ID], r.Error)
		}
	}
	if r := bad.Row(); r.Error != "boom" {
		t.Fatalf("error %q", r.Error)
	}
	if r := blocked.Row(); !strings.HasPrefix(r.Error, ErrStopped.Error()) {
		t.Fatalf("stopped task says %q", r.Error)
	}
	if err := m.Stop(ctx, "99"); err == nil {
		t.Fatal("stopping a missing task succeeded")
	}
}

// TestIDsSurviveRestoreAndContinue: restored tasks keep their ids, new ids
// come above them, and a task continued with its id replaces the ended
// entry in place; a running id cannot be started twice.
func TestIDsSurviveRestoreAndContinue(t *testing.T) {
	m := NewManager()
	m.Restore(Row{ID: "5", Kind: "reshard", State: StateStopped, Error: "interrupted"})
	m.Restore(Row{ID: "2", Kind: "reshard", State: StateFailed})
	fresh := start(t, m, Spec{}, func(ctx context.Context, t *Task) (Outcome, error) { return Outcome{}, nil })
	if fresh.ID != "6" {
		t.Fatalf("new task id %s, want 6 (above the restored 5)", fresh.ID)
	}
	hold := make(chan struct{})
	again := start(t, m, Spec{ID: "5", Kind: "reshard", State: StateStreaming}, func(ctx context.Context, t *Task) (Outcome, error) {
		<-hold
		return Outcome{}, nil
	})
	if again.ID != "5" {
		t.Fatalf("continued task id %s", again.ID)
	}
	if _, err := m.Start(Spec{ID: "5", Kind: "reshard"}, func(ctx context.Context, t *Task) (Outcome, error) { return Outcome{}, nil }); err == nil {
		t.Fatal("a second task with a running id started")
	}
	rows := m.List()
	if len(rows) != 3 || rows[0].ID != "5" || rows[0].State != StateStreaming {
		t.Fatalf("tasks after continuing 5: %+v", rows)
	}
	close(hold)
	<-again.Done()
}

// TestShutdownCause: StopAll cancels with ErrShutdown, Stop with ErrStopped,
// so a task can tell a restart from an operator's stop.
func TestShutdownCause(t *testing.T) {
	m := NewManager()
	causes := make(chan error, 2)
	fn := func(ctx context.Context, t *Task) (Outcome, error) {
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return Outcome{}, ctx.Err()
	}
	a := start(t, m, Spec{}, fn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Stop(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if c := <-causes; !errors.Is(c, ErrStopped) {
		t.Fatalf("Stop cause %v", c)
	}
	start(t, m, Spec{}, fn)
	m.StopAll(ctx)
	if c := <-causes; !errors.Is(c, ErrShutdown) {
		t.Fatalf("StopAll cause %v", c)
	}
}

// A task's states are its own events: every state it enters is recorded
// in order, even ones it leaves at once (a poll would miss them), a state
// set twice is one event, and WaitState sees each without polling.
func TestStatesAreEvents(t *testing.T) {
	m := NewManager()
	step := make(chan struct{})
	tk := start(t, m, Spec{Kind: "reshard", State: StateSchemaPre}, func(ctx context.Context, t *Task) (Outcome, error) {
		t.SetState(StateCopying)
		t.SetState(StateCopying)
		t.SetState(StateSchemaPost) // left at once
		t.SetState(StateStreaming)
		<-step
		t.SetState(StateCutover)
		return Outcome{}, errors.New("boom")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, states, err := tk.WaitState(ctx, func(s string) bool { return s == StateSchemaPost })
	if err != nil || got != StateSchemaPost {
		t.Fatalf("WaitState(schema_post) = %q, %v, %v", got, states, err)
	}
	if _, _, err := tk.WaitState(ctx, func(s string) bool { return s == StateStreaming }); err != nil {
		t.Fatal(err)
	}
	changed := tk.Changed()
	select {
	case <-changed:
		t.Fatal("Changed fired with no new state")
	default:
	}
	close(step)
	<-changed
	_, states, err = tk.WaitState(ctx, func(s string) bool { return s == StateDone })
	if err == nil || !strings.Contains(err.Error(), "ended in failed") || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("WaitState(done) of a failed task: %v", err)
	}
	want := []string{StateSchemaPre, StateCopying, StateSchemaPost, StateStreaming, StateCutover, StateFailed}
	if strings.Join(states, ",") != strings.Join(want, ",") || strings.Join(tk.States(), ",") != strings.Join(want, ",") {
		t.Fatalf("states %v (%v), want %v", states, tk.States(), want)
	}
	blocked := start(t, m, Spec{}, func(ctx context.Context, t *Task) (Outcome, error) {
		<-ctx.Done()
		return Outcome{}, ctx.Err()
	})
	short, stop := context.WithTimeout(ctx, 50*time.Millisecond)
	defer stop()
	if _, _, err := blocked.WaitState(short, func(s string) bool { return s == StateStreaming }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitState past its deadline: %v", err)
	}
	if err := m.Stop(ctx, blocked.ID); err != nil {
		t.Fatal(err)
	}
}
