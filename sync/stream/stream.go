package stream

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/progress"
)

// Request is one stream: every source shard's slot into the destination.
type Request struct {
	Catalog *catalog.Catalog
	// Source and Destination are cluster names; Publication is on the source.
	Source, Destination, Publication string
	// Slot is the slot name (<Slot>_<k> for source shard k when the source
	// has several shards).
	Slot string
	// CopyData tells SHOW REPLICATION_SLOTS the slot was created by a copy.
	CopyData bool
	// SourceRules, for reverse replication (new shards back into the old
	// database), is the cluster whose sharding rules tell which tables the
	// source shards hold parts of (taken from every shard) and which they
	// each hold whole (taken from shard 0 only).
	SourceRules *catalog.Cluster
	// BatchChanges and BatchDelay bound a destination transaction: this
	// many changes, or this long since its first source transaction.
	BatchChanges int
	BatchDelay   time.Duration
	// StreamMemory bounds the memory that source transactions streamed
	// while in progress may use before their changes are spilled to files
	// in SpillDir (default: the system's temporary directory).
	StreamMemory int64
	SpillDir     string
	Task         string
	Registry     *progress.Registry
	Logger       hclog.Logger
}

// DefaultStreamMemory is the default of Request.StreamMemory.
const DefaultStreamMemory = 64 << 20

