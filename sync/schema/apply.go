package schema

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/progress"
)

// Target is one destination shard to apply statements on.
type Target struct {
	// Database is the destination cluster name.
	Database string
	// Shard is the shard number.
	Shard int
	// Node is the shard's primary.
	Node *catalog.Node
	// ConnString connects to it as the schema_admin user.
	ConnString string
	// User is the login role, for progress display.
	User string
	// Dump reaches the shard with pg_dump (to tell, on a rerun, which
	// statements are already applied).
	Dump DumpSource
}

// ShardResult is what one phase did on one shard.
type ShardResult struct {
	Shard      int
	Phase      Phase
	Statements int
	// Applied ran and changed the shard; Skipped were already present.
	Applied, Skipped, Failed int
	Elapsed                  time.Duration
	// Errors lists failed statements (with --ignore-errors; otherwise the
	// first one stops the phase).
	Errors []*StatementError
	// MissingRoles are roles named by GRANT/OWNER statements that do not
	// exist on the shard; those statements are reported, not fatal.
	MissingRoles []string
	// ForeignKeys are the foreign keys whose rows on this shard do not all
	// find their referenced row (keys that cross shards): left NOT VALID,
	// or not created on a partitioned table, and reported, not fatal.
	ForeignKeys []ForeignKeyFinding
	// NotPermitted are statements the shard's schema admin may not run,
	// with the privilege missing: a publication FOR ALL TABLES (superuser
	// only; POST_CUTOVER creates what reverse replication needs FOR TABLE),
	// an OWNER TO or GRANT naming a role it is not a member of. Reported,
	// not fatal.
	NotPermitted []string
	// Undumped, on a rerun, is why the shard's own schema could not be
	// dumped (pg_dump older than the shard, a table its schema admin may
	// not read, ...): what was already present was then told by each
	// statement's existence check alone, and Unchecked statements, which
	// have none, ran again and count as applied.
	Undumped  string
	Unchecked int
}

// UndumpedNote says, for a rerun on a shard that could not be dumped, how
// its summary was told; "" otherwise.
func (r *ShardResult) UndumpedNote() string {
	if r.Undumped == "" {
		return ""
	}
	return fmt.Sprintf("the shard's schema could not be dumped (%s): what is already present was told by existence checks; %d statements without one ran again and count as applied",
		r.Undumped, r.Unchecked)
}

// ForeignKeyFinding is a foreign key that does not hold on one shard.
type ForeignKeyFinding struct {
	// Name and Table (schema.table) name the foreign key.
	Name, Table string
	Shard       int
	// Orphans is the number of rows on the shard without their referenced
	// row there (-1 when counting them failed).
	Orphans int64
	// NotCreated tells that the key is not on the shard at all:
	// PostgreSQL 15 cannot add a NOT VALID foreign key to a partitioned
	// table. Otherwise it is there, NOT VALID.
	NotCreated bool
}

func (f ForeignKeyFinding) String() string {
	state := "left NOT VALID"
	if f.NotCreated {
		state = "not created (a partitioned table cannot hold it NOT VALID)"
	}
	rows := fmt.Sprintf("%d rows", f.Orphans)
	if f.Orphans < 0 {
		rows = "rows"
	}
	return fmt.Sprintf("foreign key %s on %s %s on shard %d: %s without their referenced row on that shard", f.Name, f.Table, state, f.Shard, rows)
}

// StatementError is a statement that failed on a shard.
type StatementError struct {
	Database string
	Shard    int
	Node     string
	SQL      string
	Code     string
	Message  string
}

func (e *StatementError) Error() string {
	return fmt.Sprintf("%s shard %d (%s): ERROR %s (SQLSTATE %s) in: %s", e.Database, e.Shard, e.Node, e.Message, e.Code, abbreviate(e.SQL))
}

// SQLState is the failing statement's SQLSTATE.
func (e *StatementError) SQLState() string { return e.Code }

