package stream

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/progress"
)

// sessionConfig is what one session of a slot's stream needs.
type sessionConfig struct {
	cat *catalog.Catalog
	// node is the source shard's primary, sourceDSN its connection
	// string, slot the slot streamed there; dstDSN are the destination
	// shards' connection strings.
	node      *catalog.Node
	sourceDSN string
	dstDSN    []string
	slot      string
	// copySlot names the copy whose watermarks apply (Request.Slot).
	copySlot                  string
	sourceShard, sourceShards int
	dst, sourceRules          *catalog.Cluster
	publication               string
	batchChanges              int
	batchDelay                time.Duration
	budget                    *spoolBudget
	status                    *progress.Slot
	log                       hclog.Logger
	// job is the migration (for tables the DDL stage copies again); ddl
	// is set with resharding_ddl = "replicate": the source's captured
	// statements are applied (the barrier lines up several source
	// shards' streams at each).
	job *job.Job
	ddl *ddlBarrier
	// gate holds the slot's stream for a Hold (nil: never held).
	gate *gate
}

// captureDDL tells whether the stream applies captured statements.
func (c *sessionConfig) captureDDL() bool {
	return c.cat.Config.General.ReshardingDDL == catalog.DDLReplicate
}

// timeout bounds one exchange with a server: a silent network (a dead
// route that drops every packet) fails it, and the session reconnects,
// instead of hanging the stream for good.
func (c *sessionConfig) timeout() time.Duration { return c.cat.NetworkTimeout() }

