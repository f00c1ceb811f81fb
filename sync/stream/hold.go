package stream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"golang.org/x/sync/errgroup"
)

// ErrPassed is what Hold's error wraps when a stream has already applied a
// transaction that commits at or after the position it was asked to hold
// at: the caller takes a new position.
var ErrPassed = errors.New("the stream has already applied past the position")

// ErrNotStreaming is what Hold's error wraps when no stream runs (not
// yet, or no more) to be held.
var ErrNotStreaming = errors.New("the stream is not running")

// pauseLimit bounds how long the streams stay paused while the caller
// finds its positions (Hold's take, when paused first): past it they run
// again, and the hold at the positions finds them passed (ErrPassed)
// unless they were idle.
const pauseLimit = 2 * time.Second

// replyEvery is how often a stream waiting to know that nothing before its
// hold position is still to come asks the source for a keepalive.
const replyEvery = 10 * time.Millisecond

// Hold holds a running stream (every slot of a Run, one per source shard)
// at source positions: each slot's stream applies every transaction that
// commits before its position, on every destination shard, and nothing
// after it, until released. It keeps receiving meanwhile (the transactions
// after the position wait in memory, within the batch bounds, then on the
// socket) and keeps the source's connection alive. VERIFY holds the
// streams while it takes the destination's snapshots; CUTOVER may too.
//
// One Hold serves every Run it is given to (Request.Hold), one at a time;
// it is safe for concurrent use. A nil *Hold holds nothing.
type Hold struct {
	mu    sync.Mutex
	gates []*gate // the running Run's slots, by source shard; nil between runs
	// pauseFirst: the last Hold found a stream passed; the next one
	// pauses the streams before it takes its positions.
	pauseFirst bool
	// busy serialises Hold calls.
	busy chan struct{}
}

// NewHold returns a Hold to pass to Run in Request.Hold.
func NewHold() *Hold { return &Hold{busy: make(chan struct{}, 1)} }