// Run streams until ctx ends (nil) or a change cannot be applied (an error
// naming it). Lost connections are retried with backoff; every restart
// resumes from the slot and the destination shards' origins, so no change
// is skipped or applied twice.
func Run(ctx context.Context, req Request) error {
	if req.BatchChanges == 0 {
		req.BatchChanges = 10000
	}
	if req.BatchDelay == 0 {
		req.BatchDelay = 50 * time.Millisecond
	}
	if req.StreamMemory == 0 {
		req.StreamMemory = req.Catalog.Config.General.ReshardingStreamMemory
	}
	if req.StreamMemory == 0 {
		req.StreamMemory = DefaultStreamMemory
	}
	if req.SpillDir == "" {
		req.SpillDir = req.Catalog.Config.General.ReshardingSpillDir
	}
	if req.Registry == nil {
		req.Registry = progress.NewRegistry()
	}
	log := req.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	src, ok := req.Catalog.Cluster(req.Source)
	if !ok {
		return fmt.Errorf("database %q is not configured", req.Source)
	}
	dst, ok := req.Catalog.Cluster(req.Destination)
	if !ok {
		return fmt.Errorf("database %q is not configured", req.Destination)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(src.Shards))
	var wg sync.WaitGroup
	slots := copier.SlotNames(req.Slot, len(src.Shards))
	for i, sh := range src.Shards {
		slot := slots[i]
		s := &streamer{req: &req, log: log.Named("stream").With("slot", slot), sourceShard: sh.Number, sourceShards: len(src.Shards), node: sh.Primary, slot: slot, dst: dst}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if errs[i] = s.run(ctx); errs[i] != nil {
				cancel()
			}
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return nil
}

// streamer streams one source shard's slot.
type streamer struct {
	req          *Request
	log          hclog.Logger
	sourceShard  int
	sourceShards int
	node         *catalog.Node
	slot         string
	dst          *catalog.Cluster

	appliers    []*applier
	relations   map[uint32]*relation
	spoolBudget *spoolBudget
	marks       map[string][]watermark
	status      *progress.Slot

	// monitors are connections to the shards for what the apply sessions
	// cannot be asked while they apply: flushed positions, table checks.
	monitors []*pgx.Conn

	// Confirmation bookkeeping, written by the apply goroutine.
	mu        sync.Mutex
	handled   []pglogrepl.LSN // per shard: commit LSN of the last transaction handled
	lastWork  []pglogrepl.LSN // per shard: last commit LSN applied there
	serverEnd pglogrepl.LSN
}

// watermark: rows of a unit copied by a resumed copy already hold the
// changes committed at or before lsn.
type watermark struct {
	lo, hi *int64
	lsn    pglogrepl.LSN
}

func (s *streamer) run(ctx context.Context) error {
	s.spoolBudget = &spoolBudget{limit: s.req.StreamMemory, dir: s.req.SpillDir, onSpill: func(xid uint32, file string) {
		s.log.Info("streamed transaction spilled to disk", "xid", xid, "file", file, "memory_limit", s.req.StreamMemory)
		s.status.Spilled()
	}}
	s.status = &progress.Slot{Task: s.req.Task, Host: s.node.Host, Port: s.node.Port, Database: s.node.Database, Name: s.slot, CopyData: s.req.CopyData}
	s.req.Registry.AddSlot(s.status)
	defer s.req.Registry.RemoveSlot(s.status)
	backoff := 500 * time.Millisecond
	for {
		err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil || !retryable(err) {
			return err
		}
		s.log.Warn("stream interrupted, reconnecting", "error", err, "backoff", backoff)
		s.status.Interrupted(err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
		if backoff < 10*time.Second {
			backoff *= 2
		}
	}
}

// answerWithin bounds one exchange with a server by the network timeout: a
// silent network (a dead route that drops every packet) fails it, and the
// session reconnects, instead of hanging the stream for good.
func (s *streamer) answerWithin(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.req.Catalog.NetworkTimeout())
}

func retryable(err error) bool {
	var fatal *fatalError
	if errors.As(err, &fatal) {
		return false
	}
	// 55006 object_in_use: the slot or an origin is still held by the
	// sessions of a reshard that just died (their servers have not noticed
	// yet), or by another reshard: wait and try again.
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "55006" {
		return true
	}
	return isConnErr(err) || errors.Is(err, errReconnect)
}

var errReconnect = errors.New("reconnect")

// fatalError stops the stream: the change cannot be applied as it is.
type fatalError struct{ msg string }

func (e *fatalError) Error() string { return e.msg }

// session is one connection's worth of streaming.
func (s *streamer) session(ctx context.Context) error {
	cat := s.req.Catalog
	// Destination appliers, one per shard, each with its origin.
	s.appliers = make([]*applier, len(s.dst.Shards))
	s.lastWork = make([]pglogrepl.LSN, len(s.dst.Shards))
	defer func() {
		for _, a := range s.appliers {
			if a != nil {
				a.rollback()
				a.close()
			}
		}
	}()
	s.monitors = make([]*pgx.Conn, len(s.dst.Shards))
	defer func() {
		for _, m := range s.monitors {
			if m != nil {
				m.Close(context.Background())
			}
		}
	}()
	for k, sh := range s.dst.Shards {
		dsn, err := cat.ConnString(sh.Primary, nil)
		if err != nil {
			return &fatalError{err.Error()}
		}
		a := &applier{shard: k, dsn: dsn, origin: OriginName(s.slot, k), timeout: cat.NetworkTimeout()}
		setupCtx, cancel := s.answerWithin(ctx)
		err = a.connect(setupCtx)
		if err == nil {
			s.appliers[k] = a
			s.lastWork[k] = a.applied
			if s.monitors[k], err = pgx.Connect(setupCtx, dsn); err != nil {
				err = fmt.Errorf("connect to destination shard %d: %w", k, err)
			}
		}
		cancel()
		if err != nil {
			return err
		}
	}
	setupCtx, cancel := s.answerWithin(ctx)
	err := s.loadWatermarks(setupCtx)
	cancel()
	if err != nil {
		return err
	}
	s.relations = map[uint32]*relation{}
	dsn, err := cat.ConnString(s.node, map[string]string{"replication": "database"})
	if err != nil {
		return &fatalError{err.Error()}
	}
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("replication connection to %s: %w", s.node, err)
	}
	defer conn.Close(context.Background())
	var confirmed pglogrepl.LSN
	{
		plain, err := pgx.Connect(ctx, mustDSN(cat, s.node))
		if err != nil {
			return err
		}
		var lsn *string
		err = plain.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.slot).Scan(&lsn)
		plain.Close(context.Background())
		if errors.Is(err, pgx.ErrNoRows) {
			return &fatalError{fmt.Sprintf("replication slot %q does not exist on %s", s.slot, s.node)}
		}
		if err != nil {
			return err
		}
		if lsn != nil {
			confirmed, _ = pglogrepl.ParseLSN(*lsn)
		}
	}
	// Positions from an earlier session mean nothing now: a shard may have
	// lost unflushed commits since (a crash), and only this session's
	// messages tell what has been sent.
	s.mu.Lock()
	s.handled = make([]pglogrepl.LSN, len(s.appliers))
	for k := range s.handled {
		s.handled[k] = confirmed
	}
	s.serverEnd = 0
	s.mu.Unlock()
	args := []string{"proto_version '2'", fmt.Sprintf("publication_names '%s'", strings.ReplaceAll(pgx.Identifier{s.req.Publication}.Sanitize(), "'", "''")), "streaming 'true'"}
	if err := pglogrepl.StartReplication(ctx, conn, s.slot, 0, pglogrepl.StartReplicationOptions{PluginArgs: args}); err != nil {
		return fmt.Errorf("start replication from slot %q on %s: %w", s.slot, s.node, err)
	}
	s.log.Info("streaming", "from", confirmed, "shard_origins", s.originPositions())
	s.status.SetError("")
	lagCtx, stopLag := context.WithCancel(ctx)
	defer stopLag()
	go s.refreshLag(lagCtx)

	// Batches are routed by their own goroutine, in order, while the next
	// ones are received and decoded; each shard's worker applies its part.
	applyCtx, stopApply := context.WithCancel(ctx)
	applyCh := make(chan []*txn, 2)
	applyErr := make(chan error, 1)
	applyDone := make(chan struct{})
	go func() {
		defer close(applyDone)
		w := s.startWorkers(applyCtx)
		defer w.stop()
		var err error
		for err == nil {
			select {
			case batch, ok := <-applyCh:
				if !ok {
					return
				}
				err = s.applyBatch(applyCtx, w, batch)
			case <-w.failed:
				// A shard failed while the router waited for work: stop
				// the session now rather than at the next batch.
				err = w.failure()
			}
		}
		applyErr <- err
		for batch := range applyCh {
			releaseSpools(s.spoolBudget, batch)
		}
	}()
	defer func() {
		stopApply()
		close(applyCh)
		<-applyDone
	}()
	var (
		pending      []*txn
		pendingCount int
		pendingSince time.Time
		cur          *txn
		streamed     = map[uint32]*spool{} // in-progress streamed transactions
		streamXid    uint32
		inStream     bool
		lastStatus   time.Time
	)
	defer func() {
		for _, sp := range streamed {
			sp.release(s.spoolBudget)
		}
	}()
	// Cancellation interrupts a pending read.
	stopWake := context.AfterFunc(ctx, func() { _ = conn.Conn().SetReadDeadline(time.Now()) })
	defer stopWake()
	var readDeadline time.Time
	// received is the commit LSN of the last transaction handed to the
	// router: once every shard has handled it, nothing is in flight.
	var received pglogrepl.LSN
	send := func(batch []*txn) error {
		select {
		case applyCh <- batch:
			received = batch[len(batch)-1].commitLSN
			return nil
		case err := <-applyErr:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		if err := send(pending); err != nil {
			return err
		}
		pending, pendingCount = nil, 0
		return nil
	}
	for {
		select {
		case err := <-applyErr:
			return err
		default:
		}
		if time.Since(lastStatus) > time.Second {
			if err := flush(); err != nil {
				return err
			}
			// Between transactions, the position the source reports may be
			// confirmed once every shard has handled all that was received
			// (a part that failed is never handled).
			var upTo pglogrepl.LSN
			if cur == nil && len(streamed) == 0 {
				upTo = received
			} else {
				upTo = pglogrepl.LSN(math.MaxUint64)
			}
			if err := s.sendStatus(ctx, conn, upTo); err != nil {
				return err
			}
			lastStatus = time.Now()
		}
		// Wake up when something is due: the pending batch's deadline, or
		// the next status message. The context is reused until then
		// (creating one per message costs more than decoding it).
		due := lastStatus.Add(time.Second)
		if len(pending) > 0 && pendingSince.Add(s.req.BatchDelay).Before(due) {
			due = pendingSince.Add(s.req.BatchDelay)
		}
		// A read deadline on the socket (not a context: pgconn would watch
		// a context on every call) wakes the loop when something is due.
		if !due.Equal(readDeadline) {
			_ = conn.Conn().SetReadDeadline(due)
			readDeadline = due
		}
		msg, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) && ctx.Err() == nil {
				// Nothing arrived: apply what is pending.
				if err := flush(); err != nil {
					return err
				}
				continue
			}
			if ctx.Err() != nil {
				_ = flush()
				return ctx.Err()
			}
			return fmt.Errorf("receive from %s: %w", s.node, err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication error from %s: %s (SQLSTATE %s)", s.node, m.Message, m.Code)
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return err
				}
				s.mu.Lock()
				if ka.ServerWALEnd > s.serverEnd {
					s.serverEnd = ka.ServerWALEnd
				}
				s.mu.Unlock()
				if ka.ReplyRequested {
					lastStatus = time.Time{}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return err
				}
				if len(xld.WALData) > 0 && (xld.WALData[0] == 'I' || xld.WALData[0] == 'U' || xld.WALData[0] == 'D') {
					rm, err := decodeRow(xld.WALData, inStream)
					if err != nil {
						return &fatalError{fmt.Sprintf("decode pgoutput message at %s: %v", xld.WALStart, err)}
					}
					r, err := s.rel(rm.relation)
					if err != nil {
						return err
					}
					if r.ignore {
						continue
					}
					if err := rm.checkShape(len(r.columns)); err != nil {
						return &fatalError{fmt.Sprintf("decode pgoutput message at %s for %s: %v", xld.WALStart, r, err)}
					}
					c := &change{kind: rm.kind, rel: r, newRow: rm.newRow, oldRow: rm.oldRow, oldIsKey: rm.oldType == 'K'}
					if inStream {
						c.subxid = rm.xid
						if err := streamed[streamXid].add(s.spoolBudget, c, int64(len(xld.WALData))); err != nil {
							return &fatalError{err.Error()}
						}
					} else if cur != nil {
						cur.changes = append(cur.changes, c)
					}
					continue
				}
				lm, err := parseV2(xld.WALData, inStream)
				if err != nil {
					return &fatalError{fmt.Sprintf("decode pgoutput message at %s: %v", xld.WALStart, err)}
				}
				switch lm := lm.(type) {
				case *pglogrepl.RelationMessageV2:
					if err := s.relation(ctx, lm); err != nil {
						return err
					}
				case *pglogrepl.BeginMessage:
					cur = &txn{xid: lm.Xid}
				case *pglogrepl.CommitMessage:
					if cur == nil {
						return &fatalError{"commit without begin"}
					}
					cur.commitLSN, cur.endLSN = lm.CommitLSN, lm.TransactionEndLSN
					s.status.Transaction(lm.CommitTime)
					if len(pending) == 0 {
						pendingSince = time.Now()
					}
					pending = append(pending, cur)
					pendingCount += len(cur.changes)
					cur = nil
					if pendingCount >= s.req.BatchChanges || time.Since(pendingSince) >= s.req.BatchDelay {
						if err := flush(); err != nil {
							return err
						}
					}
				case *pglogrepl.StreamStartMessageV2:
					inStream, streamXid = true, lm.Xid
					if streamed[lm.Xid] == nil {
						streamed[lm.Xid] = &spool{xid: lm.Xid}
					}
				case *pglogrepl.StreamStopMessageV2:
					inStream = false
				case *pglogrepl.StreamAbortMessageV2:
					if sp := streamed[lm.Xid]; sp != nil && lm.Xid == lm.SubXid {
						sp.release(s.spoolBudget)
						delete(streamed, lm.Xid)
					} else if sp != nil {
						sp.abortSub(lm.SubXid)
					}
				case *pglogrepl.StreamCommitMessageV2:
					sp := streamed[lm.Xid]
					delete(streamed, lm.Xid)
					if sp == nil {
						sp = &spool{xid: lm.Xid}
					}
					t := &txn{xid: lm.Xid, commitLSN: lm.CommitLSN, endLSN: lm.TransactionEndLSN, spool: sp}
					s.status.Transaction(lm.CommitTime)
					if err := flush(); err != nil {
						return err
					}
					if err := send([]*txn{t}); err != nil {
						return err
					}
				default:
					c, err := s.toChange(lm)
					if err != nil {
						return err
					}
					if c == nil {
						continue
					}
					if inStream {
						c.subxid = subXid(lm)
						if err := streamed[streamXid].add(s.spoolBudget, c, int64(len(xld.WALData))); err != nil {
							return &fatalError{err.Error()}
						}
					} else if cur != nil {
						cur.changes = append(cur.changes, c)
					}
				}
			}
		}
	}
}