// alreadyExists are SQLSTATEs that mean the object a CREATE makes is there:
// the statement was applied by an earlier run.
var alreadyExists = map[string]bool{
	"42P07": true, // duplicate_table (tables, indexes, sequences, views)
	"42710": true, // duplicate_object (types, constraints, triggers, publications, ...)
	"42P06": true, // duplicate_schema
	"42723": true, // duplicate_function
	"42701": true, // duplicate_column
	"42P16": true, // invalid_table_definition: "multiple primary keys" on a re-run
}

var missingRole = regexp.MustCompile(`role "([^"]+)" does not exist`)

// applier runs statements on destination shards, recording progress.
type applier struct {
	preamble     []string
	parallel     int
	ignoreErrors bool
	reg          *progress.Registry
	log          hclog.Logger
}

// shardWork is one shard's statements with their progress entries.
type shardWork struct {
	target *Target
	stmts  []*Statement
	items  []*progress.SchemaStatement
	// present, on a shard that already held objects (a rerun), is the set
	// of statements its own schema dump contains (whitespace-normalised):
	// those are already applied and are not run again.
	present map[string]bool
	// undumped is why such a shard could not be dumped; present is then
	// empty and existence checks alone tell what is there.
	undumped string
}

// findPresent marks the works of shards that already hold objects of
// their own as reruns: each such shard is dumped (schema only, the same
// pg_dump) and the statements its dump contains are already present.
// Statements with an existence check are checked before they run, too.
// A fresh shard costs one query.
func (a *applier) findPresent(ctx context.Context, works []*shardWork, conns job.Conns) error {
	g, gctx := errgroup.WithContext(ctx)
	for i, w := range works {
		g.Go(func() error {
			var used bool
			err := conns[i].QueryRow(gctx, `SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'reshard') AND n.nspname NOT LIKE 'pg\_temp%')`).Scan(&used)
			if err != nil {
				return fmt.Errorf("%s shard %d: look for existing objects: %w", w.target.Database, w.target.Shard, err)
			}
			if !used {
				return nil
			}
			// Without its dump (pg_dump older than the shard, a table the
			// schema admin may not read, a dump that does not parse), the
			// rerun goes on, told by existence checks, and says so.
			dump, err := Dump(gctx, w.target.Dump)
			var stmts []parsed
			if err == nil {
				stmts, err = splitDump(dump)
			}
			if err != nil {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				w.present, w.undumped = map[string]bool{}, err.Error()
				a.log.Warn("cannot dump a shard's schema to tell what is already applied; existence checks tell instead",
					"database", w.target.Database, "shard", w.target.Shard, "error", err)
				return nil
			}
			w.present = make(map[string]bool, len(stmts))
			for _, ps := range stmts {
				w.present[normalizeSQL(ps.sql)] = true
			}
			return nil
		})
	}
	return g.Wait()
}

// normalizeSQL is sql with runs of white space made one space and no
// trailing semicolon, to compare statements.
func normalizeSQL(sql string) string {
	return strings.TrimSuffix(strings.Join(strings.Fields(sql), " "), ";")
}

// alreadyPresent tells, on a rerun, whether a statement's effect is on the
// shard before it runs: its text is in the shard's own dump, or its
// existence check says so.
func alreadyPresent(ctx context.Context, conn *pgx.Conn, w *shardWork, st *Statement) (bool, error) {
	if w.present[normalizeSQL(st.SQL)] {
		return true, nil
	}
	if st.Exists == nil {
		return false, nil
	}
	var present bool
	if err := conn.QueryRow(ctx, st.Exists.SQL, st.Exists.Args...).Scan(&present); err != nil {
		return false, fmt.Errorf("check whether %q is applied: %w", abbreviate(st.SQL), err)
	}
	return present, nil
}

func (a *applier) register(phase Phase, targets []*Target, stmts func(t *Target) []*Statement) []*shardWork {
	var works []*shardWork
	for _, t := range targets {
		w := &shardWork{target: t, stmts: stmts(t)}
		for _, st := range w.stmts {
			w.items = append(w.items, &progress.SchemaStatement{
				Database: t.Database, User: t.User, Shard: t.Shard, Phase: string(phase),
				Kind: st.Kind, Schema: st.Schema, Table: st.Table, SQL: st.SQL,
			})
		}
		a.reg.AddSchema(w.items...)
		works = append(works, w)
	}
	return works
}