// begin gives a Run's slots their gates (slots[i]: source shard i).
func (h *Hold) begin(slots []string, log hclog.Logger) []*gate {
	gates := make([]*gate, len(slots))
	if h == nil {
		return gates // nil gates: nothing held
	}
	for i, s := range slots {
		gates[i] = &gate{slot: s, log: log.With("slot", s), changed: make(chan struct{})}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, g := range h.gates {
		g.close()
	}
	h.gates = gates
	return gates
}

// end closes a Run's gates: a hold waiting on them fails.
func (h *Hold) end(gates []*gate) {
	if h == nil {
		return
	}
	for _, g := range gates {
		g.close()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.gates) > 0 && len(gates) > 0 && h.gates[0] == gates[0] {
		h.gates = nil
	}
}

// Hold calls take for the positions to hold at (one per source shard, in
// shard order), lets each slot's stream apply every transaction that
// commits before its position and nothing after it, and returns once every
// destination shard has committed them all. The streams then hold until
// release is called (once); release returns how long the streams held
// back transactions they had received with nothing else left to apply
// (the longest of the slots): what the hold cost them. (While a stream
// still applies what it lags behind its position, what it holds back
// would wait anyway.)
//
// A stream usually lags its source by more than take lasts, and so has
// not reached its position yet: it runs on up to it and stops there, and
// holds back only what comes after. A stream that has already handed on a
// transaction committing at or after its position makes Hold fail with
// ErrPassed, and the next Hold pauses every stream first (they hand
// nothing more on) while take runs, so that its positions come after
// everything handed on; if take lasts longer than pauseLimit the streams
// run again meanwhile. An error of take is returned as it is; on any
// error nothing is held.
func (h *Hold) Hold(ctx context.Context, take func(context.Context) ([]pglogrepl.LSN, error)) (release func() time.Duration, err error) {
	if h == nil {
		return nil, ErrNotStreaming
	}
	select {
	case h.busy <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	h.mu.Lock()
	gates, pauseFirst := h.gates, h.pauseFirst
	h.mu.Unlock()
	if len(gates) == 0 {
		<-h.busy
		return nil, ErrNotStreaming
	}
	var once sync.Once
	var stall time.Duration
	stopMeters := make(chan struct{})
	var meters sync.WaitGroup
	for _, g := range gates {
		meters.Add(1)
		go func() {
			defer meters.Done()
			g.meter(stopMeters)
		}()
	}
	release = func() time.Duration {
		once.Do(func() {
			close(stopMeters)
			meters.Wait()
			for _, g := range gates {
				stall = max(stall, g.release())
			}
			<-h.busy
		})
		return stall
	}
	if pauseFirst {
		for _, g := range gates {
			g.pause()
		}
	}

	type taken struct {
		lsns []pglogrepl.LSN
		err  error
	}
	got := make(chan taken, 1)
	go func() {
		lsns, err := take(ctx)
		got <- taken{lsns, err}
	}()
	var t taken
	limit := time.NewTimer(pauseLimit)
	select {
	case t = <-got:
		limit.Stop()
	case <-limit.C:
		if pauseFirst {
			for _, g := range gates {
				g.unpause()
			}
			gates[0].log.Warn("the position to hold at took long to find: the streams run meanwhile", "after", pauseLimit)
		}
		t = <-got
	}
	if t.err != nil {
		release()
		return nil, t.err
	}
	if len(t.lsns) != len(gates) {
		release()
		return nil, fmt.Errorf("hold at %d positions: the stream reads %d source shards", len(t.lsns), len(gates))
	}
	for k, g := range gates {
		if err := g.holdAt(t.lsns[k]); err != nil {
			release()
			h.mu.Lock()
			h.pauseFirst = errors.Is(err, ErrPassed)
			h.mu.Unlock()
			return nil, err
		}
	}
	h.mu.Lock()
	h.pauseFirst = false
	h.mu.Unlock()
	eg, gctx := errgroup.WithContext(ctx)
	for _, g := range gates {
		eg.Go(func() error { return g.waitReached(gctx) })
	}
	if err := eg.Wait(); err != nil {
		release()
		return nil, err
	}
	for k, g := range gates {
		g.log.Info("stream held", "at", t.lsns[k], "paused_first", pauseFirst)
	}
	return release, nil
}

// gate is one slot's part of a Hold: what its stream may hand to the
// shards, and what its current session reports of its progress. The
// session (the slot's receiving loop) asks it before handing transactions
// on; Hold sets it and waits on it.
type gate struct {
	slot string
	log  hclog.Logger

	mu sync.Mutex
	// paused: nothing more is handed on, except, with at set, the
	// transactions committing before at.
	paused bool
	at     pglogrepl.LSN
	// heldSince is when the stream first held back a transaction it had
	// received (zero while it has not); idle sums the time it held back
	// transactions with nothing else left to apply, idleSince is when
	// the current such time began (zero: the shards are busy).
	heldSince, idleSince time.Time
	idle                 time.Duration
	// passed is the highest commit LSN any session handed on, or that a
	// shard's origin held when a session started: holding before it is
	// too late.
	passed pglogrepl.LSN
	closed bool
	// changed is closed (and replaced) whenever the above change.
	changed chan struct{}

	// The current session (pos nil between sessions).
	pos *positions
	rcv *receiver
	// admitted is the highest commit LSN this session handed on; seen the
	// highest position it knows the source has sent everything before
	// (keepalives, commits received).
	admitted, seen pglogrepl.LSN
	// drained: with at set, every transaction committing before at was
	// handed on (none is still to come).
	drained   bool
	lastReply time.Time
}

// signal wakes whoever waits on the gate (mu held).
func (g *gate) signal() {
	close(g.changed)
	g.changed = make(chan struct{})
	if g.rcv != nil {
		g.rcv.wake()
	}
}

func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	g.signal()
}

func (g *gate) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.paused, g.at = true, 0
	g.signal()
}

