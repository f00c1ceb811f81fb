package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/ddl"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/progress"
)

// ddlStage applies the statements the source's event triggers captured
// ([general] resharding_ddl = "replicate"): a captured statement is a row
// of reshard.ddl inside the source transaction that ran it, so the stage
// applies that transaction alone, in order: the changes before the
// statement, the statement on every destination shard (with schema sync's
// rules: ddl.Plan), then the changes after it, in one destination
// transaction per shard whose replication origin moves to the source
// commit with them (exactly once, as every change). A transaction larger
// than a batch (spooled: streamed by the source while in progress, or sent
// whole at its commit) is read back in parts, its statements at their
// place among them, so that it holds no more memory than any other. A
// statement that
// cannot run in a transaction block (CONCURRENTLY) runs alone on each
// shard, with a record of its own (reshard.ddl_applied, state started)
// and a check of its effect, so a crash in the middle neither repeats nor
// loses it.
//
// With resharding_ddl = "replicate" tables are shaped lazily: a Relation
// message may describe a table as a statement not yet applied on the
// shards will make it, so the stage (for every batch) prepares each
// relation just before its first change is routed, on a connection that
// sees the statements applied before it.
type ddlStage struct {
	appliers []*applier
	router   *router
	pos      *positions
	// shape prepares relations; shapeConn is this stage's own connection
	// to destination shard 0, for relations outside DDL transactions.
	shape     shaper
	shapeConn *pgx.Conn
	// srcDSN reaches the source shard (its current catalog: the values of
	// a column added with a stable default); src is opened when needed.
	srcDSN string
	src    *pgx.Conn
	// sourceMajor is the source server's major version: its captured
	// queries are parsed with the words newer servers made keywords
	// quoted (ddl.Captured.SourceMajor).
	sourceMajor int
	rules       ddl.Rules
	// slot, sourceShard and sourceShards say which stream this is;
	// barrier lines up the source shards' streams at each statement.
	slot                      string
	sourceShard, sourceShards int
	barrier                   *ddlBarrier
	reg                       *progress.Registry
	task                      string
	log                       hclog.Logger
	timeout                   time.Duration
	// ordinals caches the statements' ordinals by id; next is the next
	// ordinal to hand out (0: not read yet).
	ordinals map[int64]int
	next     int
	// job and copySlot are the migration and its copy, for tables copied
	// again (pending, until the statement's transaction commits); reverse
	// marks reverse replication, which copies nothing.
	job      *job.Job
	copySlot string
	pending  [][2]string
	reverse  bool
	// decided are source shard 0's statements of the transaction being
	// committed, announced to the other streams once it is.
	decided []decision
}

// appliedDDL records, on every destination shard, the captured statements
// applied there: with the origin advance for statements run in a
// transaction, and before and after for those that run outside one.
const appliedDDL = `
CREATE SCHEMA IF NOT EXISTS reshard;
CREATE TABLE IF NOT EXISTS reshard.ddl_applied (
	origin text NOT NULL,
	ddl_id bigint NOT NULL,
	ordinal int NOT NULL,
	commit_lsn pg_lsn NOT NULL,
	state text NOT NULL,
	command_tag text NOT NULL,
	statement text NOT NULL,
	applied_sql text NOT NULL DEFAULT '',
	captured_at timestamptz,
	applied_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (origin, ddl_id)
)`

// startDDLStage prepares the stage of a session: the record table on
// every destination shard (through the appliers, before they apply
// anything), the stage's own connection to shard 0, and SHOW DDL's history
// of this stream.
func startDDLStage(ctx context.Context, cfg sessionConfig, sourceMajor int, appliers []*applier, rt *router, pos *positions) (*ddlStage, error) {
	s := &ddlStage{appliers: appliers, router: rt, pos: pos, sourceMajor: sourceMajor, shape: shaper{dst: cfg.dst, sourceRules: cfg.sourceRules},
		srcDSN: cfg.sourceDSN, rules: ddl.Rules{Destination: cfg.dst, Publication: cfg.publication, Widen: cfg.sourceRules == nil},
		slot: cfg.slot, sourceShard: cfg.sourceShard, sourceShards: cfg.sourceShards, barrier: cfg.ddl,
		reg: cfg.job.Registry, task: cfg.job.Task, log: cfg.log.Named("ddl"), timeout: cfg.timeout(),
		job: cfg.job, copySlot: cfg.copySlot, reverse: cfg.sourceRules != nil}
	for k, a := range appliers {
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			// Several streams may create it at once: one wins.
			if _, err = a.conn.Exec(ctx, appliedDDL); err == nil {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("destination shard %d: create reshard.ddl_applied: %w", k, err)
		}
	}
	conn, err := pgx.Connect(ctx, cfg.dstDSN[0])
	if err != nil {
		return nil, fmt.Errorf("connect to destination shard 0: %w", err)
	}
	s.shapeConn = conn
	s.shape.conn = conn
	s.loadHistory(ctx)
	return s, nil
}