// run applies every shard's work concurrently. Without ignoreErrors the
// first failure cancels the other shards and is returned.
func (a *applier) run(ctx context.Context, phase Phase, works []*shardWork) ([]*ShardResult, error) {
	results := make([]*ShardResult, len(works))
	// The first failure cancels the other shards: it is the error returned,
	// not the cancellations it causes.
	g, gctx := errgroup.WithContext(ctx)
	for i, w := range works {
		g.Go(func() error {
			var err error
			results[i], err = a.applyShard(gctx, phase, w)
			return err
		})
	}
	err := g.Wait()
	for _, w := range works {
		a.reg.RemoveSchema(w.items)
	}
	return results, err
}

// conn opens a connection to the target and runs the dump's preamble.
func (a *applier) conn(ctx context.Context, t *Target) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, t.ConnString)
	if err != nil {
		return nil, &unreachableError{target: t, err: err}
	}
	for _, sql := range a.preamble {
		if _, err := conn.PgConn().Exec(ctx, sql).ReadAll(); err != nil {
			// A setting the shard's server does not have (pg_dump 17 and
			// later write SET transaction_timeout = 0, which PostgreSQL 16
			// and older do not know) is a session default it lacks anyway.
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "42704" && strings.HasPrefix(strings.ToUpper(sql), "SET ") {
				continue
			}
			conn.Close(context.Background())
			return nil, fmt.Errorf("%s shard %d: session setting %q: %w", t.Database, t.Shard, sql, err)
		}
	}
	return conn, nil
}