func subXid(m pglogrepl.Message) uint32 {
	switch m := m.(type) {
	case *pglogrepl.InsertMessageV2:
		return m.Xid
	case *pglogrepl.UpdateMessageV2:
		return m.Xid
	case *pglogrepl.DeleteMessageV2:
		return m.Xid
	case *pglogrepl.TruncateMessageV2:
		return m.Xid
	}
	return 0
}

// parseV2 decodes a pgoutput message, turning a decoder panic on malformed
// input into an error. A TRUNCATE's relation count is checked against the
// message first: pglogrepl allocates it before reading, so a corrupt count
// would ask for gigabytes (found by FuzzDecodeMessage).
func parseV2(data []byte, inStream bool) (m pglogrepl.Message, err error) {
	if err := checkTruncate(data, inStream); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed message: %v", r)
		}
	}()
	return pglogrepl.ParseV2(data, inStream)
}

func mustDSN(cat *catalog.Catalog, n *catalog.Node) string {
	dsn, _ := cat.ConnString(n, nil)
	return dsn
}

func (s *streamer) originPositions() string {
	parts := make([]string, len(s.appliers))
	for i, a := range s.appliers {
		parts[i] = fmt.Sprintf("%d:%s", i, a.applied)
	}
	return strings.Join(parts, " ")
}