func (s *ddlStage) close() {
	if s.shapeConn != nil {
		s.shapeConn.Close(context.Background())
	}
	if s.src != nil {
		s.src.Close(context.Background())
	}
}

// loadHistory lists this stream's applied statements in SHOW DDL (the
// last few hundred).
func (s *ddlStage) loadHistory(ctx context.Context) {
	rows, err := s.shapeConn.Query(ctx, `SELECT ddl_id, state, command_tag, statement, applied_sql, captured_at, applied_at
		FROM reshard.ddl_applied WHERE origin = $1 ORDER BY ddl_id DESC LIMIT 200`, OriginName(s.slot, 0))
	if err != nil {
		return
	}
	defer rows.Close()
	all := make([]int, len(s.appliers))
	for k := range all {
		all[k] = k
	}
	for rows.Next() {
		var id int64
		var state, tag, stmt, sql string
		var captured *time.Time
		var applied time.Time
		if rows.Scan(&id, &state, &tag, &stmt, &sql, &captured, &applied) != nil {
			return
		}
		st := s.statement(id, tag, stmt)
		if captured != nil {
			st.CapturedAt = *captured
		}
		s.reg.SetDDL(st, state, all, len(s.appliers), sql, "", nil)
	}
}

func (s *ddlStage) statement(id int64, tag, stmt string) progress.DDLStatement {
	return progress.DDLStatement{Task: s.task, Slot: s.slot, SourceShard: s.sourceShard, ID: id, Tag: tag, Statement: stmt}
}

// isDDL tells whether a change is a captured statement.
func isDDL(c *change) bool { return c.rel != nil && c.rel.ddl }

// hasDDL tells whether a transaction holds a captured statement.
func hasDDL(t *txn) bool {
	if t.spool != nil {
		return len(t.spool.stmts) > 0
	}
	for _, c := range t.changes {
		if isDDL(c) {
			return true
		}
	}
	return false
}

// statementsOf lists a transaction's captured statements in order, each
// with the table it creates with rows written before it.
func statementsOf(t *txn) []spooledStatement {
	if t.spool != nil {
		return t.spool.stmts
	}
	var out []spooledStatement
	for _, c := range t.changes {
		if isDDL(c) {
			out = append(out, spooledStatement{change: c, creates: createdByRows(c)})
		}
	}
	return out
}

// txnSize is the number of changes of a transaction (of a spooled one,
// those of rolled-back subtransactions that went to disk included).
func txnSize(t *txn) int64 {
	if t.spool != nil {
		return t.spool.count()
	}
	return int64(len(t.changes))
}

// unshaped tells whether a relation of a change still needs shaping.
func unshaped(r *relation) bool { return r != nil && !r.ignore && !r.ddl && r.plan == nil }

// anyUnshaped tells whether a relation of the changes still needs shaping.
func anyUnshaped(changes []*change) bool {
	for _, c := range changes {
		if unshaped(c.rel) {
			return true
		}
		for _, r := range c.truncated {
			if unshaped(r) {
				return true
			}
		}
	}
	return false
}

