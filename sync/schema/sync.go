package schema

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/progress"
)

// Request is one schema-sync phase to run.
type Request struct {
	Catalog *catalog.Catalog
	// Source and Destination are cluster names; Publication is on the source.
	Source, Destination, Publication string
	Phase                            Phase
	// DryRun computes each shard's SQL and changes nothing.
	DryRun bool
	// IgnoreErrors continues past failing statements; they are listed in
	// the result.
	IgnoreErrors bool
	// Parallel bounds concurrent index builds (and FK validations) per
	// shard; 0 means [general] resharding_parallel_copies.
	Parallel int
	// Registry receives progress; nil means a private one.
	Registry *progress.Registry
	// Logger is the parent logger.
	Logger hclog.Logger
}

// ShardSQL is the SQL a phase runs on one shard (dry run).
type ShardSQL struct {
	Shard int
	SQL   []string
}

// Result is what a phase did.
type Result struct {
	Phase Phase
	// Shards has one entry per destination shard.
	Shards []*ShardResult
	// DryRun holds each shard's SQL when the request was a dry run.
	DryRun []ShardSQL
	// Preamble is the session setup each connection runs (dry run).
	Preamble []string
	// Widened lists integer columns made bigint (PRE).
	Widened []string
	// Warnings are non-fatal findings (missing roles, ...).
	Warnings []string
	// Elapsed is the phase's wall time.
	Elapsed time.Duration
}