// describe builds the relation a Relation message describes: its quoted
// name, columns, replica identity and key columns.
func describe(m *pglogrepl.RelationMessageV2) *relation {
	r := &relation{id: m.RelationID, schema: m.Namespace, name: m.RelationName, identity: m.ReplicaIdentity}
	r.qualified = pgx.Identifier{r.schema, r.name}.Sanitize()
	for i, c := range m.Columns {
		r.columns = append(r.columns, c.Name)
		if c.Flags&1 != 0 {
			r.key = append(r.key, i)
		}
	}
	return r
}

// relation records a table description, checks the destination can take
// its columns, and routes it.
func (s *streamer) relation(ctx context.Context, m *pglogrepl.RelationMessageV2) error {
	r := describe(m)
	if r.schema == stateSchema {
		// reshard's own bookkeeping on a shard (copy and task state) is
		// published with FOR ALL TABLES, but it is not application data.
		r.ignore = true
		s.relations[r.id] = r
		return nil
	}
	// The destination must already have every column (DDL is not
	// replicated): stop with the table and the columns to add.
	ctx, cancel := s.answerWithin(ctx)
	defer cancel()
	rows, err := s.monitors[0].Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`, r.qualified)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	types := map[string]string{}
	for rows.Next() {
		var n, typ string
		if err := rows.Scan(&n, &typ); err != nil {
			rows.Close()
			return err
		}
		have[n] = true
		types[n] = typ
	}
	rows.Close()
	var missing []string
	for _, c := range r.columns {
		if !have[c] {
			missing = append(missing, c)
		}
	}
	if len(have) == 0 {
		return &fatalError{fmt.Sprintf("table %s is not on the destination: DDL is not replicated; create it on every shard (SCHEMA_SYNC PRE) and restart the stream", r)}
	}
	if len(missing) > 0 {
		return &fatalError{fmt.Sprintf("table %s changed on the source: columns %s are missing on the destination; run ALTER TABLE %s ADD COLUMN ... on every shard (DDL is not replicated) and restart the stream",
			r, strings.Join(missing, ", "), r.qualified)}
	}
	for _, c := range r.columns {
		r.types = append(r.types, types[c])
	}
	router, col, err := copier.RouteColumns(r.schema, r.name, r.columns, s.dst)
	if err != nil {
		return &fatalError{err.Error()}
	}
	r.router, r.shardCol = router, col
	r.sameOnEverySource = col < 0
	if s.req.SourceRules != nil {
		// Reverse replication: whether the source shards (the new shards)
		// each hold part of the table or a whole copy follows the forward
		// rules, not the destination's.
		_, fcol, err := copier.RouteColumns(r.schema, r.name, r.columns, s.req.SourceRules)
		if err != nil {
			return &fatalError{err.Error()}
		}
		r.sameOnEverySource = fcol < 0
	}
	s.relations[r.id] = r
	return nil
}

func (s *streamer) rel(id uint32) (*relation, error) {
	r, ok := s.relations[id]
	if !ok {
		return nil, &fatalError{fmt.Sprintf("change for unknown relation %d", id)}
	}
	return r, nil
}

func (s *streamer) toChange(m pglogrepl.Message) (*change, error) {
	switch m := m.(type) {
	case *pglogrepl.InsertMessageV2:
		r, err := s.rel(m.RelationID)
		if err != nil {
			return nil, err
		}
		return &change{kind: opInsert, rel: r, newRow: tupleValues(m.Tuple)}, nil
	case *pglogrepl.UpdateMessageV2:
		r, err := s.rel(m.RelationID)
		if err != nil {
			return nil, err
		}
		return &change{kind: opUpdate, rel: r, newRow: tupleValues(m.NewTuple), oldRow: tupleValues(m.OldTuple), oldIsKey: m.OldTupleType == pglogrepl.UpdateMessageTupleTypeKey}, nil
	case *pglogrepl.DeleteMessageV2:
		r, err := s.rel(m.RelationID)
		if err != nil {
			return nil, err
		}
		return &change{kind: opDelete, rel: r, oldRow: tupleValues(m.OldTuple), oldIsKey: m.OldTupleType == pglogrepl.DeleteMessageTupleTypeKey}, nil
	case *pglogrepl.TruncateMessageV2:
		c := &change{kind: opTruncate, cascade: m.Option&pglogrepl.TruncateOptionCascade != 0}
		for _, id := range m.RelationIDs {
			r, err := s.rel(id)
			if err != nil {
				return nil, err
			}
			if !r.ignore {
				c.truncated = append(c.truncated, r)
			}
		}
		if len(c.truncated) == 0 {
			return nil, nil
		}
		return c, nil
	}
	return nil, nil
}

// loadWatermarks reads the copy's units finished under a newer snapshot
// than the slot's (a resumed copy): changes to their rows at or below the
// watermark are already in the copy.
func (s *streamer) loadWatermarks(ctx context.Context) error {
	s.marks = map[string][]watermark{}
	a := s.appliers[0]
	var exists bool
	if err := a.conn.QueryRow(ctx, `SELECT to_regclass('reshard.copy_units') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return err
	}
	copySlot := s.req.Slot
	rows, err := a.conn.Query(ctx, `SELECT table_schema, table_name, lo, hi, watermark_lsn::text FROM reshard.copy_units
		WHERE slot = $1 AND source_shard = $2 AND done`, copySlot, s.sourceShard)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var schema, name, lsn string
		var w watermark
		if err := rows.Scan(&schema, &name, &w.lo, &w.hi, &lsn); err != nil {
			return err
		}
		if w.lsn, err = pglogrepl.ParseLSN(lsn); err != nil {
			return err
		}
		s.marks[schema+"."+name] = append(s.marks[schema+"."+name], w)
	}
	return rows.Err()
}

