package stream

import (
	"context"
	"sync"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/sync/progress"
)

// shardWork is one destination shard's part of a run of source
// transactions: its statements (possibly none), the commit LSN of the
// run's last transaction, which the shard's origin records with them, and
// whether this part ends the run (commit).
type shardWork struct {
	ops     []op
	changes int // row changes the run's statements hold (on its last part)
	lsn     pglogrepl.LSN
	commit  bool
	// board and part: the run may move rows; this is its part-th part.
	board *board
	part  int
}

// shardWorkers apply each destination shard's parts on its own goroutine
// and applier, in order, so that a shard never waits for a slower one
// (except for a row moving to it from a shard that has not run its part
// yet) and routing the next run overlaps with applying this one. Parts are
// queued a few deep; a full queue holds back the router (and with it the
// reading of the slot). Each worker records what its shard handled in the
// positions.
type shardWorkers struct {
	appliers []*applier
	mover    *mover
	pos      *positions
	status   *progress.Slot

	queues  []chan shardWork
	pending sync.WaitGroup // parts submitted and not yet processed
	running sync.WaitGroup // the worker goroutines
	failed  chan struct{}  // closed on the first error
	once    sync.Once
	err     error
}

// queueDepth is how many parts may wait per shard.
const queueDepth = 3

// startWorkers starts one worker per destination shard. They stop when
// stop is called or ctx ends.
func startWorkers(ctx context.Context, appliers []*applier, mv *mover, pos *positions, status *progress.Slot) *shardWorkers {
	w := &shardWorkers{appliers: appliers, mover: mv, pos: pos, status: status, failed: make(chan struct{})}
	w.queues = make([]chan shardWork, len(appliers))
	for k := range w.queues {
		w.queues[k] = make(chan shardWork, queueDepth)
		w.running.Add(1)
		go w.work(ctx, k)
	}
	return w
}

func (w *shardWorkers) work(ctx context.Context, k int) {
	defer w.running.Done()
	for part := range w.queues[k] {
		if w.failure() == nil {
			if err := w.process(ctx, k, part); err != nil {
				w.appliers[k].rollback()
				w.fail(err)
			}
		}
		w.pending.Done()
	}
}

// process applies one part on shard k.
func (w *shardWorkers) process(ctx context.Context, k int, part shardWork) error {
	a := w.appliers[k]
	var arrivals []op
	moved := 0
	if len(part.ops) > 0 {
		var took []probed
		var err error
		if arrivals, took, err = a.apply(ctx, part.ops); err != nil {
			return err
		}
		for _, p := range took {
			part.board.add(p.op.row, image{pos: p.op.pos, shard: k, values: p.row})
		}
		moved += len(took)
		w.status.Applied(int64(len(part.ops)))
	}
	if part.board != nil {
		part.board.report(k, part.part)
	}
	if len(arrivals) > 0 {
		// The arrivals are counted with the part's changes (the router
		// counts every statement but the probes): a moved row is one
		// change here, however it lands, and one on the shard it left.
		if _, err := w.mover.settle(ctx, a, part.board, part.part, arrivals, w.failed); err != nil {
			return err
		}
	}
	if part.commit {
		// Only a commit that wrote moves the shard's origin: one that
		// changed nothing is handled, with nothing to wait for.
		committed := false
		if a.inTx {
			var err error
			if committed, err = a.commitAt(ctx, part.lsn); err != nil {
				return err
			}
		}
		w.pos.handledOn(k, part.lsn, committed)
	}
	if n := part.changes + moved; n > 0 {
		w.status.AppliedOnShard(k, n)
	}
	return nil
}

func (w *shardWorkers) fail(err error) {
	w.once.Do(func() {
		w.err = err
		close(w.failed)
	})
}

// failure is the first error a worker met, if any.
func (w *shardWorkers) failure() error {
	select {
	case <-w.failed:
		return w.err
	default:
		return nil
	}
}

// submit queues a part for shard k, waiting while its queue is full.
func (w *shardWorkers) submit(ctx context.Context, k int, part shardWork) error {
	if err := w.failure(); err != nil {
		return err
	}
	w.pending.Add(1)
	select {
	case w.queues[k] <- part:
		return nil
	case <-w.failed:
		w.pending.Done()
		return w.err
	case <-ctx.Done():
		w.pending.Done()
		return ctx.Err()
	}
}

// wait returns once every submitted part is processed: the shards' apply
// sessions are then idle, between transactions.
func (w *shardWorkers) wait(ctx context.Context) error {
	idle := make(chan struct{})
	go func() {
		w.pending.Wait()
		close(idle)
	}()
	select {
	case <-idle:
		return w.failure()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop lets the workers finish what is queued (skipping it after an error
// or cancellation) and waits for them.
func (w *shardWorkers) stop() {
	for _, q := range w.queues {
		close(q)
	}
	w.running.Wait()
}
