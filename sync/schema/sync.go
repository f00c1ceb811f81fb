package schema

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/job"
)

// Request is one schema-sync phase to run on a job's destination shards.
type Request struct {
	Phase Phase
	// DryRun computes each shard's SQL and changes nothing.
	DryRun bool
	// IgnoreErrors continues past failing statements; they are listed in
	// the result.
	IgnoreErrors bool
	// Parallel bounds concurrent index builds (and FK validations) per
	// shard; 0 means [general] resharding_parallel_copies.
	Parallel int
	// ReadOnlyOff makes the phase's sessions writable on shards that
	// reshard made read-only for the application (CUTOVER after a
	// rollback). Without it such a shard refuses the phase (25006).
	ReadOnlyOff bool
	// Snapshot, for PRE and POST, is an exported snapshot of source shard
	// 0 to dump the schema at (pg_dump --snapshot): RESHARD's slot's, so
	// the shards' schema, the copied rows and the stream's start are one
	// point. Empty: the schema as it is now.
	Snapshot string
	// Dump, for PRE and POST, is the source's schema to plan from instead
	// of running pg_dump: the Result.Dump of an earlier phase (RESHARD's
	// POST plans from the dump its PRE took at the slot's snapshot).
	Dump string
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
	// Widened lists the integer columns made bigint, with their reasons
	// (PRE, also in a dry run).
	Widened []Widening
	// Warnings are non-fatal findings (missing roles, foreign keys that do
	// not hold on a shard, ...).
	Warnings []string
	// ForeignKeys are the foreign keys that do not hold on some shard
	// (POST), every shard's.
	ForeignKeys []ForeignKeyFinding
	// Elapsed is the phase's wall time.
	Elapsed time.Duration
	// Dump is the source's schema PRE or POST planned from.
	Dump string
}

// endpoints are the resolved clusters of a job, as the phases use them.
type endpoints struct {
	src     *catalog.Cluster
	dst     *catalog.Cluster
	srcNode *catalog.Node
	targets []*Target
	// shards are open connections to every destination shard (nil on a
	// dry run of a phase that needs none).
	shards job.Conns
}

func endpointsOf(j *job.Job) *endpoints {
	ep := &endpoints{src: j.Source, dst: j.Destination, srcNode: j.Source.Shards[0].Primary}
	for k, sh := range j.Destination.Shards {
		ep.targets = append(ep.targets, &Target{Database: j.Destination.Name, Shard: sh.Number, Node: sh.Primary,
			ConnString: j.DestinationDSN[k], User: nodeUser(sh.Primary, j.Destination.Admin),
			Dump: DumpSource{PgDump: j.Catalog.Config.Replication.PgDumpPath, Host: sh.Primary.Host, Port: sh.Primary.Port, Database: sh.Primary.Database,
				User: nodeUser(sh.Primary, j.Destination.Admin), Password: nodePassword(sh.Primary, j.Destination.Admin)}})
	}
	return ep
}

