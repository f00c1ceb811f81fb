package stream

import (
	"slices"
	"sync"

	"github.com/jackc/pglogrepl"
)

// positions is what the stream knows of its progress, per destination
// shard, and it alone decides what may be confirmed to the source: the
// slot must never move past a change some shard could still lose.
//
// The receiving side records what it hands to the shards (sent) and what
// the source reports (keepalive); the shard workers record what each shard
// handled and committed. Safe for concurrent use.
type positions struct {
	mu sync.Mutex
	// handled is, per shard, the commit LSN of the last source transaction
	// the shard has handled (applied, or found nothing to do for).
	handled []pglogrepl.LSN
	// lastWork is, per shard, the last commit LSN a transaction of the
	// shard's committed with changes: durable once its origin has flushed
	// it. A transaction that changed nothing on the shard (no transaction
	// id: PostgreSQL leaves the origin where it was) is not work: were it
	// counted, the shard's flushed origin would stay behind it until the
	// next write there, holding back every confirmation (a cutover's drain
	// under its locks waited for a write that never came).
	lastWork []pglogrepl.LSN
	// serverEnd is the source's WAL end from its last keepalive.
	serverEnd pglogrepl.LSN
	// sent is the commit LSN of the last transaction handed to the shards.
	sent pglogrepl.LSN
}

// newPositions starts a session's positions: every shard has handled
// what the slot confirmed, and its last work is what its origin holds.
// Positions from an earlier session mean nothing now: a shard may have
// lost unflushed commits since (a crash), and only this session's
// messages tell what has been sent.
func newPositions(confirmed pglogrepl.LSN, origins []pglogrepl.LSN) *positions {
	p := &positions{handled: make([]pglogrepl.LSN, len(origins)), lastWork: slices.Clone(origins)}
	for k := range p.handled {
		p.handled[k] = confirmed
	}
	return p
}

// handledOn records that shard k handled every transaction up to lsn;
// committed tells it committed changes of its own at lsn (a commit that
// wrote, and so moved the shard's origin to lsn).
func (p *positions) handledOn(k int, lsn pglogrepl.LSN, committed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if committed {
		p.lastWork[k] = lsn
	}
	p.handled[k] = lsn
}

// committedOn records that shard k committed changes at lsn (one part of
// a transaction that more shards are still committing).
func (p *positions) committedOn(k int, lsn pglogrepl.LSN) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastWork[k] = lsn
}

// handledAll records that every shard handled every transaction up to lsn.
func (p *positions) handledAll(lsn pglogrepl.LSN) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.handled {
		p.handled[k] = lsn
	}
}

// keepalive records the source's WAL end.
func (p *positions) keepalive(serverEnd pglogrepl.LSN) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if serverEnd > p.serverEnd {
		p.serverEnd = serverEnd
	}
}

// sentUpTo records that every transaction up to lsn was handed to the
// shards.
func (p *positions) sentUpTo(lsn pglogrepl.LSN) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = lsn
}

// confirmable is the position that may be confirmed, given each shard's
// flushed origin position and whether the receiving side is idle (no
// transaction open: all it received was sent).
//
// It is what every shard has durably applied: a shard whose last work is
// durable has everything up to the last transaction handled, otherwise only
// what it flushed. The position the source last reported is confirmed
// instead when it is further, the receiving side is idle, every shard has
// handled every transaction sent and all their work is durable: nothing
// received is left to apply, so nothing before that position is.
func (p *positions) confirmable(flushed []pglogrepl.LSN, idle bool) pglogrepl.LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	lastProcessed := slices.Min(p.handled)
	confirm := lastProcessed
	allClean := true
	for k, f := range flushed {
		eff := lastProcessed
		if f < p.lastWork[k] {
			eff = f
			allClean = false
		}
		confirm = min(confirm, eff)
	}
	if idle && lastProcessed >= p.sent && allClean && p.serverEnd > confirm {
		confirm = p.serverEnd
	}
	return confirm
}