// coveredByCopy reports whether a change committed at lsn is already in
// the copied rows. A watermark is a snapshot's consistent point: the end of
// the WAL record that made the snapshot consistent. A transaction whose
// commit record starts there or later is not in the snapshot (the stream
// has it), only one whose commit record starts before.
func (s *streamer) coveredByCopy(c *change, lsn pglogrepl.LSN) bool {
	if c.rel == nil {
		return false // TRUNCATE: applies whatever the copy holds
	}
	marks := s.marks[c.rel.String()]
	if len(marks) == 0 {
		return false
	}
	if len(marks) == 1 || marks[0].lo == nil && marks[0].hi == nil {
		return lsn < marks[0].lsn
	}
	// Primary-key ranges: find the row's range by its key.
	row := c.newRow
	if row == nil {
		row = c.oldRow
	}
	if len(c.rel.key) != 1 || row == nil {
		return false
	}
	v := row[c.rel.key[0]]
	if v.null || v.toasted {
		return false
	}
	k, err := sharding.DecodeInt(sharding.FormatText, v.data)
	if err != nil {
		return false
	}
	for _, m := range marks {
		if (m.lo == nil || k >= *m.lo) && (m.hi == nil || k < *m.hi) {
			return lsn < m.lsn
		}
	}
	return false
}

// sendStatus confirms to the source what every shard has durably applied.
//
// The position the source last reported (a keepalive) is confirmed instead
// when it is further, every shard has handled every transaction up to
// upTo, and every shard's work is durable: nothing received is left to
// apply, so nothing before that position is.
func (s *streamer) sendStatus(ctx context.Context, conn *pgconn.PgConn, upTo pglogrepl.LSN) error {
	s.mu.Lock()
	lastProcessed, serverEnd := slices.Min(s.handled), s.serverEnd
	lastWork := append([]pglogrepl.LSN(nil), s.lastWork...)
	s.mu.Unlock()
	confirm := lastProcessed
	allClean := true
	for k, a := range s.appliers {
		qctx, cancel := s.answerWithin(ctx)
		flushed, err := a.flushed(qctx, s.monitors[k])
		cancel()
		if err != nil {
			return err
		}
		// A shard whose last work is durable has everything up to the last
		// transaction handled; otherwise only what it flushed.
		eff := lastProcessed
		if flushed < lastWork[k] {
			eff = flushed
			allClean = false
		}
		if eff < confirm {
			confirm = eff
		}
	}
	if lastProcessed >= upTo && allClean && serverEnd > confirm {
		confirm = serverEnd
	}
	s.status.Confirmed(confirm)
	return pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: confirm, WALFlushPosition: confirm, WALApplyPosition: confirm, ClientTime: time.Now()})
}

// op is one statement for one shard.
type op struct {
	sql  string
	args [][]byte
	// check: an UPDATE that must find its row (the sharding key could not
	// be read from the change, so a moved row would otherwise go unseen).
	mustHit *relation
	// row identifies the row an op touches ("" when unknown); update marks
	// an UPDATE that keeps its key, writes a full row image and locates the
	// row by key alone: a later such UPDATE of the same row in the same
	// destination transaction makes it redundant.
	row    string
	update bool
	// What merging needs: the table, the kind of statement, and for an
	// UPDATE the columns set and the key columns.
	rel     *relation
	kind    changeKind
	setCols []int
	keyCols []int
}

// coalesce drops UPDATEs that a later UPDATE of the same row (same key,
// same columns) in the same destination transaction overwrites: only the
// final row is ever visible, and hot rows updated thousands of times in one
// batch would otherwise grow long version chains.
func coalesce(ops []op) []op {
	last := map[string]int{}
	drop := make([]bool, len(ops))
	dropped := 0
	for i, o := range ops {
		if o.row == "" {
			continue
		}
		if j, ok := last[o.row]; ok && o.update && ops[j].update && ops[j].sql == o.sql && ops[j].mustHit == nil {
			drop[j] = true
			dropped++
		}
		last[o.row] = i
	}
	if dropped == 0 {
		return ops
	}
	out := make([]op, 0, len(ops)-dropped)
	for i, o := range ops {
		if !drop[i] {
			out = append(out, o)
		}
	}
	return out
}

// rowID is the identity of a row for coalescing: relation and key values.
func rowID(r *relation, keyVals [][]byte) string {
	n := 12
	for _, v := range keyVals {
		n += len(v) + 2
	}
	b := make([]byte, 0, n)
	b = strconv.AppendUint(b, uint64(r.id), 10)
	for _, v := range keyVals {
		b = append(b, 0)
		if v == nil {
			b = append(b, 1)
		}
		b = append(b, v...)
	}
	return string(b)
}

// applyBatch routes committed transactions to the shard workers: each
// run of transactions becomes one destination transaction per shard. A
// transaction that moves a row between shards is applied on its own, once
// the workers are idle (rows move atomically per shard, in source order).
func (s *streamer) applyBatch(ctx context.Context, w *shardWorkers, txns []*txn) error {
	var run []*txn
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		ops, changes, lsn, err := s.routeRun(run)
		run = nil
		if err != nil {
			return err
		}
		for k := range ops {
			if err := w.submit(ctx, k, shardWork{ops: ops[k], changes: changes[k], lsn: lsn}); err != nil {
				return err
			}
		}
		return nil
	}
	defer releaseSpools(s.spoolBudget, txns)
	for _, t := range txns {
		if t.spool == nil && !s.movesRows(t) {
			run = append(run, t)
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if t.spool != nil {
			if err := s.applyStreamed(ctx, w, t); err != nil {
				return err
			}
			continue
		}
		if err := w.wait(ctx); err != nil {
			return err
		}
		if err := s.applySerial(ctx, t, nil); err != nil {
			return err
		}
	}
	return flush()
}