// Run runs one phase on every destination shard of the job.
func Run(ctx context.Context, j *job.Job, req Request) (*Result, error) {
	start := time.Now()
	log := j.Logger("schema")
	if req.Parallel <= 0 {
		req.Parallel = j.Catalog.Config.General.ReshardingParallelCopies
	}
	ep := endpointsOf(j)
	// Preflight: the source answers and has the publication; every shard
	// answers. Nothing is changed before all of that holds.
	srcConn, err := j.ConnectSource(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer srcConn.Close(context.Background())
	var versionNum int
	if err := srcConn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&versionNum); err != nil {
		return nil, fmt.Errorf("source server version: %w", err)
	}
	var hasPub bool
	if err := srcConn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", j.Publication).Scan(&hasPub); err != nil {
		return nil, fmt.Errorf("look up publication: %w", err)
	}
	if !hasPub {
		return nil, job.Errorf("42704", "publication %q does not exist on source %s", j.Publication, ep.srcNode).
			WithHint("create it on the source, e.g. CREATE PUBLICATION %s FOR ALL TABLES", quoteIdent(j.Publication))
	}
	if !req.DryRun || req.Phase == PhaseCutover || req.Phase == PhasePostCutover {
		if ep.shards, err = j.ConnectDestinations(ctx); err != nil {
			var je *job.Error
			if errors.As(err, &je) && !req.DryRun {
				je.Message += "; nothing was changed on any shard"
			}
			return nil, err
		}
		defer ep.shards.Close()
	}
	a := &applier{parallel: req.Parallel, ignoreErrors: req.IgnoreErrors, reg: j.Registry, log: log}
	res := &Result{Phase: req.Phase}
	var works []*shardWork
	switch req.Phase {
	case PhasePre, PhasePost:
		admin := ep.src.Admin
		dump := req.Dump
		if dump == "" {
			if dump, err = Dump(ctx, DumpSource{PgDump: j.Catalog.Config.Replication.PgDumpPath, Host: ep.srcNode.Host, Port: ep.srcNode.Port,
				Database: ep.srcNode.Database, User: nodeUser(ep.srcNode, admin), Password: nodePassword(ep.srcNode, admin), ServerVersionNum: versionNum,
				Snapshot: req.Snapshot}); err != nil {
				code := "58P01"
				if !strings.Contains(err.Error(), "not found") {
					code = "XX000"
				}
				return nil, job.Wrap(code, err, "%v", err)
			}
		}
		res.Dump = dump
		dumped := time.Now()
		plan, err := BuildPlan(dump)
		if err != nil {
			return nil, job.Wrap("XX000", err, "%v", err)
		}
		log.Debug("schema dumped and planned", "dump", dumped.Sub(start).Round(time.Millisecond), "plan", time.Since(dumped).Round(time.Millisecond),
			"pre", len(plan.Pre), "post", len(plan.Post))
		a.preamble = plan.Preamble
		res.Preamble = plan.Preamble
		if req.Phase == PhasePre {
			res.Widened = plan.Widened
		}
		stmts := plan.Statements(req.Phase)
		if req.Phase == PhasePost {
			var dropped int
			stmts, dropped = foreignKeysAs(stmts, j.Catalog.Config.General.ReshardingForeignKeys)
			if dropped > 0 {
				res.Warnings = append(res.Warnings, fmt.Sprintf("%d foreign keys not created on the shards ([general] resharding_foreign_keys = skip)", dropped))
			}
		}
		if req.DryRun {
			for _, t := range ep.targets {
				res.DryRun = append(res.DryRun, ShardSQL{Shard: t.Shard, SQL: sqlOf(stmts)})
			}
			res.Elapsed = time.Since(start)
			return res, nil
		}
		works = a.register(req.Phase, ep.targets, func(*Target) []*Statement { return stmts })
		// A shard that already holds objects gets its statements checked
		// against its own schema first: what is there is "already
		// present", not run again and counted as applied.
		if err := a.findPresent(ctx, works, ep.shards); err != nil {
			for _, w := range works {
				a.reg.RemoveSchema(w.items)
			}
			return nil, err
		}
	case PhaseCutover:
		perShard, err := cutoverStatements(ctx, srcConn, ep, j.Publication, log)
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
		stmts, warnings, err := postCutoverStatements(ctx, srcConn, ep, j.Publication)
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
		return nil, job.Errorf("22023", "unknown schema sync phase %q", req.Phase)
	}
	if req.ReadOnlyOff {
		a.preamble = append(a.preamble, "SET default_transaction_read_only = off")
	}
	log.Info("schema sync", "phase", req.Phase, "source", j.Source.Name, "destination", j.Destination.Name, "shards", len(ep.targets), "statements_per_shard", len(works[0].stmts))
	results, err := a.run(ctx, req.Phase, works)
	res.Shards = results
	res.Elapsed = time.Since(start)
	for _, r := range results {
		if r != nil && len(r.MissingRoles) > 0 {
			res.Warnings = append(res.Warnings, fmt.Sprintf("shard %d: roles missing on the destination (their GRANT/OWNER statements were skipped): %s", r.Shard, strings.Join(r.MissingRoles, ", ")))
		}
		if r != nil && r.Undumped != "" {
			res.Warnings = append(res.Warnings, fmt.Sprintf("shard %d: %s", r.Shard, r.UndumpedNote()))
		}
		if r != nil {
			for _, f := range r.ForeignKeys {
				res.ForeignKeys = append(res.ForeignKeys, f)
				res.Warnings = append(res.Warnings, f.String())
			}
		}
	}
	if err != nil {
		var se *StatementError
		if errors.As(err, &se) {
			return res, job.Wrap(se.Code, se, "SCHEMA_SYNC %s stopped: %s", req.Phase, se.Error()).
				WithHint("progress so far: %s. Fix the cause and run the phase again: statements already applied are skipped.", summarize(results))
		}
		var ue *unreachableError
		if errors.As(err, &ue) {
			return res, job.Wrap(ue.SQLState(), err, "%s", ue.Error()).
				WithHint("progress so far: %s. Run the phase again once the shard is back.", summarize(results))
		}
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return res, job.Wrap(pe.Code, err, "%v", err).WithHint("progress so far: %s", summarize(results))
		}
		return res, err
	}
	log.Info("schema sync done", "phase", req.Phase, "elapsed", res.Elapsed.Round(time.Millisecond), "summary", summarize(results))
	return res, nil
}

// foreignKeysAs applies [general] resharding_foreign_keys to POST's
// statements: "validate" keeps them all; "not_valid" drops the VALIDATE
// statements (a key on a partitioned table, which PostgreSQL 15 cannot add
// NOT VALID, is still added, and reported if it does not hold); "skip"
// drops every foreign key, and the comments on them. It returns the
// statements kept and how many foreign keys were dropped.
func foreignKeysAs(stmts []*Statement, mode string) ([]*Statement, int) {
	if mode != "not_valid" && mode != "skip" {
		return stmts, 0
	}
	skipped := map[string]bool{} // schema.table.constraint
	dropped := 0
	var out []*Statement
	for _, st := range stmts {
		switch {
		case st.Kind == "validate foreign key":
			continue
		case mode == "skip" && st.Kind == "foreign key":
			dropped++
			if st.fk != nil {
				skipped[st.fk.table.String()+"."+st.fk.name] = true
			}
			continue
		case st.Kind == "comment" && len(skipped) > 0:
			if on := commentedConstraint(st.SQL); on != "" && skipped[on] {
				continue
			}
		}
		out = append(out, st)
	}
	return out, dropped
}

// commentedConstraint returns schema.table.constraint of a COMMENT ON
// CONSTRAINT statement, or "".
func commentedConstraint(sql string) string {
	tree, err := pg_query.Parse(sql)
	if err != nil || len(tree.Stmts) != 1 {
		return ""
	}
	c := tree.Stmts[0].Stmt.GetCommentStmt()
	if c == nil || c.Objtype != pg_query.ObjectType_OBJECT_TABCONSTRAINT {
		return ""
	}
	var parts []string
	for _, n := range c.Object.GetList().GetItems() {
		parts = append(parts, n.GetString_().GetSval())
	}
	switch len(parts) {
	case 2:
		return "public." + parts[0] + "." + parts[1]
	case 3:
		return strings.Join(parts, ".")
	}
	return ""
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