func (a *applier) applyShard(ctx context.Context, phase Phase, w *shardWork) (*ShardResult, error) {
	res := &ShardResult{Shard: w.target.Shard, Phase: phase, Statements: len(w.stmts), Undumped: w.undumped}
	start := time.Now()
	defer func() { res.Elapsed = time.Since(start) }()
	if len(w.stmts) == 0 {
		return res, nil
	}
	main, err := a.conn(ctx, w.target)
	if err != nil {
		return res, err
	}
	defer main.Close(context.Background())
	var mu sync.Mutex // guards res
	roles := map[string]bool{}
	exec := func(conn *pgx.Conn, i int) error {
		st, item := w.stmts[i], w.items[i]
		a.reg.Start(item)
		var skipped bool
		var err error
		if w.present != nil {
			skipped, err = alreadyPresent(ctx, conn, w, st)
		}
		if !skipped && err == nil {
			skipped, err = execStatement(ctx, conn, st)
		}
		var pe *pgconn.PgError
		if err != nil {
			errors.As(err, &pe)
		}
		if pe != nil && st.fk != nil && pe.Code == "23503" && ctx.Err() == nil {
			// Rows whose referenced row is on another shard: the key
			// crosses shards. Report it with its rows; it stays NOT VALID.
			f := ForeignKeyFinding{Name: st.fk.name, Table: st.fk.table.String(), Shard: w.target.Shard, Orphans: -1, NotCreated: st.Kind == "foreign key"}
			if cerr := conn.QueryRow(ctx, st.fk.orphansSQL()).Scan(&f.Orphans); cerr != nil {
				a.log.Warn("count rows breaking a foreign key", "foreign_key", f.Name, "shard", f.Shard, "error", cerr)
			}
			a.log.Warn("foreign key does not hold on a shard", "database", w.target.Database, "shard", f.Shard, "foreign_key", f.Name,
				"table", f.Table, "rows_without_reference", f.Orphans, "not_created", f.NotCreated)
			mu.Lock()
			defer mu.Unlock()
			res.ForeignKeys = append(res.ForeignKeys, f)
			a.reg.Finish(item, progress.StateSkipped, err)
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			if skipped {
				res.Skipped++
				a.reg.Finish(item, progress.StateSkipped, nil)
			} else {
				res.Applied++
				if w.undumped != "" && st.Exists == nil {
					res.Unchecked++
				}
				a.reg.Finish(item, progress.StateDone, nil)
			}
			return nil
		}
		if ctx.Err() != nil {
			a.reg.Finish(item, progress.StateFailed, ctx.Err())
			return ctx.Err()
		}
		if pe != nil && notPermitted(st, pe) {
			note := fmt.Sprintf("not permitted to %s: %s (SQLSTATE %s)", abbreviate(st.SQL), pe.Message, pe.Code)
			if st.Kind == "publication" && pe.Code == "42501" {
				note = fmt.Sprintf("publication not created: %s (the schema admin %s lacks that privilege on shard %d); SCHEMA_SYNC POST_CUTOVER creates what reverse replication needs FOR TABLE", pe.Message, w.target.User, w.target.Shard)
			}
			res.NotPermitted = append(res.NotPermitted, note)
			a.reg.Finish(item, progress.StateSkipped, err)
			a.log.Warn("statement not permitted on a shard", "database", w.target.Database, "shard", w.target.Shard, "sqlstate", pe.Code, "error", pe.Message, "sql", abbreviate(st.SQL))
			return nil
		}
		if pe != nil && st.roleStatement && pe.Code == "42704" {
			if m := missingRole.FindStringSubmatch(pe.Message); m != nil {
				roles[m[1]] = true
				res.Skipped++
				a.reg.Finish(item, progress.StateSkipped, err)
				return nil
			}
		}
		se := &StatementError{Database: w.target.Database, Shard: w.target.Shard, Node: w.target.Node.Addr() + "/" + w.target.Node.Database, SQL: st.SQL, Code: "XX000", Message: err.Error()}
		if pe != nil {
			se.Code, se.Message = pe.Code, pe.Message
		}
		res.Failed++
		res.Errors = append(res.Errors, se)
		a.reg.Finish(item, progress.StateFailed, se)
		a.log.Warn("schema statement failed", "database", w.target.Database, "shard", w.target.Shard, "sqlstate", se.Code, "error", se.Message, "sql", abbreviate(st.SQL))
		if a.ignoreErrors {
			return nil
		}
		return se
	}
	defer func() {
		for r := range roles {
			res.MissingRoles = append(res.MissingRoles, r)
		}
		sort.Strings(res.MissingRoles)
	}()
	// Runs of statements of the same stage: parallel stages use a pool of
	// connections, the others run in order on the main connection.
	for lo := 0; lo < len(w.stmts); {
		hi := lo + 1
		for hi < len(w.stmts) && w.stmts[hi].Stage == w.stmts[lo].Stage {
			hi++
		}
		stage := w.stmts[lo].Stage
		if (stage == StageIndexes || stage == StageValidate) && a.parallel > 1 && hi-lo > 1 {
			if err := a.parallelRun(ctx, w.target, main, lo, hi, exec); err != nil {
				return res, err
			}
		} else {
			// Optimistic batches: on a fresh shard nothing fails and a batch
			// costs one round trip; a batch that fails (a re-run, a real
			// error) rolls back whole and its statements run one by one.
			for b := lo; b < hi; b += maxBatch {
				e := b + maxBatch
				if e > hi {
					e = hi
				}
				if e-b > 1 && w.present == nil {
					for i := b; i < e; i++ {
						a.reg.Start(w.items[i])
					}
					if execBatch(ctx, main, w.stmts[b:e]) {
						mu.Lock()
						for i := b; i < e; i++ {
							res.Applied++
							a.reg.Finish(w.items[i], progress.StateDone, nil)
						}
						mu.Unlock()
						continue
					}
					if ctx.Err() != nil {
						return res, ctx.Err()
					}
				}
				for i := b; i < e; i++ {
					if err := exec(main, i); err != nil {
						return res, err
					}
				}
			}
		}
		lo = hi
	}
	return res, nil
}

// parallelRun runs statements lo..hi-1 on up to a.parallel connections.
func (a *applier) parallelRun(ctx context.Context, t *Target, main *pgx.Conn, lo, hi int, exec func(*pgx.Conn, int) error) error {
	workers := min(a.parallel, hi-lo)
	next := make(chan int)
	// The first worker that fails stops the feed; its error is returned.
	g, gctx := errgroup.WithContext(ctx)
	for k := 0; k < workers; k++ {
		g.Go(func() error {
			conn := main
			if k > 0 {
				c, err := a.conn(gctx, t)
				if err != nil {
					return err
				}
				defer c.Close(context.Background())
				conn = c
			}
			for i := range next {
				if err := exec(conn, i); err != nil {
					return err
				}
			}
			return nil
		})
	}
feed:
	for i := lo; i < hi; i++ {
		select {
		case next <- i:
		case <-gctx.Done():
			break feed
		}
	}
	close(next)
	if err := g.Wait(); err != nil {
		return err
	}
	// No worker failed; a cancelled parent may still have stopped the feed.
	return ctx.Err()
}

