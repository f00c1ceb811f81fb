package stream

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

// What may be confirmed: never past a shard's unflushed work, and the
// source's reported position only when nothing received is left to apply
// and every shard's work is durable.
func TestPositionsConfirmable(t *testing.T) {
	lsns := func(l ...pglogrepl.LSN) []pglogrepl.LSN { return l }
	p := newPositions(100, lsns(90, 80))
	if got := p.confirmable(lsns(90, 80), true); got != 100 {
		t.Fatalf("fresh session: %s, want the slot's position", got)
	}
	p.keepalive(500)
	if got := p.confirmable(lsns(90, 80), true); got != 500 {
		t.Fatalf("idle, nothing sent, all durable: %s, want the keepalive's 500", got)
	}
	if got := p.confirmable(lsns(90, 80), false); got != 100 {
		t.Fatalf("a transaction open: %s, want 100", got)
	}
	// A run up to 200 sent; shard 0 handled it with changes, shard 1 has
	// not handled it yet.
	p.sentUpTo(200)
	p.handledOn(0, 200, true)
	if got := p.confirmable(lsns(200, 80), true); got != 100 {
		t.Fatalf("shard 1 behind: %s, want 100", got)
	}
	p.handledOn(1, 200, false)
	if got := p.confirmable(lsns(150, 80), true); got != 150 {
		t.Fatalf("shard 0's commit at 200 flushed only to 150: %s, want 150", got)
	}
	if got := p.confirmable(lsns(200, 80), true); got != 500 {
		t.Fatalf("everything durable and idle: %s, want 500", got)
	}
	// A later run: shard 1 commits at 300, shard 0 still at 200.
	p.sentUpTo(300)
	p.handledOn(1, 300, true)
	if got := p.confirmable(lsns(200, 300), true); got != 200 {
		t.Fatalf("shard 0 has not handled 300: %s, want 200", got)
	}
}