// unpause lets the stream run until holdAt.
func (g *gate) unpause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.paused, g.heldSince, g.idleSince, g.idle = false, time.Time{}, time.Time{}, 0
	g.signal()
}

// holdAt tells the stream to hand on every transaction committing before
// lsn and to hold the others; ErrPassed when it handed on one after.
func (g *gate) holdAt(lsn pglogrepl.LSN) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.passed >= lsn {
		return fmt.Errorf("stream of slot %s holding at %s: %w (it is at %s)", g.slot, lsn, ErrPassed, g.passed)
	}
	g.paused, g.at, g.drained = true, lsn, false
	g.signal()
	return nil
}

// release lets the stream run on, and returns how long it held back
// transactions it had received.
func (g *gate) release() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	var held time.Duration
	if !g.heldSince.IsZero() {
		held = time.Since(g.heldSince)
	}
	stall := g.idle
	if !g.idleSince.IsZero() {
		stall += time.Since(g.idleSince)
	}
	if g.at != 0 {
		g.log.Info("stream released", "held_at", g.at, "held_back_for", held.Round(10*time.Microsecond),
			"idle_for", stall.Round(10*time.Microsecond))
	}
	g.paused, g.at, g.heldSince, g.idleSince, g.idle = false, 0, time.Time{}, time.Time{}, 0
	g.signal()
	return stall
}

// reached tells whether every shard committed every transaction before
// the hold position (mu held).
func (g *gate) reached() bool {
	return g.pos != nil && g.at != 0 && g.drained && g.pos.handledUpTo() >= g.admitted
}

// meter sums, looking every millisecond until stop, the time the stream
// holds back transactions while it has applied everything it handed on:
// the time the hold keeps it idle.
func (g *gate) meter(stop <-chan struct{}) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		g.mu.Lock()
		idle := !g.heldSince.IsZero() && g.pos != nil && g.pos.handledUpTo() >= g.admitted
		switch {
		case idle && g.idleSince.IsZero():
			g.idleSince = time.Now()
		case !idle && !g.idleSince.IsZero():
			g.idle += time.Since(g.idleSince)
			g.idleSince = time.Time{}
		}
		g.mu.Unlock()
	}
}

// waitReached returns once the stream holds at its position.
func (g *gate) waitReached(ctx context.Context) error {
	// The shard workers record their progress in the positions without a
	// signal: checked every millisecond.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		g.mu.Lock()
		ok, closed, at, changed := g.reached(), g.closed, g.at, g.changed
		g.mu.Unlock()
		switch {
		case ok:
			return nil
		case closed:
			return fmt.Errorf("stream of slot %s holding at %s: %w", g.slot, at, ErrNotStreaming)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stream of slot %s: reach %s: %w", g.slot, at, ctx.Err())
		case <-changed:
		case <-tick.C:
		}
	}
}

// The session's side. Every method is safe on a nil gate (no Hold).

// attach makes the gate report a new session's progress: its positions,
// its receiver (woken when the gate changes) and the shards' origins.
func (g *gate) attach(pos *positions, rcv *receiver, origins []pglogrepl.LSN) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pos, g.rcv, g.admitted, g.seen, g.drained = pos, rcv, 0, 0, false
	if m := slices.Max(origins); m > g.passed {
		g.passed = m
	}
	g.signal()
}

// detach ends the session's reports.
func (g *gate) detach() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pos, g.rcv, g.drained = nil, nil, false
	g.signal()
}