// runSession is one connection's worth of streaming: it connects the
// destination shards' appliers, starts replication from the slot, and
// runs the stages until an error or ctx ends.
func runSession(ctx context.Context, cfg sessionConfig) error {
	shards := len(cfg.dst.Shards)
	appliers := make([]*applier, shards)
	// monitors are connections to the shards for what the apply sessions
	// cannot be asked while they apply: flushed positions, table checks.
	monitors := make([]*pgx.Conn, shards)
	defer func() {
		for _, a := range appliers {
			if a != nil {
				a.rollback()
				a.close()
			}
		}
		for _, m := range monitors {
			if m != nil {
				m.Close(context.Background())
			}
		}
	}()
	origins := make([]pglogrepl.LSN, shards)
	for k, dsn := range cfg.dstDSN {
		a := &applier{shard: k, dsn: dsn, origin: OriginName(cfg.slot, k), timeout: cfg.timeout()}
		setupCtx, cancel := context.WithTimeout(ctx, cfg.timeout())
		err := a.connect(setupCtx)
		if err == nil {
			err = a.setupMovedRows(setupCtx)
		}
		if err == nil {
			appliers[k], origins[k] = a, a.applied
			if monitors[k], err = pgx.Connect(setupCtx, dsn); err != nil {
				err = fmt.Errorf("connect to destination shard %d: %w", k, err)
			}
		}
		cancel()
		if err != nil {
			return err
		}
	}
	setupCtx, cancel := context.WithTimeout(ctx, cfg.timeout())
	marks, err := loadCopyMarks(setupCtx, appliers[0].conn, cfg.copySlot, cfg.sourceShard)
	cancel()
	if err != nil {
		return fmt.Errorf("read the copy's watermarks on destination shard 0: %w", err)
	}
	srcDSN := cfg.sourceDSN
	rcv, err := dialReceiver(ctx, cfg.cat, cfg.node, cfg.slot)
	if err != nil {
		return err
	}
	defer rcv.close()
	confirmed, err := slotPosition(ctx, srcDSN, cfg.slot, cfg.node)
	if err != nil {
		return err
	}
	pos := newPositions(confirmed, origins)
	options, err := rcv.start(ctx, cfg.publication, srcDSN)
	if err != nil {
		return err
	}
	cfg.gate.attach(pos, rcv, origins)
	defer cfg.gate.detach()
	cfg.log.Info("streaming", "from", confirmed, "shard_origins", originPositions(origins), "options", strings.Join(options, ", "))
	cfg.status.SetError("")
	lagCtx, stopLag := context.WithCancel(ctx)
	defer stopLag()
	go lagPoller{dsn: srcDSN, slot: cfg.slot, status: cfg.status}.run(lagCtx)

	rt := &router{shards: shards, sourceShard: cfg.sourceShard, sourceShards: cfg.sourceShards, origins: origins, marks: marks, slot: cfg.slot}
	mv := newMover(cfg.slot, origins, cfg.dstDSN, cfg.timeout())
	defer mv.close()
	var stage *ddlStage
	if cfg.captureDDL() {
		setupCtx, cancel := context.WithTimeout(ctx, cfg.timeout())
		stage, err = startDDLStage(setupCtx, cfg, serverMajor(rcv.conn), appliers, rt, pos)
		cancel()
		if err != nil {
			return err
		}
		defer stage.close()
	}

	// Batches are routed by their own goroutine, in order, while the next
	// ones are received and decoded; each shard's worker applies its part.
	applyCtx, stopApply := context.WithCancel(ctx)
	applyCh := make(chan []*txn, 2)
	applyErr := make(chan error, 1)
	applyDone := make(chan struct{})
	go func() {
		defer close(applyDone)
		w := startWorkers(applyCtx, appliers, mv, pos, cfg.status)
		defer w.stop()
		d := &dispatcher{router: rt, workers: w, budget: cfg.budget, partChanges: cfg.batchChanges, ddl: stage}
		var err error
		for err == nil {
			select {
			case batch, ok := <-applyCh:
				if !ok {
					return
				}
				err = d.apply(applyCtx, batch)
			case <-w.failed:
				// A shard failed while the router waited for work: stop
				// the session now rather than at the next batch.
				err = w.failure()
			}
		}
		applyErr <- err
		for batch := range applyCh {
			releaseSpools(cfg.budget, batch)
		}
	}()
	defer func() {
		stopApply()
		close(applyCh)
		<-applyDone
	}()

	rels := newRelations()
	rels.captureDDL = stage != nil
	asm := newAssembler(rels, cfg.budget)
	// A transaction of more changes than a batch is held like a streamed
	// one (with captured statements too: the DDL stage reads it back in
	// parts, its statements at their place among them).
	asm.spoolAfter = cfg.batchChanges
	defer asm.release()
	shape := shaper{conn: monitors[0], dst: cfg.dst, sourceRules: cfg.sourceRules}
	var (
		pending      []*txn
		pendingCount int
		pendingSince time.Time
		lastStatus   time.Time
		statuses     int
	)
	send := func(batch []*txn) error {
		// While the apply side is busy (a long statement: an index build,
		// a table copied again), the source still hears from the stream,
		// or its wal_sender_timeout would end the connection.
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case applyCh <- batch:
				pos.sentUpTo(batch[len(batch)-1].commitLSN)
				return nil
			case err := <-applyErr:
				return err
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
				if _, err := confirm(ctx, rcv, pos, appliers, monitors, false, cfg); err != nil {
					return err
				}
			}
		}
	}
	flush := func() error {
		// (A Hold may keep the later transactions back.)
		n := cfg.gate.admit(pending)
		if n == 0 {
			return nil
		}
		if err := send(pending[:n]); err != nil {
			return err
		}
		pending, pendingCount = heldBack(pending, n)
		pendingSince = time.Now()
		return nil
	}
	for {
		select {
		case err := <-applyErr:
			return err
		default:
		}
		if cfg.gate.serving() {
			if err := cfg.gate.serve(ctx, flush); err != nil {
				return err
			}
		}
		if time.Since(lastStatus) > time.Second {
			if err := flush(); err != nil {
				return err
			}
			flushed, err := confirm(ctx, rcv, pos, appliers, monitors, asm.idle(), cfg)
			if err != nil {
				return err
			}
			lastStatus = time.Now()
			if statuses++; statuses%10 == 0 {
				if err := cleanMoved(ctx, monitors, flushed, cfg); err != nil {
					return err
				}
			}
		}
		// Wake up when something is due: the pending batch's deadline, or
		// the next status message.
		due := lastStatus.Add(time.Second)
		if len(pending) > 0 && pendingSince.Add(cfg.batchDelay).Before(due) {
			due = pendingSince.Add(cfg.batchDelay)
		}
		due = cfg.gate.due(due)
		m, err := rcv.receive(ctx, due)
		if err != nil {
			if ctx.Err() != nil {
				_ = flush()
				return ctx.Err()
			}
			return err
		}
		switch {
		case m.timeout:
			// Nothing arrived: apply what is pending.
			if err := flush(); err != nil {
				return err
			}
			continue
		case m.keepalive:
			pos.keepalive(m.serverEnd)
			cfg.gate.observe(m.serverEnd)
			if m.replyRequested {
				lastStatus = time.Time{}
			}
			continue
		}
		ev, err := asm.feed(m.walStart, m.data)
		if err != nil {
			return err
		}
		if r := ev.relation; r != nil && stage == nil {
			// (With captured statements, relations are shaped by the
			// DDL stage just before their first change is applied.)
			pctx, cancel := context.WithTimeout(ctx, cfg.timeout())
			err := shape.prepare(pctx, r)
			cancel()
			if err != nil {
				return err
			}
		}
		t := ev.txn
		if t == nil {
			continue
		}
		cfg.status.Transaction(t.commitTime)
		cfg.gate.observe(t.commitLSN)
		if t.spool != nil {
			// A streamed transaction (or one of more changes than a
			// batch) is applied alone.
			if err := flush(); err != nil {
				return err
			}
		}
		if len(pending) == 0 {
			pendingSince = time.Now()
		}
		pending = append(pending, t)
		pendingCount += len(t.changes)
		if t.spool != nil || pendingCount >= cfg.batchChanges || time.Since(pendingSince) >= cfg.batchDelay {
			if err := flush(); err != nil {
				return err
			}
		}
		// Held, the stream buffers a batch, then stops receiving.
		if err := cfg.gate.block(ctx, heldFull(pending, pendingCount, cfg.batchChanges), func() error {
			_, err := confirm(ctx, rcv, pos, appliers, monitors, false, cfg)
			return err
		}, applyErr); err != nil {
			return err
		}
	}
}

