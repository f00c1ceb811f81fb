package stream

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
)

func txnsAt(lsns ...pglogrepl.LSN) []*txn {
	out := make([]*txn, len(lsns))
	for i, l := range lsns {
		out[i] = &txn{commitLSN: l, changes: make([]*change, 2)}
	}
	return out
}

// The gate hands on everything unless held; held at a position, only the
// transactions committing before it; a position at or before what was
// handed on (or what a shard's origin holds) is refused.
func TestGateAdmits(t *testing.T) {
	h := NewHold()
	g := h.begin([]string{"s"}, hclog.NewNullLogger())[0]
	pos := newPositions(100, []pglogrepl.LSN{90, 120})
	g.attach(pos, nil, []pglogrepl.LSN{90, 120})
	if err := g.holdAt(120); !errors.Is(err, ErrPassed) {
		t.Fatalf("hold at a shard's origin position: %v, want ErrPassed", err)
	}
	if n := g.admit(txnsAt(130, 140)); n != 2 {
		t.Fatalf("running: %d of 2 handed on", n)
	}
	g.pause()
	pending := txnsAt(150, 160, 170)
	if n := g.admit(pending); n != 0 {
		t.Fatalf("paused: %d handed on", n)
	}
	if err := g.holdAt(140); !errors.Is(err, ErrPassed) {
		t.Fatalf("hold at a handed-on commit: %v, want ErrPassed", err)
	}
	if err := g.holdAt(165); err != nil {
		t.Fatal(err)
	}
	if !g.serving() {
		t.Fatal("held at 165 and not drained: the session must serve")
	}
	n := g.admit(pending)
	if n != 2 {
		t.Fatalf("held at 165: %d of 150, 160, 170 handed on, want 2", n)
	}
	rest, changes := heldBack(pending, n)
	if len(rest) != 1 || rest[0].commitLSN != 170 || changes != 2 {
		t.Fatalf("held back %v (%d changes)", rest, changes)
	}
	// 170 was seen: the source sent everything before 165.
	if err := g.serve(t.Context(), func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	reached := g.reached()
	g.mu.Unlock()
	if reached {
		t.Fatal("reached before the shards handled 160")
	}
	pos.handledOn(0, 160, true)
	pos.handledOn(1, 160, true)
	g.mu.Lock()
	reached = g.reached()
	g.mu.Unlock()
	if !reached {
		t.Fatal("not reached once every shard handled 160")
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { g.meter(stop); close(done) }()
	time.Sleep(20 * time.Millisecond)
	close(stop)
	<-done
	if stall := g.release(); stall <= 0 {
		t.Fatalf("idle holding back 170 for %s", stall)
	}
	if n := g.admit(rest); n != 1 {
		t.Fatalf("released: %d of 1 handed on", n)
	}
	if !heldFull(make([]*txn, maxHeldTxns), 0, 10) || heldFull(nil, 9, 10) || !heldFull(nil, 10, 10) {
		t.Fatal("heldFull")
	}
	var nilGate *gate
	if nilGate.admit(pending) != 3 || nilGate.serving() {
		t.Fatal("a nil gate holds nothing")
	}
}