// applyStreamed applies a transaction the source streamed while in
// progress, which may be larger than memory: its changes are read back in
// parts of BatchChanges, each part applied on the shards inside one open
// destination transaction per shard, and those are committed together once
// the last part is in.
func (s *streamer) applyStreamed(ctx context.Context, w *shardWorkers, t *txn) error {
	open := newOpenShards()
	err := t.spool.changes(s.req.BatchChanges, func(batch []*change) error {
		part := &txn{xid: t.xid, commitLSN: t.commitLSN, changes: batch}
		if s.movesRows(part) {
			if err := w.wait(ctx); err != nil {
				return err
			}
			return s.applySerial(ctx, part, open)
		}
		ops, changes, lsn, err := s.routeRun([]*txn{part})
		if err != nil {
			return err
		}
		for k := range ops {
			if len(ops[k]) == 0 {
				continue
			}
			open.touched[k] = true
			if err := w.submit(ctx, k, shardWork{ops: ops[k], changes: changes[k], lsn: lsn, keepOpen: true}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := w.wait(ctx); err != nil {
		return err
	}
	return s.commitOpen(ctx, open, t.commitLSN)
}

// releaseSpools frees what streamed transactions hold (memory, files).
func releaseSpools(b *spoolBudget, txns []*txn) {
	for _, t := range txns {
		if t.spool != nil {
			t.spool.release(b)
		}
	}
}

// movesRows tells whether a transaction has an UPDATE whose sharding key
// changes shard (known from the old tuple).
func (s *streamer) movesRows(t *txn) bool {
	for _, c := range t.changes {
		if c.kind != opUpdate || c.oldRow == nil || c.rel.shardCol < 0 {
			continue
		}
		if !s.keyInOld(c) {
			continue
		}
		so, err1 := c.rel.shardOf(c.oldRow)
		sn, err2 := c.rel.shardOf(newRowOf(c))
		if err1 == nil && err2 == nil && so != sn {
			return true
		}
	}
	return false
}

// keyInOld tells whether the old tuple carries the sharding column.
func (s *streamer) keyInOld(c *change) bool {
	if !c.oldIsKey {
		return true // REPLICA IDENTITY FULL: the whole old row
	}
	for _, k := range c.rel.key {
		if k == c.rel.shardCol {
			return true
		}
	}
	return false
}

// newRowOf returns the change's new row, with unchanged TOASTed values
// filled from the old row when the change carries the whole old row
// (REPLICA IDENTITY FULL). A key-only old tuple has NULLs for non-key
// columns: it fills nothing.
func newRowOf(c *change) []value {
	if c.oldIsKey {
		return c.newRow
	}
	return mergeRow(c.newRow, c.oldRow)
}

// mergeRow fills a new row's unchanged TOASTed values from the old row.
func mergeRow(newRow, oldRow []value) []value {
	out, copied := newRow, false
	for i, v := range newRow {
		if v.toasted && i < len(oldRow) && !oldRow[i].toasted {
			if !copied {
				out, copied = append([]value(nil), newRow...), true
			}
			out[i] = oldRow[i]
		}
	}
	return out
}

// route turns a change into statements per shard, handing each to emit
// with its shard (the change stays on one shard, or goes to every shard for
// omni tables, broadcast deletes and truncates), in shard order.
func (s *streamer) route(c *change, emit func(shard int, o op)) error {
	n := len(s.appliers)
	every := func(o op) {
		for k := 0; k < n; k++ {
			emit(k, o)
		}
	}
	// With several source shards, omni tables are the same on each: their
	// changes are taken from source shard 0 only, as their copy was.
	several := s.sourceShards > 1
	if c.rel != nil && c.rel.sameOnEverySource && several && s.sourceShard != 0 {
		return nil
	}
	switch c.kind {
	case opTruncate:
		names := make([]string, 0, len(c.truncated))
		for _, r := range c.truncated {
			if r.sameOnEverySource && several && s.sourceShard != 0 {
				continue
			}
			if !r.sameOnEverySource && several {
				return &fatalError{fmt.Sprintf("TRUNCATE of %s on source shard %d: the destination shards also hold the other source shards' rows of it, so it cannot be applied as is; stop writes to it, or delete the rows instead of truncating", r, s.sourceShard)}
			}
			names = append(names, r.qualified)
		}
		if len(names) == 0 {
			return nil
		}
		sql := "TRUNCATE " + strings.Join(names, ", ")
		if c.cascade {
			sql += " CASCADE"
		}
		every(op{sql: sql})
		return nil
	case opInsert:
		args := make([][]byte, 0, len(c.newRow))
		for _, v := range c.newRow {
			if v.null {
				args = append(args, nil)
			} else {
				args = append(args, v.data)
			}
		}
		ncols := len(c.newRow)
		sql := c.rel.cached([]byte{'i', byte(ncols), byte(ncols >> 8)}, func() string {
			cols := make([]int, ncols)
			for i := range cols {
				cols[i] = i
			}
			return insertSQL(c.rel, cols)
		})
		o := op{sql: sql, args: args, rel: c.rel, kind: opInsert}
		if keyCols, keyVals, err := keyOf(c.rel, c); err == nil && len(keyCols) == len(c.rel.key) {
			o.row = rowID(c.rel, keyVals)
		}
		sh, err := c.rel.shardOf(c.newRow)
		if err != nil {
			return s.routeErr(c, err)
		}
		if sh == sharding.AllShards {
			every(o)
		} else {
			emit(sh, o)
		}
		return nil
	case opUpdate:
		keyCols, keyVals, err := keyOf(c.rel, c)
		if err != nil {
			return &fatalError{err.Error()}
		}
		// The statement's shape: which columns are set, which identify.
		shape := make([]byte, 0, 2+len(c.newRow)+len(keyCols))
		shape = append(shape, 'u')
		args := make([][]byte, 0, len(c.newRow)+len(keyVals))
		for _, v := range c.newRow {
			if v.toasted {
				shape = append(shape, 0)
				continue
			}
			shape = append(shape, 1)
			if v.null {
				args = append(args, nil)
			} else {
				args = append(args, v.data)
			}
		}
		shape = append(shape, '|')
		for _, k := range keyCols {
			shape = append(shape, byte(k), byte(k>>8))
		}
		nset := len(args)
		sql := c.rel.cached(shape, func() string {
			var set []string
			for i, v := range c.newRow {
				if !v.toasted {
					set = append(set, fmt.Sprintf("%s = $%d", quoteIdent(c.rel.columns[i]), len(set)+1))
				}
			}
			return fmt.Sprintf("UPDATE %s SET %s WHERE %s", c.rel.qualified, strings.Join(set, ", "), whereKey(c.rel, keyCols, nset+1))
		})
		o := op{sql: sql, args: append(args, keyVals...), row: rowID(c.rel, keyVals), rel: c.rel, kind: opUpdate, keyCols: keyCols}
		for i, v := range c.newRow {
			if !v.toasted {
				o.setCols = append(o.setCols, i)
			}
		}
		// Coalescible: the key is unchanged (no old tuple) and the row is
		// found by key, not by its whole old image.
		o.update = c.oldRow == nil && c.rel.identity != 'f'
		sh, err := c.rel.shardOf(newRowOf(c))
		if err != nil {
			return s.routeErr(c, err)
		}
		if sh == sharding.AllShards {
			every(o)
			return nil
		}
		if c.rel.shardCol >= 0 && !c.rel.identifiesShard() {
			// A change of the sharding column would not show in the
			// change: the row must be where the new row routes.
			o.mustHit = c.rel
		}
		emit(sh, o)
		return nil
	case opDelete:
		keyCols, keyVals, err := keyOf(c.rel, c)
		if err != nil {
			return &fatalError{err.Error()}
		}
		shape := []byte{'d'}
		for _, k := range keyCols {
			shape = append(shape, byte(k), byte(k>>8))
		}
		o := op{sql: c.rel.cached(shape, func() string {
			return fmt.Sprintf("DELETE FROM %s WHERE %s", c.rel.qualified, whereKey(c.rel, keyCols, 1))
		}), args: keyVals, row: rowID(c.rel, keyVals), rel: c.rel, kind: opDelete, keyCols: keyCols}
		if c.rel.shardCol >= 0 && s.keyInOld(c) {
			sh, err := c.rel.shardOf(c.oldRow)
			if err == nil && sh != sharding.AllShards {
				emit(sh, o)
				return nil
			}
		}
		every(o) // the shard cannot be told from the key: only one has it
		return nil
	}
	return nil
}

func (s *streamer) routeErr(c *change, err error) error {
	return &fatalError{fmt.Sprintf("cannot route a change of %s: %v", c.rel, err)}
}

// routeRun turns transactions into each shard's statements, coalesced and
// merged, with the number of row changes they hold per shard, and the
// commit LSN of the last transaction (the shards' origin position once
// applied).
func (s *streamer) routeRun(txns []*txn) ([][]op, []int, pglogrepl.LSN, error) {
	n := len(s.appliers)
	ops := make([][]op, n)
	total := 0
	for _, t := range txns {
		total += len(t.changes)
	}
	for k := range ops {
		ops[k] = make([]op, 0, total/n+16)
	}
	var lastLSN pglogrepl.LSN
	for _, t := range txns {
		lastLSN = t.commitLSN
		emit := func(k int, o op) {
			if t.commitLSN > s.appliers[k].applied { // else this shard has it (origin)
				ops[k] = append(ops[k], o)
			}
		}
		for _, c := range t.changes {
			if s.coveredByCopy(c, t.commitLSN) {
				continue
			}
			if err := s.route(c, emit); err != nil {
				return nil, nil, 0, err
			}
		}
	}
	changes := make([]int, n) // row changes per shard, for metrics
	for k := range ops {
		changes[k] = len(ops[k])
		ops[k] = merge(coalesce(ops[k]))
	}
	return ops, changes, lastLSN, nil
}

// pipelineSize bounds how many statements go to a shard in one pipeline.
const pipelineSize = 2000

// applyOps applies one shard's part of a batch in one transaction, and
// commits it unless told not to. The statements are pipelined (sent without
// waiting for each answer), so a shard costs a round trip per pipeline, not
// per row.
func (s *streamer) applyOps(ctx context.Context, a *applier, ops []op, lsn pglogrepl.LSN, commit bool) error {
	bctx, cancel := s.answerWithin(ctx)
	err := a.begin(bctx)
	cancel()
	if err != nil {
		return err
	}
	fail := func(err error) error {
		a.rollback()
		return err
	}
	for lo := 0; lo < len(ops); lo += pipelineSize {
		hi := lo + pipelineSize
		if hi > len(ops) {
			hi = len(ops)
		}
		batch := &pgconn.Batch{}
		pctx, cancel := s.answerWithin(ctx)
		for _, o := range ops[lo:hi] {
			name, err := a.prepared(pctx, o.sql)
			if err != nil {
				cancel()
				return fail(err)
			}
			batch.ExecPrepared(name, o.args, nil, nil)
		}
		results, err := a.conn.PgConn().ExecBatch(pctx, batch).ReadAll()
		cancel()
		if err != nil {
			if isConnErr(err) {
				return fail(err)
			}
			// Find the statement that failed, for the message.
			failed := ops[lo]
			if n := len(results); n > 0 && lo+n-1 < hi {
				failed = ops[lo+n-1]
			}
			return fail(&fatalError{fmt.Sprintf("destination shard %d: %s: %v", a.shard, failed.sql, err)})
		}
		for i, r := range results {
			o := ops[lo+i]
			if o.mustHit != nil && r.CommandTag.RowsAffected() == 0 {
				return fail(&fatalError{fmt.Sprintf("an UPDATE of %s found no row on destination shard %d: the row moved to another shard (its sharding key changed), which the change cannot show because %s is not in the table's replica identity; on the source run ALTER TABLE %s REPLICA IDENTITY FULL, then restart the stream",
					o.mustHit, a.shard, o.mustHit.columns[o.mustHit.shardCol], o.mustHit.qualified)})
			}
		}
	}
	if !commit {
		return nil
	}
	cctx, cancel := s.answerWithin(ctx)
	defer cancel()
	return a.commit(cctx, lsn, time.Now())
}

// applySerial applies one transaction that moves rows between shards: in
// source order, with a transaction open on every shard it touches; a moved
// row is deleted on its old shard (returning it, to fill values the change
// left out) and inserted on its new one. Shards that receive rows commit
// first, so a crash in between can only leave a delete to replay.
//
// With open set, the shards' transactions are left open (recorded in open)
// for the caller to commit with commitOpen: t is then one part of a larger
// source transaction.
func (s *streamer) applySerial(ctx context.Context, t *txn, open *openShards) error {
	commit := open == nil
	if commit {
		open = newOpenShards()
	}
	touched, receivers := open.touched, open.receivers
	// One source transaction: its exchanges are bounded together.
	ctx, cancel := s.answerWithin(ctx)
	defer cancel()
	changes := make([]int, len(s.appliers)) // row changes per shard, for metrics
	fail := func(err error) error {
		for _, a := range s.appliers {
			a.rollback()
		}
		return err
	}
	exec := func(k int, o op) (int64, error) {
		a := s.appliers[k]
		if t.commitLSN <= a.applied {
			return 1, nil
		}
		if err := a.begin(ctx); err != nil {
			return 0, err
		}
		touched[k] = true
		changes[k]++
		return a.exec(ctx, o.sql, o.args)
	}
	for _, c := range t.changes {
		if s.coveredByCopy(c, t.commitLSN) {
			continue
		}
		if c.kind == opUpdate && c.oldRow != nil && c.rel.shardCol >= 0 && s.keyInOld(c) {
			so, err1 := c.rel.shardOf(c.oldRow)
			newRow := newRowOf(c)
			sn, err2 := c.rel.shardOf(newRow)
			if err1 == nil && err2 == nil && so != sn && so != sharding.AllShards {
				keyCols, keyVals, err := keyOf(c.rel, c)
				if err != nil {
					return fail(&fatalError{err.Error()})
				}
				// Delete on the old shard, returning the row.
				a := s.appliers[so]
				full := newRow
				if t.commitLSN > a.applied {
					if err := a.begin(ctx); err != nil {
						return fail(err)
					}
					touched[so] = true
					changes[so]++
					cols := make([]string, len(c.rel.columns))
					for i, n := range c.rel.columns {
						cols[i] = quoteIdent(n) + "::text"
					}
					old, found, err := a.query(ctx, fmt.Sprintf("DELETE FROM %s WHERE %s RETURNING %s", c.rel.qualified, whereKey(c.rel, keyCols, 1), strings.Join(cols, ", ")), keyVals)
					if err != nil {
						return fail(err)
					}
					if found {
						full = append([]value(nil), newRow...)
						for i, v := range full {
							if v.toasted && i < len(old) {
								full[i] = value{data: old[i], null: old[i] == nil}
							}
						}
					}
				}
				for _, v := range full {
					if v.toasted {
						return fail(&fatalError{fmt.Sprintf("%s: a row moved between shards, but an unchanged TOASTed value could not be read from its old shard", c.rel)})
					}
				}
				var ins []routed
				if err := s.route(&change{kind: opInsert, rel: c.rel, newRow: full}, func(k int, o op) { ins = append(ins, routed{k, o}) }); err != nil {
					return fail(err)
				}
				for _, r := range ins {
					receivers[r.shard] = true
					if _, err := exec(r.shard, r.op); err != nil {
						return fail(err)
					}
				}
				continue
			}
		}
		var ops []routed
		if err := s.route(c, func(k int, o op) { ops = append(ops, routed{k, o}) }); err != nil {
			return fail(err)
		}
		for _, r := range ops {
			affected, err := exec(r.shard, r.op)
			if err != nil {
				return fail(err)
			}
			if r.op.mustHit != nil && affected == 0 {
				return fail(&fatalError{fmt.Sprintf("an UPDATE of %s found no row on destination shard %d (its sharding key changed but is not in the replica identity): ALTER TABLE %s REPLICA IDENTITY FULL on the source", r.op.mustHit, r.shard, r.op.mustHit.qualified)})
			}
		}
	}
	statements := 0
	for _, n := range changes {
		statements += n // one statement per row change here
	}
	if !commit {
		s.status.Applied(int64(statements)) // committed with the rest
		s.status.AppliedChanges(changes)
		return nil
	}
	if err := s.commitOpen(ctx, open, t.commitLSN); err != nil {
		return err
	}
	s.status.Applied(int64(statements))
	s.status.AppliedChanges(changes)
	return nil
}

// openShards are the shards with an open destination transaction for one
// source transaction, and those of them that received moved rows.
type openShards struct {
	touched, receivers map[int]bool
}

func newOpenShards() *openShards {
	return &openShards{touched: map[int]bool{}, receivers: map[int]bool{}}
}

// commitOpen commits the open destination transactions of one source
// transaction with its commit LSN as their origin position. Shards that
// received moved rows commit first, so a crash in between can only leave a
// delete to replay. The shard workers must be idle.
func (s *streamer) commitOpen(ctx context.Context, open *openShards, lsn pglogrepl.LSN) error {
	order := make([]int, 0, len(open.touched))
	for k := range open.touched {
		if open.receivers[k] {
			order = append(order, k)
		}
	}
	for k := range open.touched {
		if !open.receivers[k] {
			order = append(order, k)
		}
	}
	ctx, cancel := s.answerWithin(ctx)
	defer cancel()
	for _, k := range order {
		if err := s.appliers[k].commit(ctx, lsn, time.Now()); err != nil {
			for _, a := range s.appliers {
				a.rollback()
			}
			return err
		}
		s.mu.Lock()
		s.lastWork[k] = lsn
		s.mu.Unlock()
	}
	s.mu.Lock()
	for k := range s.handled {
		s.handled[k] = lsn
	}
	s.mu.Unlock()
	return nil
}

// routed is a statement with its shard.
type routed struct {
	shard int
	op    op
}

// refreshLag reads the slot's lag from the source every second:
// pg_current_wal_lsn() - confirmed_flush_lsn, and the WAL it retains:
// pg_current_wal_lsn() - restart_lsn.
func (s *streamer) refreshLag(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if conn == nil {
			c, err := pgx.Connect(ctx, mustDSN(s.req.Catalog, s.node))
			if err == nil {
				conn = c
			}
		}
		if conn != nil {
			var lag, retained *int64
			err := conn.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, (pg_current_wal_lsn() - restart_lsn)::bigint
FROM pg_replication_slots WHERE slot_name = $1`, s.slot).Scan(&lag, &retained)
			if err == nil && lag != nil {
				s.status.Lag(*lag)
			}
			if err == nil && retained != nil {
				s.status.Retained(*retained)
			}
			if err != nil {
				conn.Close(context.Background())
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