// confirm sends the source the position every shard has durably applied
// (positions decides it from the shards' flushed origins), and returns
// those.
func confirm(ctx context.Context, rcv *receiver, pos *positions, appliers []*applier, monitors []*pgx.Conn, idle bool, cfg sessionConfig) ([]pglogrepl.LSN, error) {
	flushed := make([]pglogrepl.LSN, len(appliers))
	for k, a := range appliers {
		qctx, cancel := context.WithTimeout(ctx, cfg.timeout())
		f, err := a.flushed(qctx, monitors[k])
		cancel()
		if err != nil {
			return nil, fmt.Errorf("destination shard %d: read its flushed position: %w", k, err)
		}
		flushed[k] = f
	}
	lsn := pos.confirmable(flushed, idle)
	cfg.status.Confirmed(lsn)
	return flushed, rcv.sendStatus(ctx, lsn)
}

// cleanMoved removes the records of moved rows that the shards they moved
// to have flushed.
func cleanMoved(ctx context.Context, monitors []*pgx.Conn, flushed []pglogrepl.LSN, cfg sessionConfig) error {
	for k, m := range monitors {
		qctx, cancel := context.WithTimeout(ctx, cfg.timeout())
		err := cleanMovedRows(qctx, m, cfg.slot, flushed)
		cancel()
		if err != nil {
			return fmt.Errorf("destination shard %d: remove the records of moved rows: %w", k, err)
		}
	}
	return nil
}

func originPositions(origins []pglogrepl.LSN) string {
	parts := make([]string, len(origins))
	for i, l := range origins {
		parts[i] = fmt.Sprintf("%d:%s", i, l)
	}
	return strings.Join(parts, " ")
}
