package task

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestTaskLifecycle(t *testing.T) {
	m := NewManager()
	ok := m.Start("copy", "a", "b", "p", StateCopying, func(ctx context.Context, t *Task) (Outcome, error) {
		t.SetState(StateStreaming)
		return Outcome{}, nil
	})
	bad := m.Start("copy", "a", "b", "p", StateCopying, func(ctx context.Context, t *Task) (Outcome, error) {
		return Outcome{}, errors.New("boom")
	})
	paused := m.Start("copy", "a", "b", "p", StateCopying, func(ctx context.Context, t *Task) (Outcome, error) {
		return Outcome{Stopped: "resume with X"}, nil
	})
	blocked := m.Start("copy", "a", "b", "p", StateCopying, func(ctx context.Context, t *Task) (Outcome, error) {
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
	if err := m.Stop(ctx, "99"); err == nil {
		t.Fatal("stopping a missing task succeeded")
	}
}