// admit is how many of the pending transactions (in commit order) may be
// handed on now; the session hands them on at once.
func (g *gate) admit(pending []*txn) int {
	if g == nil {
		return len(pending)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	n := len(pending)
	if g.paused {
		n = 0
		for n < len(pending) && g.at != 0 && pending[n].commitLSN < g.at {
			n++
		}
	}
	if n < len(pending) {
		g.see(pending[n].commitLSN)
		if g.heldSince.IsZero() {
			g.heldSince = time.Now()
		}
	}
	if n > 0 {
		last := pending[n-1].commitLSN
		g.admitted = max(g.admitted, last)
		g.passed = max(g.passed, last)
	}
	return n
}

// see records that the source sent everything before lsn (mu held).
func (g *gate) see(lsn pglogrepl.LSN) {
	if lsn > g.seen {
		g.seen = lsn
	}
}

// observe records a keepalive's WAL end or a received commit: the source
// sent everything before it.
func (g *gate) observe(lsn pglogrepl.LSN) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.see(lsn)
}

// serving tells whether the session must work toward the hold position:
// hand on what is before it, and learn that nothing more before it comes.
func (g *gate) serving() bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.at != 0 && !g.drained
}

// serve hands on what may go (flush) and, once the source is known to
// have sent everything before the hold position, marks the gate drained;
// until then it asks the source for keepalives.
func (g *gate) serve(ctx context.Context, flush func() error) error {
	g.mu.Lock()
	known := g.at != 0 && g.seen >= g.at
	ask := !known && time.Since(g.lastReply) >= replyEvery
	if ask {
		g.lastReply = time.Now()
	}
	rcv := g.rcv
	g.mu.Unlock()
	if err := flush(); err != nil {
		return err
	}
	if ask && rcv != nil {
		return rcv.requestReply(ctx)
	}
	if known {
		g.mu.Lock()
		g.drained = true
		g.mu.Unlock()
	}
	return nil
}

// due is when the session's receive must return at the latest.
func (g *gate) due(due time.Time) time.Time {
	if g.serving() {
		if d := time.Now().Add(replyEvery); d.Before(due) {
			return d
		}
	}
	return due
}

// block waits, while the stream holds and full is true (the pending
// transactions are all it may buffer), until the gate changes: the
// receiving stops meanwhile, and status is called every 10 seconds so
// that the source still hears from the stream.
func (g *gate) block(ctx context.Context, full bool, status func() error, applyErr <-chan error) error {
	if g == nil || !full {
		return nil
	}
	g.mu.Lock()
	held, changed := g.paused, g.changed
	g.mu.Unlock()
	if !held {
		return nil
	}
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-changed:
			return nil
		case err := <-applyErr:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if err := status(); err != nil {
				return err
			}
		}
	}
}

// handledUpTo is the commit LSN up to which every shard handled every
// transaction handed on.
func (p *positions) handledUpTo() pglogrepl.LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Min(p.handled)
}

// wake makes a pending receive return at once (as a timeout).
func (r *receiver) wake() {
	r.woken.Store(true)
	_ = r.conn.Conn().SetReadDeadline(time.Now())
}

// requestReply asks the source for a keepalive now (its WAL end tells how
// far it has sent), confirming what was confirmed last.
func (r *receiver) requestReply(ctx context.Context) error {
	lsn := r.confirmed
	err := pglogrepl.SendStandbyStatusUpdate(ctx, r.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn, WALFlushPosition: lsn, WALApplyPosition: lsn, ClientTime: time.Now(), ReplyRequested: true})
	if err != nil {
		return fmt.Errorf("ask %s for a keepalive: %w", r.node, err)
	}
	return nil
}

// heldBack is what remains pending once the first n were handed on, and
// its changes.
func heldBack(pending []*txn, n int) ([]*txn, int) {
	if n == len(pending) {
		return nil, 0
	}
	rest := append([]*txn(nil), pending[n:]...)
	changes := 0
	for _, t := range rest {
		changes += len(t.changes)
	}
	return rest, changes
}

// maxHeldTxns bounds the transactions a held stream buffers (besides
// their changes, bounded by the batch size).
const maxHeldTxns = 1000

// heldFull tells whether the pending transactions are all a held stream
// buffers.
func heldFull(pending []*txn, changes, batchChanges int) bool {
	return len(pending) >= maxHeldTxns || changes >= batchChanges
}