// prepareChanges shapes the relations of changes not shaped yet, reading
// the destination through conn.
func (s *ddlStage) prepareChanges(ctx context.Context, changes []*change, conn *pgx.Conn) error {
	sh := s.shape
	sh.conn = conn
	prep := func(r *relation) error {
		if !unshaped(r) {
			return nil
		}
		pctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		return sh.prepare(pctx, r)
	}
	for _, c := range changes {
		if err := prep(c.rel); err != nil {
			return err
		}
		for _, r := range c.truncated {
			if err := prep(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// needing lists the destination shards that do not have a transaction
// committed at lsn yet.
func (s *ddlStage) needing(lsn pglogrepl.LSN) []int {
	var out []int
	for k, a := range s.appliers {
		if lsn > a.applied {
			out = append(out, k)
		}
	}
	return out
}

// decodeCaptured reads a captured statement from its change, ran by a
// source of major version sourceMajor.
func decodeCaptured(c *change, sourceMajor int) (*ddl.Captured, error) {
	byName := map[string]int{}
	for i, n := range c.rel.columns {
		byName[n] = i
	}
	cap, err := ddl.Decode(func(col string) (string, bool) {
		i, ok := byName[col]
		if !ok || i >= len(c.newRow) || c.newRow[i].null || c.newRow[i].toasted {
			return "", true
		}
		return string(c.newRow[i].data), false
	})
	if err != nil {
		return nil, err
	}
	cap.SourceMajor = sourceMajor
	return cap, nil
}

// createdByRows names the table (schema.name) a CREATE TABLE AS or SELECT
// INTO statement created, "" for other statements.
func createdByRows(c *change) string {
	cap, err := decodeCaptured(c, 0)
	if err != nil || (cap.Tag != "CREATE TABLE AS" && cap.Tag != "SELECT INTO") {
		return ""
	}
	for _, o := range cap.Objects {
		if o.Type == "table" && o.Identity != "" {
			parts := ddl.SplitIdentity(o.Identity)
			if len(parts) == 2 {
				return parts[0] + "." + parts[1]
			}
		}
	}
	return ""
}

// statementTxn is a source transaction with captured statements being
// applied, its changes handed on in order (all at once, or read back from
// its spool in parts): the changes before each statement, the statement,
// the changes after it. The rows a CREATE TABLE AS (or SELECT INTO) wrote
// come before its statement (the event fires at the end of the command):
// they are held back (heldRows) and applied just after it.
type statementTxn struct {
	s *ddlStage
	t *txn
	// sawDDL: a statement of it ran (relations of the changes after it
	// are then read inside the shards' open transactions).
	sawDDL bool
	// stmts are its statements, next the one its changes reach next;
	// held the rows of the table stmts[next] creates, written before it.
	stmts []spooledStatement
	next  int
	held  *spool
}

func (s *ddlStage) begin(t *txn) *statementTxn {
	return &statementTxn{s: s, t: t, stmts: statementsOf(t)}
}

// apply applies a source transaction alone with its statements (or, for a
// spooled one, any spooled transaction): its changes handed to the shard
// workers inside one open destination transaction per shard, in parts cut
// at its statements (and for a spooled one, read back in parts), each
// statement run on the shards between two parts (the workers idle), and
// every shard committing at the transaction's commit LSN.
func (s *ddlStage) apply(ctx context.Context, d *dispatcher, t *txn) error {
	sc := s.begin(t)
	defer sc.release(d.budget)
	if len(s.needing(t.commitLSN)) == 0 {
		// Every shard has it (a restart after it committed everywhere).
		for _, st := range sc.stmts {
			if err := s.skipApplied(ctx, st.change); err != nil {
				return err
			}
		}
		return d.commitAll(ctx, t.commitLSN)
	}
	if s.sourceShards > 1 && s.sourceShard != 0 && len(sc.stmts) > 0 {
		if err := d.workers.wait(ctx); err != nil {
			return err
		}
		if err := s.matchFirst(ctx, t, sc.stmts); err != nil {
			return err
		}
	}
	seq := 0
	err := sc.applyAll(ctx, d, &seq)
	if err == nil {
		err = d.commitAll(ctx, t.commitLSN)
	}
	if err != nil {
		s.pending, s.decided = nil, nil
		return err
	}
	return sc.settle(ctx, d)
}

// applyAll applies every change of the transaction: from memory, or read
// back from its spool in parts of d.partChanges.
func (sc *statementTxn) applyAll(ctx context.Context, d *dispatcher, seq *int) error {
	if sc.t.spool == nil {
		if err := sc.applyChanges(ctx, d, sc.t.changes, seq); err != nil {
			return err
		}
	} else if err := sc.t.spool.changes(d.partChanges, func(part []*change) error {
		return sc.applyChanges(ctx, d, part, seq)
	}); err != nil {
		return err
	}
	// (Rows held for a statement that never came: none, but in order.)
	return sc.applyHeld(ctx, d, seq)
}

// applyChanges applies changes of the transaction (all of it, or a part
// of a spooled one) with their statements; seq numbers the changes.
func (sc *statementTxn) applyChanges(ctx context.Context, d *dispatcher, changes []*change, seq *int) error {
	var run []*change
	for _, c := range changes {
		switch {
		case isDDL(c):
			if err := sc.applyRows(ctx, d, run, seq); err != nil {
				return err
			}
			run = nil
			if err := sc.applyStatement(ctx, d, c, seq); err != nil {
				return err
			}
		case sc.holds(c):
			if sc.held == nil {
				sc.held = &spool{xid: sc.t.xid, quiet: true}
			}
			if err := sc.held.add(d.budget, c, rowBytes(c)); err != nil {
				return err
			}
		default:
			run = append(run, c)
		}
	}
	return sc.applyRows(ctx, d, run, seq)
}

// holds tells whether a row change is one the next statement's CREATE
// TABLE AS wrote: it is applied after the statement.
func (sc *statementTxn) holds(c *change) bool {
	if sc.next >= len(sc.stmts) || sc.stmts[sc.next].creates == "" || c.rel == nil {
		return false
	}
	return c.rel.String() == sc.stmts[sc.next].creates
}

// rowBytes is about the message a change was decoded from: its values.
func rowBytes(c *change) int64 {
	n := int64(0)
	for _, row := range [][]value{c.oldRow, c.newRow} {
		for _, v := range row {
			n += int64(len(v.data)) + 5
		}
	}
	return n
}

// applyRows routes a run of row changes and hands them to the shard
// workers, shaping their relations first: after a statement of the
// transaction, those not shaped yet through a shard's open transaction
// (the workers idle).
func (sc *statementTxn) applyRows(ctx context.Context, d *dispatcher, changes []*change, seq *int) error {
	if len(changes) == 0 {
		return nil
	}
	s, t := sc.s, sc.t
	conn := s.shapeConn
	if sc.sawDDL && anyUnshaped(changes) {
		if err := d.workers.wait(ctx); err != nil {
			return err
		}
		conn = s.shapingConn(ctx, t)
	}
	if err := s.prepareChanges(ctx, changes, conn); err != nil {
		return err
	}
	part := &txn{xid: t.xid, commitLSN: t.commitLSN, commitTime: t.commitTime, changes: changes, seqBase: *seq}
	*seq += len(changes)
	r, err := d.router.routeRun([]*txn{part})
	if err != nil {
		return err
	}
	return d.submit(ctx, r, false)
}

// applyStatement runs a statement of the transaction on the shards once
// the workers are idle, then the rows held back for it.
func (sc *statementTxn) applyStatement(ctx context.Context, d *dispatcher, c *change, seq *int) error {
	if err := d.workers.wait(ctx); err != nil {
		return err
	}
	*seq++
	if err := sc.s.applyStatement(ctx, sc.t, c); err != nil {
		return err
	}
	sc.sawDDL = true
	sc.next++
	return sc.applyHeld(ctx, d, seq)
}

// applyHeld applies the rows held back for the statement just applied.
func (sc *statementTxn) applyHeld(ctx context.Context, d *dispatcher, seq *int) error {
	held := sc.held
	if held == nil {
		return nil
	}
	sc.held = nil
	defer held.release(d.budget)
	return held.changes(d.partChanges, func(part []*change) error {
		return sc.applyRows(ctx, d, part, seq)
	})
}

// release frees the rows held back, if any (after an error).
func (sc *statementTxn) release(b *spoolBudget) {
	if sc.held != nil {
		sc.held.release(b)
		sc.held = nil
	}
}

// settle ends a transaction with statements once its commits are
// submitted: they are waited for, the tables its statements marked are
// copied again, then the other source shards' streams learn that source
// shard 0's statements are applied.
func (sc *statementTxn) settle(ctx context.Context, d *dispatcher) error {
	s := sc.s
	if err := d.workers.wait(ctx); err != nil {
		s.pending, s.decided = nil, nil
		return err
	}
	if err := s.copyPending(ctx); err != nil {
		s.decided = nil
		return err
	}
	for _, dc := range s.decided {
		s.barrier.applied(dc.ordinal, dc.statement)
	}
	s.decided = nil
	return nil
}

// shapingConn is the connection relations are read through inside a
// transaction with statements, after one of them: the first shard that
// applies it, inside its open transaction (which sees the statements
// applied so far), or the stage's own connection when every shard has it.
// The shard workers must be idle.
func (s *ddlStage) shapingConn(ctx context.Context, t *txn) *pgx.Conn {
	for _, k := range s.needing(t.commitLSN) {
		bctx, cancel := context.WithTimeout(ctx, s.timeout)
		err := s.beginOn(bctx, k)
		cancel()
		if err != nil {
			return s.shapeConn // reported by the apply that follows
		}
		return s.appliers[k].conn
	}
	return s.shapeConn
}

// ordinal is a statement's place among its source shard's statements:
// the one recorded for it on destination shard 0, or the next one.
func (s *ddlStage) ordinal(ctx context.Context, id int64) (int, error) {
	if o, ok := s.ordinals[id]; ok {
		return o, nil
	}
	qctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var ord int
	err := s.shapeConn.QueryRow(qctx, `SELECT ordinal FROM reshard.ddl_applied WHERE origin = $1 AND ddl_id = $2`, OriginName(s.slot, 0), id).Scan(&ord)
	switch {
	case err == nil:
	case errors.Is(err, pgx.ErrNoRows):
		if s.next == 0 {
			if err := s.shapeConn.QueryRow(qctx, `SELECT coalesce(max(ordinal), 0) + 1 FROM reshard.ddl_applied WHERE origin = $1`, OriginName(s.slot, 0)).Scan(&s.next); err != nil {
				return 0, fmt.Errorf("destination shard 0: read reshard.ddl_applied: %w", err)
			}
		}
		ord = s.next
		s.next++
	default:
		return 0, fmt.Errorf("destination shard 0: read reshard.ddl_applied: %w", err)
	}
	if s.ordinals == nil {
		s.ordinals = map[int64]int{}
	}
	s.ordinals[id] = ord
	return ord, nil
}

// matchFirst is, for a source shard other than 0, the wait at every
// statement of a transaction before any of it is applied: source shard
// 0's statements must be applied first, and this stream must hold no open
// transaction meanwhile (the statements take locks its changes would
// hold).
func (s *ddlStage) matchFirst(ctx context.Context, t *txn, stmts []spooledStatement) error {
	for _, stmt := range stmts {
		cap, err := decodeCaptured(stmt.change, s.sourceMajor)
		if err != nil {
			return fmt.Errorf("captured statement at %s: %w", t.commitLSN, err)
		}
		st := s.describe(cap)
		ord, err := s.ordinal(ctx, cap.ID)
		if err != nil {
			return err
		}
		s.reg.SetDDL(st, progress.DDLWaiting, nil, len(s.appliers), "", "waiting for source shard 0 to apply it", nil)
		if err := s.barrier.match(ctx, s, ord, st.Statement); err != nil {
			s.reg.SetDDL(st, progress.DDLFailed, nil, len(s.appliers), "", "", err)
			return err
		}
	}
	// Source shard 0's statements may have copied tables again.
	return s.reloadMarks(ctx)
}

// describe is a captured statement as SHOW DDL lists it.
func (s *ddlStage) describe(cap *ddl.Captured) progress.DDLStatement {
	st := s.statement(cap.ID, cap.Tag, cap.Query)
	if stmt, _, err := cap.Statement(); err == nil {
		st.Statement = stmt.SQL
	}
	if ts, err := time.Parse("2006-01-02 15:04:05.999999-07", cap.CapturedAt); err == nil {
		st.CapturedAt = ts
	}
	return st
}

// skipApplied notes a statement every shard already has.
func (s *ddlStage) skipApplied(ctx context.Context, c *change) error {
	cap, err := decodeCaptured(c, s.sourceMajor)
	if err != nil {
		return err
	}
	s.reg.SetDDL(s.statement(cap.ID, cap.Tag, cap.Query), progress.DDLApplied, s.allShards(), len(s.appliers), "", "applied before a restart", nil)
	return nil
}

func (s *ddlStage) allShards() []int {
	out := make([]int, len(s.appliers))
	for k := range out {
		out[k] = k
	}
	return out
}

// source returns a connection to the source shard, opening it once.
func (s *ddlStage) source(ctx context.Context) *pgx.Conn {
	if s.src != nil && !s.src.IsClosed() {
		return s.src
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	conn, err := pgx.Connect(cctx, s.srcDSN)
	if err != nil {
		s.log.Warn("cannot read the source's catalog for a captured statement (planned from the shards alone)", "error", err)
		return nil
	}
	s.src = conn
	return conn
}

// applyStatement applies one captured statement on every shard that does
// not have its transaction yet, inside their open transactions (or alone,
// for a statement that cannot run in one).
func (s *ddlStage) applyStatement(ctx context.Context, t *txn, c *change) error {
	cap, err := decodeCaptured(c, s.sourceMajor)
	if err != nil {
		return fmt.Errorf("captured statement at %s: %w", t.commitLSN, err)
	}
	st := s.describe(cap)
	need := s.needing(t.commitLSN)
	shards := len(s.appliers)
	ord, err := s.ordinal(ctx, cap.ID)
	if err != nil {
		return err
	}
	if s.sourceShards > 1 && s.sourceShard != 0 {
		// Source shard 0's statement is the one applied (matchFirst
		// waited for it and checked this one is the same).
		for _, k := range need {
			if err := s.record(ctx, k, t, cap, ord, progress.DDLMatched, st.Statement, ""); err != nil {
				return err
			}
		}
		s.reg.SetDDL(st, progress.DDLMatched, s.allShards(), shards, "", "source shard 0's statement was applied", nil)
		return nil
	}
	if s.sourceShards > 1 {
		s.reg.SetDDL(st, progress.DDLWaiting, nil, shards, "", "waiting for every source shard to reach it", nil)
		if err := s.barrier.arrive(ctx, s, ord); err != nil {
			return err
		}
	}
	s.reg.SetDDL(st, progress.DDLApplying, nil, shards, "", "", nil)
	if len(need) == 0 {
		return nil
	}
	k0 := need[0]
	plan, err := s.plan(ctx, t, cap, k0)
	if err != nil {
		var ue *ddl.UncarriableError
		if errors.As(err, &ue) {
			var origins []string
			for k := range s.appliers {
				origins = append(origins, fmt.Sprintf("%s on shard %d", ddl.QuoteLiteral(OriginName(s.slot, k)), k))
			}
			err = fmt.Errorf("%w. To apply it yourself and go on: run its equivalent on every destination shard, then on each shard: INSERT INTO reshard.ddl_applied (origin, ddl_id, ordinal, commit_lsn, state, command_tag, statement) VALUES (<origin>, %d, %d, '%s', 'applied by hand', %s, '') with <origin> %s, and start the stream again; or stop the migration (ABORT)",
				err, cap.ID, ord, t.commitLSN, ddl.QuoteLiteral(cap.Tag), strings.Join(origins, ", "))
		}
		err = fmt.Errorf("captured DDL statement %d of source shard %d (%s): %w", cap.ID, s.sourceShard, abbrevSQL(st.Statement), err)
		s.reg.SetDDL(st, progress.DDLFailed, nil, shards, "", "", err)
		return err
	}
	if plan.Outside && txnSize(t) > 1 {
		err := fmt.Errorf("captured DDL statement %d of source shard %d (%s) must run outside a transaction block but shares its source transaction with other changes", cap.ID, s.sourceShard, abbrevSQL(st.Statement))
		s.reg.SetDDL(st, progress.DDLFailed, nil, shards, "", "", err)
		return err
	}
	sqls := make([]string, 0, len(plan.Steps))
	for _, step := range plan.Steps {
		sqls = append(sqls, step.SQL)
	}
	applied := strings.Join(sqls, ";\n")
	if plan.Skip != "" {
		s.log.Info("captured DDL statement not applied", "id", cap.ID, "statement", abbrevSQL(st.Statement), "reason", plan.Skip)
		for _, k := range need {
			if err := s.record(ctx, k, t, cap, ord, progress.DDLSkipped, st.Statement, ""); err != nil {
				return err
			}
		}
		s.reg.SetDDL(st, progress.DDLSkipped, s.allShards(), shards, "", plan.Skip, nil)
		s.decided = append(s.decided, decision{ord, st.Statement})
		return nil
	}
	var done []int
	for k := range s.appliers {
		if t.commitLSN <= s.appliers[k].applied {
			done = append(done, k)
		}
	}
	for _, k := range need {
		if err := s.run(ctx, k, plan, t, cap, ord); err != nil {
			err = fmt.Errorf("captured DDL statement %d of source shard %d on destination shard %d: %w", cap.ID, s.sourceShard, k, err)
			s.reg.SetDDL(st, progress.DDLFailed, done, shards, applied, "", err)
			return err
		}
		if err := s.record(ctx, k, t, cap, ord, progress.DDLApplied, st.Statement, applied); err != nil {
			return err
		}
		done = append(done, k)
		s.reg.SetDDL(st, progress.DDLApplying, done, shards, applied, "", nil)
	}
	if len(plan.Recopy) > 0 {
		if err := s.recopy(ctx, t, plan.Recopy); err != nil {
			err = fmt.Errorf("captured DDL statement %d of source shard %d: copy %s again: %w", cap.ID, s.sourceShard, strings.Join(plan.Recopy, ", "), err)
			s.reg.SetDDL(st, progress.DDLFailed, done, shards, applied, "", err)
			return err
		}
	}
	s.log.Info("captured DDL statement applied", "id", cap.ID, "source_shard", s.sourceShard, "statement", abbrevSQL(st.Statement), "sql", abbrevSQL(applied), "shards", len(need))
	s.reg.SetDDL(st, progress.DDLApplied, done, shards, applied, "", nil)
	s.decided = append(s.decided, decision{ord, st.Statement})
	return nil
}

// plan turns the statement into its steps, reading destination shard k's
// catalog inside its open transaction with the statement's search_path.
func (s *ddlStage) plan(ctx context.Context, t *txn, cap *ddl.Captured, k int) (*ddl.Action, error) {
	a := s.appliers[k]
	pctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.beginOn(pctx, k); err != nil {
		return nil, err
	}
	if err := setSearchPath(pctx, a.conn, cap.SearchPath, true); err != nil {
		return nil, err
	}
	var src *pgx.Conn
	if s.rules.Widen {
		src = s.source(ctx)
	}
	return ddl.Plan(pctx, cap, s.rules, a.conn, src)
}

func (s *ddlStage) beginOn(ctx context.Context, k int) error {
	if err := s.appliers[k].begin(ctx); err != nil {
		return fmt.Errorf("destination shard %d: begin: %w", k, err)
	}
	return nil
}

// setSearchPath sets a connection's search_path (for its transaction only
// when local).
func setSearchPath(ctx context.Context, conn *pgx.Conn, path string, local bool) error {
	if path == "" {
		return nil
	}
	if _, err := conn.Exec(ctx, `SELECT set_config('search_path', $1, $2)`, path, local); err != nil {
		return fmt.Errorf("set search_path %q: %w", path, err)
	}
	return nil
}

// run runs a statement's steps on destination shard k: inside its open
// transaction, as the role that ran it on the source when the shard has
// that role (the objects it creates are that role's, as on the source),
// each step under a savepoint so an optional one that fails leaves the
// shard as it was.
func (s *ddlStage) run(ctx context.Context, k int, plan *ddl.Action, t *txn, cap *ddl.Captured, ord int) error {
	a := s.appliers[k]
	if plan.Outside {
		return s.runOutside(ctx, k, plan, t, cap, ord)
	}
	rctx, cancel := context.WithTimeout(ctx, s.ddlTimeout())
	defer cancel()
	if err := s.beginOn(rctx, k); err != nil {
		return err
	}
	if err := setSearchPath(rctx, a.conn, cap.SearchPath, true); err != nil {
		return err
	}
	role, err := s.roleOn(rctx, a.conn, cap.User)
	if err != nil {
		return err
	}
	exec := func(sql string) error {
		_, err := a.conn.PgConn().Exec(rctx, sql).ReadAll()
		return err
	}
	for _, step := range plan.Steps {
		if err := exec("SAVEPOINT reshard_ddl"); err != nil {
			return err
		}
		err := exec(step.SQL)
		var pe *pgconn.PgError
		if err != nil && role != "" && errors.As(err, &pe) && pe.Code == "42501" {
			// The role cannot do it on the shard: run it as reshard's
			// user instead.
			if err = exec("ROLLBACK TO SAVEPOINT reshard_ddl; RESET ROLE"); err == nil {
				role = ""
				err = exec(step.SQL)
			}
		}
		if err != nil {
			if !step.Optional {
				return fmt.Errorf("%s: %w", abbrevSQL(step.SQL), err)
			}
			s.log.Warn("optional step of a captured DDL statement failed: left as it was", "shard", k, "sql", abbrevSQL(step.SQL), "error", err)
			if err := exec("ROLLBACK TO SAVEPOINT reshard_ddl"); err != nil {
				return err
			}
			continue
		}
		if err := exec("RELEASE SAVEPOINT reshard_ddl"); err != nil {
			return err
		}
	}
	if role != "" {
		if err := exec("RESET ROLE"); err != nil {
			return err
		}
	}
	return s.afterDDL(rctx, a)
}

// roleOn switches the transaction to the role that ran the statement on
// the source, when the shard has it and it is not the current one; it
// returns the role switched to.
func (s *ddlStage) roleOn(ctx context.Context, conn *pgx.Conn, user string) (string, error) {
	if user == "" {
		return "", nil
	}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AND $1 <> current_user`, user).Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		return "", nil
	}
	if _, err := conn.Exec(ctx, "SET LOCAL ROLE "+pgx.Identifier{user}.Sanitize()); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42501" {
			return "", nil
		}
		return "", err
	}
	return user, nil
}

// afterDDL resets what a statement invalidates on an applier: its prepared
// statements (plans of the old shape) and the search_path.
func (s *ddlStage) afterDDL(ctx context.Context, a *applier) error {
	if err := a.forgetStatements(ctx); err != nil {
		return err
	}
	_, err := a.conn.Exec(ctx, "SET LOCAL search_path TO DEFAULT")
	return err
}

// ddlTimeout bounds one statement on one shard: index builds and table
// rewrites take long, far longer than a network round trip.
func (s *ddlStage) ddlTimeout() time.Duration { return 24 * time.Hour }

// runOutside runs a statement that cannot run in a transaction block on
// destination shard k: a record that it started, each step unless its
// effect is there (removing what an interrupted run left first), then the
// shard's open transaction takes the record to applied with the origin.
func (s *ddlStage) runOutside(ctx context.Context, k int, plan *ddl.Action, t *txn, cap *ddl.Captured, ord int) error {
	a := s.appliers[k]
	// The transaction opened to plan it holds nothing (such a statement
	// is alone in its source transaction): it ends first, so it holds no
	// lock the statement waits for.
	a.rollback()
	rctx, cancel := context.WithTimeout(ctx, s.ddlTimeout())
	defer cancel()
	if _, err := a.conn.Exec(rctx, `INSERT INTO reshard.ddl_applied (origin, ddl_id, ordinal, commit_lsn, state, command_tag, statement, captured_at)
		VALUES ($1, $2, $3, $4::text::pg_lsn, 'started', $5, $6, $7) ON CONFLICT (origin, ddl_id) DO NOTHING`,
		a.origin, cap.ID, ord, t.commitLSN.String(), cap.Tag, cap.Query, capturedAt(cap)); err != nil {
		return fmt.Errorf("record the start of the statement: %w", err)
	}
	if err := setSearchPath(rctx, a.conn, cap.SearchPath, false); err != nil {
		return err
	}
	defer func() { _, _ = a.conn.Exec(context.Background(), "RESET search_path") }()
	for _, step := range plan.Steps {
		if step.Present != "" {
			var present bool
			if err := a.conn.QueryRow(rctx, step.Present).Scan(&present); err != nil {
				return fmt.Errorf("check %s: %w", abbrevSQL(step.SQL), err)
			}
			if present {
				continue
			}
		}
		if step.Leftover != "" {
			var left bool
			if err := a.conn.QueryRow(rctx, step.Leftover).Scan(&left); err != nil {
				return fmt.Errorf("check %s: %w", abbrevSQL(step.SQL), err)
			}
			if left {
				s.log.Info("removing what an interrupted statement left", "shard", k, "sql", step.Cleanup)
				if _, err := a.conn.PgConn().Exec(rctx, step.Cleanup).ReadAll(); err != nil {
					return fmt.Errorf("%s: %w", step.Cleanup, err)
				}
			}
		}
		if _, err := a.conn.PgConn().Exec(rctx, step.SQL).ReadAll(); err != nil {
			return fmt.Errorf("%s: %w", abbrevSQL(step.SQL), err)
		}
	}
	if err := a.forgetStatements(rctx); err != nil {
		return err
	}
	return s.beginOn(rctx, k)
}

func capturedAt(c *ddl.Captured) any {
	if c.CapturedAt == "" {
		return nil
	}
	return c.CapturedAt
}

// record writes the statement's record on destination shard k, inside its
// open transaction (committed with the origin's advance).
func (s *ddlStage) record(ctx context.Context, k int, t *txn, cap *ddl.Captured, ord int, state, stmt, sql string) error {
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.beginOn(rctx, k); err != nil {
		return err
	}
	a := s.appliers[k]
	_, err := a.conn.Exec(rctx, `INSERT INTO reshard.ddl_applied (origin, ddl_id, ordinal, commit_lsn, state, command_tag, statement, applied_sql, captured_at)
		VALUES ($1, $2, $3, $4::text::pg_lsn, $5, $6, $7, $8, $9)
		ON CONFLICT (origin, ddl_id) DO UPDATE SET state = excluded.state, applied_sql = excluded.applied_sql, applied_at = now()`,
		a.origin, cap.ID, ord, t.commitLSN.String(), state, cap.Tag, stmt, sql, capturedAt(cap))
	if err != nil {
		return fmt.Errorf("destination shard %d: record captured statement %d: %w", k, cap.ID, err)
	}
	return nil
}

// decision is a statement of source shard 0 applied in the transaction
// being committed.
type decision struct {
	ordinal   int
	statement string
}

// recopy marks tables to be copied again (inside destination shard 0's
// open transaction, which commits with the statement: a restart before
// the copy ends finds the mark and copies them then), and has the copy run
// once the transaction is committed (copyPending).
func (s *ddlStage) recopy(ctx context.Context, t *txn, tables []string) error {
	if s.job == nil || s.reverse {
		s.log.Warn("tables joined the publication with rows the stream never carried: reverse replication cannot copy them; copy them by hand", "tables", strings.Join(tables, ", "))
		return nil
	}
	var names [][2]string
	for _, n := range tables {
		parts := ddl.SplitIdentity(n)
		if i := strings.IndexByte(n, '.'); len(parts) != 2 && i > 0 {
			parts = []string{n[:i], n[i+1:]}
		}
		if len(parts) == 2 {
			names = append(names, [2]string{parts[0], parts[1]})
		}
	}
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	conn := s.shapeConn
	if t.commitLSN > s.appliers[0].applied {
		if err := s.beginOn(rctx, 0); err != nil {
			return err
		}
		conn = s.appliers[0].conn
	}
	if err := copier.MarkForCopy(rctx, conn, s.copySlot, s.sourceShards, names); err != nil {
		return err
	}
	s.pending = append(s.pending, names...)
	return nil
}

// copyPending copies the tables the statements just applied marked, then
// reloads the copy's watermarks: the stream skips their changes that the
// new copy holds.
func (s *ddlStage) copyPending(ctx context.Context) error {
	if len(s.pending) == 0 {
		return nil
	}
	tables := s.pending
	s.pending = nil
	s.log.Info("copying tables again: they joined the migration with rows the stream never carried", "tables", len(tables))
	if err := copier.CopyAgain(ctx, s.job, s.copySlot, tables); err != nil {
		return fmt.Errorf("copy again %v: %w", tables, err)
	}
	return s.reloadMarks(ctx)
}

// reloadMarks reads the copy's watermarks again (after tables were copied
// again).
func (s *ddlStage) reloadMarks(ctx context.Context) error {
	qctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	marks, err := loadCopyMarks(qctx, s.shapeConn, s.copySlot, s.sourceShard)
	if err != nil {
		return fmt.Errorf("read the copy's watermarks on destination shard 0: %w", err)
	}
	s.router.marks = marks
	return nil
}

// copyMarked copies, before a stream starts, the tables an earlier run
// marked to be copied again and did not finish copying (a restart in
// between).
func copyMarked(ctx context.Context, j *job.Job, slot string) error {
	conn, err := j.ConnectDestination(ctx, 0)
	if err != nil {
		return err
	}
	tables, err := copier.Pending(ctx, conn, slot)
	conn.Close(context.Background())
	if err != nil || len(tables) == 0 {
		return err
	}
	j.Logger("stream").Info("copying tables again before streaming: an earlier run marked them and stopped before the copy ended", "tables", len(tables))
	return copier.CopyAgain(ctx, j, slot, tables)
}

// forgetStatements deallocates the applier's prepared statements: their
// plans are of the tables' old shapes.
func (a *applier) forgetStatements(ctx context.Context) error {
	for _, name := range a.stmts {
		if _, err := a.conn.PgConn().Exec(ctx, "DEALLOCATE "+name).ReadAll(); err != nil {
			return fmt.Errorf("destination shard %d: deallocate %s: %w", a.shard, name, err)
		}
	}
	a.stmts = map[string]string{}
	return nil
}
