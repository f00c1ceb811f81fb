package stream

import (
	"context"
	"sync"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/sync/progress"
)

// shardWork is one destination shard's part of a run of source
// transactions: its statements (possibly none) and the commit LSN of the
// run's last transaction, which the shard's origin records with them.
type shardWork struct {
	ops     []op
	changes int // row changes the statements hold
	lsn     pglogrepl.LSN
	// keepOpen leaves the destination transaction open: the part is one
	// piece of a larger source transaction, committed by the mover.
	keepOpen bool
}

// shardWorkers apply each destination shard's parts on its own goroutine
// and applier, in order, so that a shard never waits for a slower one
// and routing the next run overlaps with applying this one. Parts are
// queued a few deep; a full queue holds back the router (and with it the
// reading of the slot). Each worker records what its shard handled in the
// positions.
type shardWorkers struct {
	appliers []*applier
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
func startWorkers(ctx context.Context, appliers []*applier, pos *positions, status *progress.Slot) *shardWorkers {
	w := &shardWorkers{appliers: appliers, pos: pos, status: status, failed: make(chan struct{})}
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
	a := w.appliers[k]
	for part := range w.queues[k] {
		if w.failure() == nil {
			var err error
			if len(part.ops) > 0 {
				err = a.apply(ctx, part.ops, part.lsn, !part.keepOpen)
			}
			switch {
			case err != nil:
				w.fail(err)
			case part.keepOpen:
				w.status.Applied(int64(len(part.ops)))
			default:
				w.pos.handledOn(k, part.lsn, len(part.ops) > 0)
				w.status.Applied(int64(len(part.ops)))
				w.status.AppliedOnShard(k, part.changes)
			}
		}
		w.pending.Done()
	}
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