// Error is a failure before or while applying, with a SQLSTATE.
type Error struct {
	Code, Message, Hint string
	Err                 error
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// SQLState is the SQLSTATE to answer with.
func (e *Error) SQLState() string { return e.Code }

// endpoints are the resolved clusters of a request.
type endpoints struct {
	src     *catalog.Cluster
	dst     *catalog.Cluster
	srcNode *catalog.Node
	srcDSN  string
	targets []*Target
}

func resolve(req *Request) (*endpoints, error) {
	src, ok := req.Catalog.Cluster(req.Source)
	if !ok {
		return nil, &Error{Code: "3D000", Message: fmt.Sprintf("database %q is not configured", req.Source)}
	}
	dst, ok := req.Catalog.Cluster(req.Destination)
	if !ok {
		return nil, &Error{Code: "3D000", Message: fmt.Sprintf("database %q is not configured", req.Destination)}
	}
	ep := &endpoints{src: src, dst: dst, srcNode: src.Shards[0].Primary}
	dsn, err := req.Catalog.ConnString(ep.srcNode, nil)
	if err != nil {
		return nil, err
	}
	ep.srcDSN = dsn
	for _, sh := range dst.Shards {
		dsn, err := req.Catalog.ConnString(sh.Primary, nil)
		if err != nil {
			return nil, err
		}
		ep.targets = append(ep.targets, &Target{Database: dst.Name, Shard: sh.Number, Node: sh.Primary, ConnString: dsn, User: dst.Admin.LoginUser()})
	}
	return ep, nil
}

// Run runs one phase on every destination shard.
func Run(ctx context.Context, req Request) (*Result, error) {
	start := time.Now()
	log := req.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log = log.Named("schema")
	if req.Registry == nil {
		req.Registry = progress.NewRegistry()
	}
	if req.Parallel <= 0 {
		req.Parallel = req.Catalog.Config.General.ReshardingParallelCopies
	}
	ep, err := resolve(&req)
	if err != nil {
		return nil, err
	}
	// Preflight: the source answers and has the publication; every shard
	// answers. Nothing is changed before all of that holds.
	srcConn, err := pgx.Connect(ctx, ep.srcDSN)
	if err != nil {
		code := "08006"
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			code = pe.Code
		}
		return nil, &Error{Code: code, Message: fmt.Sprintf("cannot connect to source %s: %v", ep.srcNode, err), Err: err}
	}
	defer srcConn.Close(context.Background())
	var versionNum int
	if err := srcConn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&versionNum); err != nil {
		return nil, fmt.Errorf("source server version: %w", err)
	}
	var hasPub bool
	if err := srcConn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", req.Publication).Scan(&hasPub); err != nil {
		return nil, fmt.Errorf("look up publication: %w", err)
	}
	if !hasPub {
		return nil, &Error{Code: "42704", Message: fmt.Sprintf("publication %q does not exist on source %s", req.Publication, ep.srcNode),
			Hint: fmt.Sprintf("create it on the source, e.g. CREATE PUBLICATION %s FOR ALL TABLES", quoteIdent(req.Publication))}
	}
	if !req.DryRun {
		for _, t := range ep.targets {
			c, err := pgx.Connect(ctx, t.ConnString)
			if err != nil {
				ue := &unreachableError{target: t, err: err}
				return nil, &Error{Code: ue.SQLState(), Message: ue.Error() + "; nothing was changed on any shard", Err: err}
			}
			c.Close(context.Background())
		}
	}
	a := &applier{parallel: req.Parallel, ignoreErrors: req.IgnoreErrors, reg: req.Registry, log: log}
	res := &Result{Phase: req.Phase}
	var works []*shardWork
	switch req.Phase {
	case PhasePre, PhasePost:
		admin := ep.src.Admin
		dump, err := Dump(ctx, DumpSource{PgDump: req.Catalog.Config.Replication.PgDumpPath, Host: ep.srcNode.Host, Port: ep.srcNode.Port,
			Database: ep.srcNode.Database, User: nodeUser(ep.srcNode, admin), Password: nodePassword(ep.srcNode, admin), ServerVersionNum: versionNum})
		if err != nil {
			code := "58P01"
			if !strings.Contains(err.Error(), "not found") {
				code = "XX000"
			}
			return nil, &Error{Code: code, Message: err.Error(), Err: err}
		}
		dumped := time.Now()
		plan, err := BuildPlan(dump)
		if err != nil {
			return nil, &Error{Code: "XX000", Message: err.Error(), Err: err}
		}
		log.Debug("schema dumped and planned", "dump", dumped.Sub(start).Round(time.Millisecond), "plan", time.Since(dumped).Round(time.Millisecond),
			"pre", len(plan.Pre), "post", len(plan.Post))
		a.preamble = plan.Preamble
		res.Preamble = plan.Preamble
		if req.Phase == PhasePre {
			res.Widened = plan.Widened
		}
		stmts := plan.Statements(req.Phase)
		if req.DryRun {
			for _, t := range ep.targets {
				res.DryRun = append(res.DryRun, ShardSQL{Shard: t.Shard, SQL: sqlOf(stmts)})
			}
			res.Elapsed = time.Since(start)
			return res, nil
		}
		works = a.register(req.Phase, ep.targets, func(*Target) []*Statement { return stmts })
	case PhaseCutover:
		perShard, err := cutoverStatements(ctx, srcConn, ep, log)
		if err != nil {
			return nil, err
		}
		if req.DryRun {
			for _, t := range ep.targets {
				res.DryRun = append(res.DryRun, ShardSQL{Shard: t.Shard, SQL: sqlOf(perShard[t.Shard])})
			}
			res.Elapsed = time.Since(start)
			return res, nil
		}
		works = a.register(req.Phase, ep.targets, func(t *Target) []*Statement { return perShard[t.Shard] })
	case PhasePostCutover:
		stmts, warnings, err := postCutoverStatements(ctx, srcConn, ep, req.Publication)
		if err != nil {
			return nil, err
		}
		res.Warnings = append(res.Warnings, warnings...)
		if req.DryRun {
			for _, t := range ep.targets {
				res.DryRun = append(res.DryRun, ShardSQL{Shard: t.Shard, SQL: sqlOf(stmts)})
			}
			res.Elapsed = time.Since(start)
			return res, nil
		}
		works = a.register(req.Phase, ep.targets, func(*Target) []*Statement { return stmts })
	default:
		return nil, &Error{Code: "22023", Message: fmt.Sprintf("unknown schema sync phase %q", req.Phase)}
	}
	log.Info("schema sync", "phase", req.Phase, "source", req.Source, "destination", req.Destination, "shards", len(ep.targets), "statements_per_shard", len(works[0].stmts))
	results, err := a.run(ctx, req.Phase, works)
	res.Shards = results
	res.Elapsed = time.Since(start)
	for _, r := range results {
		if r != nil && len(r.MissingRoles) > 0 {
			res.Warnings = append(res.Warnings, fmt.Sprintf("shard %d: roles missing on the destination (their GRANT/OWNER statements were skipped): %s", r.Shard, strings.Join(r.MissingRoles, ", ")))
		}
	}
	if err != nil {
		var se *StatementError
		if errors.As(err, &se) {
			return res, &Error{Code: se.Code, Message: fmt.Sprintf("SCHEMA_SYNC %s stopped: %s", req.Phase, se.Error()),
				Hint: fmt.Sprintf("progress so far: %s. Fix the cause and run the phase again: statements already applied are skipped.", summarize(results)), Err: se}
		}
		var ue *unreachableError
		if errors.As(err, &ue) {
			return res, &Error{Code: ue.SQLState(), Message: ue.Error(), Hint: "progress so far: " + summarize(results) + ". Run the phase again once the shard is back.", Err: err}
		}
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return res, &Error{Code: pe.Code, Message: err.Error(), Hint: "progress so far: " + summarize(results), Err: err}
		}
		return res, err
	}
	log.Info("schema sync done", "phase", req.Phase, "elapsed", res.Elapsed.Round(time.Millisecond), "summary", summarize(results))
	return res, nil
}

func sqlOf(stmts []*Statement) []string {
	out := make([]string, len(stmts))
	for i, s := range stmts {
		out[i] = s.SQL
	}
	return out
}

func nodeUser(n *catalog.Node, admin *catalog.User) string {
	if n.User != "" {
		return n.User
	}
	return admin.LoginUser()
}

func nodePassword(n *catalog.Node, admin *catalog.User) string {
	if n.Password != "" {
		return n.Password
	}
	return admin.LoginPassword()
}