// notPermitted tells the statements whose failure for lack of a privilege
// is reported rather than fatal: publications (FOR ALL TABLES needs a
// superuser; an ALTER PUBLICATION after such a refusal finds none), and
// OWNER TO / GRANT for roles the schema admin may not act as.
func notPermitted(st *Statement, pe *pgconn.PgError) bool {
	switch {
	case st.Kind == "publication":
		return pe.Code == "42501" || (pe.Code == "42704" && strings.Contains(pe.Message, "publication"))
	case st.roleStatement:
		// ALTER PUBLICATION ... OWNER TO after the publication was refused;
		// OWNER TO of a sequence that follows its table, whose OWNER TO was
		// refused (0A000 cannot change owner of sequence).
		return pe.Code == "42501" || (pe.Code == "42704" && strings.HasPrefix(pe.Message, "publication ")) ||
			(pe.Code == "0A000" && strings.HasPrefix(pe.Message, "cannot change owner of sequence"))
	}
	return false
}

// execStatement runs one statement; skipped reports that it was already
// applied. It runs first and asks later: when the statement fails, its
// Exists check (if it has one) decides between "already applied" and a real
// error, so a fresh shard costs one round trip per statement. Without a
// check, PostgreSQL's "already exists" errors mean applied.
func execStatement(ctx context.Context, conn *pgx.Conn, st *Statement) (skipped bool, err error) {
	_, err = conn.PgConn().Exec(ctx, st.SQL).ReadAll()
	if err == nil {
		return false, nil
	}
	if ctx.Err() != nil {
		return false, err
	}
	if st.Exists != nil {
		var present bool
		if cerr := conn.QueryRow(ctx, st.Exists.SQL, st.Exists.Args...).Scan(&present); cerr != nil {
			return false, fmt.Errorf("%w (checking whether it was already applied failed too: %v)", err, cerr)
		}
		if present {
			return true, nil
		}
		// The object is absent, so this is a real failure: for instance a
		// different kind of object holding the name.
		return false, err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && alreadyExists[pe.Code] {
		return true, nil
	}
	return false, err
}

// maxBatch bounds how many statements go to a shard in one round trip.
const maxBatch = 64

// execBatch sends statements lo..hi-1 as one simple query: one implicit
// transaction, so it either applies all of them or none. Returns false when
// the batch failed and the statements must be run one by one.
func execBatch(ctx context.Context, conn *pgx.Conn, stmts []*Statement) bool {
	var b strings.Builder
	for i, st := range stmts {
		if i > 0 {
			b.WriteString("\n;\n")
		}
		b.WriteString(st.SQL)
	}
	_, err := conn.PgConn().Exec(ctx, b.String()).ReadAll()
	return err == nil
}

// unreachableError is a destination shard that cannot be connected to.
type unreachableError struct {
	target *Target
	err    error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot connect to %s shard %d at %s/%s: %v", e.target.Database, e.target.Shard, e.target.Node.Addr(), e.target.Node.Database, e.err)
}

func (e *unreachableError) Unwrap() error { return e.err }

// SQLState is connection_failure... unless PostgreSQL said something precise.
func (e *unreachableError) SQLState() string {
	var pe *pgconn.PgError
	if errors.As(e.err, &pe) {
		return pe.Code
	}
	return "08006"
}

// summarize joins results for messages.
func summarize(results []*ShardResult) string {
	var parts []string
	for _, r := range results {
		if r == nil {
			continue
		}
		parts = append(parts, fmt.Sprintf("shard %d: %d applied, %d already present, %d failed of %d", r.Shard, r.Applied, r.Skipped, r.Failed, r.Statements))
	}
	return strings.Join(parts, "; ")
}
