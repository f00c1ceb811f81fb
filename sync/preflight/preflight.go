// Package preflight is the check that runs before RESHARD, COPY_DATA and
// REPLICATE answer: it reads the source and destination shards, changes
// nothing, and either refuses the command with the full list of what to
// fix (a job.Error whose Problems name each thing) or lets it start,
// returning the findings that do not stop it (foreign keys that can point
// across shards, tables the publication cannot carry) as notices.
package preflight

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/ddl"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/schema"
)

// Command is the command being checked.
type Command string

// The commands preflight checks.
const (
	Reshard   Command = "RESHARD"
	CopyData  Command = "COPY_DATA"
	Replicate Command = "REPLICATE"
)

// Request is one preflight.
type Request struct {
	Command Command
	// Slot is the slot the command will use: RESHARD's route slot, the
	// slot given to COPY_DATA (empty: a new one) or REPLICATE.
	Slot string
	// SyncOnly: a copy without streaming (no primary key needed).
	SyncOnly bool
}

// Report is what a passed preflight found.
type Report struct {
	// Resume tells that the command continues an earlier copy with the
	// same slot.
	Resume bool
	// Notices are findings that do not stop the command, each saying what
	// will happen.
	Notices []string
	// CrossShardForeignKeys lists the foreign keys that can point across
	// shards (also among Notices).
	CrossShardForeignKeys []string
	// Unpublished lists the source's tables the publication does not
	// carry (also among Notices).
	Unpublished []string
}

// Run checks everything the command needs, on every source and
// destination shard, without changing anything. A refusal is a job.Error
// (SQLSTATE 55000, or the connection's) listing every problem.
func Run(ctx context.Context, j *job.Job, req Request) (*Report, error) {
	src, err := j.ConnectSources(ctx)
	if err != nil {
		return nil, refuse(req, err)
	}
	defer src.Close()
	dst, err := j.ConnectDestinations(ctx)
	if err != nil {
		return nil, refuse(req, err)
	}
	defer dst.Close()
	rep := &Report{}
	mode := copier.CheckFresh
	if req.Slot != "" {
		if rep.Resume, err = copier.Resumable(ctx, dst[0], req.Slot); err != nil {
			return nil, err
		}
	}
	switch {
	case req.Command == Replicate:
		mode = copier.CheckStream
	case rep.Resume:
		mode = copier.CheckResume
	case req.Command == Reshard:
		mode = copier.CheckSchemaFirst
	}
	slot := req.Slot
	if slot == "" {
		slot = copier.NewSlotName() // only to look it up: a fresh name is free
	}
	tables, problems, err := copier.Check(ctx, j, src, dst, copier.CheckRequest{Slot: slot, Mode: mode, SyncOnly: req.SyncOnly})
	if err != nil {
		return nil, err
	}
	if ddl.Enabled(j) && req.Command != Replicate {
		// [general] resharding_ddl = "replicate": the event triggers need
		// a superuser on every source shard.
		for i, sh := range j.Source.Shards {
			p, err := ddl.Problem(ctx, src[i], "source "+sh.Primary.String(), j.Publication)
			if err != nil {
				return nil, err
			}
			if p != "" {
				problems = append(problems, p)
			}
		}
	}
	if req.Command == Reshard {
		p, err := pgDumpProblem(ctx, j, src[0])
		if err != nil {
			return nil, err
		}
		if p != "" {
			problems = append(problems, p)
		}
	}
	if len(tables) == 0 && len(problems) == 0 {
		problems = append(problems, fmt.Sprintf("publication %q has no tables on the source", j.Publication))
	}
	if len(problems) > 0 {
		return nil, job.Refused("55000", fmt.Sprintf("%s refused, nothing was created; fix first", req.Command), problems)
	}
	if err := rep.findings(ctx, j, src[0], tables); err != nil {
		return nil, err
	}
	return rep, nil
}

// refuse wraps a connection failure into the command's refusal.
func refuse(req Request, err error) error {
	code := job.Code(err)
	if code == "" {
		code = "08006"
	}
	return job.Wrap(code, err, "%s refused: %v; nothing was created", req.Command, err)
}

// pgDumpProblem checks that schema sync's pg_dump is there and not older
// than the source server.
func pgDumpProblem(ctx context.Context, j *job.Job, conn *pgx.Conn) (string, error) {
	major, err := schema.PgDumpMajor(ctx, j.Catalog.Config.Replication.PgDumpPath)
	if err != nil {
		return err.Error(), nil
	}
	var server int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int / 10000").Scan(&server); err != nil {
		return "", fmt.Errorf("source server version: %w", err)
	}
	if major < server {
		return fmt.Sprintf("pg_dump %d (%s) is older than the source server (PostgreSQL %d): install pg_dump %d or newer and set [replication] pg_dump_path", major, j.Catalog.Config.Replication.PgDumpPath, server, server), nil
	}
	return "", nil
}

// findings collects the notices: foreign keys that can point across
// shards, tables the publication cannot carry, and what
// publish_via_partition_root means for TRUNCATE.
func (rep *Report) findings(ctx context.Context, j *job.Job, conn *pgx.Conn, tables []*copier.Table) error {
	covered, err := copier.Covered(ctx, conn, j.Publication)
	if err != nil {
		return err
	}
	unpublished, err := unpublishedTables(ctx, conn, covered)
	if err != nil {
		return err
	}
	fks, err := foreignKeys(ctx, conn)
	if err != nil {
		return err
	}
	routes := map[string]*copier.Table{}
	for _, t := range tables {
		routes[t.String()] = t
	}
	routeOf := func(rel string) (*copier.Table, error) {
		if t, ok := routes[rel]; ok {
			return t, nil
		}
		i := strings.IndexByte(rel, '.')
		t, err := copier.Describe(ctx, conn, rel[:i], rel[i+1:], j.Destination)
		if err != nil {
			return nil, err
		}
		routes[rel] = t
		return t, nil
	}
	refersTo := map[string][]string{} // unpublished table -> FKs pointing at it
	for _, fk := range fks {
		if !covered[fk.table] {
			continue
		}
		if !covered[fk.ref] {
			refersTo[fk.ref] = append(refersTo[fk.ref], fmt.Sprintf("%s on %s", fk.name, fk.table))
			continue
		}
		from, err := routeOf(fk.table)
		if err != nil {
			return err
		}
		to, err := routeOf(fk.ref)
		if err != nil {
			return err
		}
		if why := crossShard(fk, from, to); why != "" {
			rep.CrossShardForeignKeys = append(rep.CrossShardForeignKeys, fk.name+" on "+fk.table)
			rep.Notices = append(rep.Notices, fmt.Sprintf("foreign key %s on %s (%s) references %s (%s) and can point across shards: %s. At SCHEMA_SYNC POST, [general] resharding_foreign_keys = %q decides: %s",
				fk.name, fk.table, strings.Join(fk.cols, ", "), fk.ref, strings.Join(fk.refCols, ", "), why, foreignKeysMode(j), foreignKeysEffect(j)))
		}
	}
	for _, u := range unpublished {
		rep.Unpublished = append(rep.Unpublished, u.name)
		msg := fmt.Sprintf("%s %s is not carried by publication %q (%s): %s", u.kind, u.name, j.Publication, u.why, u.effect)
		if refs := refersTo[u.name]; len(refs) > 0 {
			sort.Strings(refs)
			msg += fmt.Sprintf("; published tables reference it (%s): those foreign keys fail validation on the shards unless the table is filled there", strings.Join(refs, ", "))
		}
		rep.Notices = append(rep.Notices, msg)
	}
	var viaRoot bool
	if err := conn.QueryRow(ctx, `SELECT pubviaroot FROM pg_publication WHERE pubname = $1`, j.Publication).Scan(&viaRoot); err != nil {
		return fmt.Errorf("read publication %q: %w", j.Publication, err)
	}
	if viaRoot {
		var roots []string
		for _, t := range tables {
			if t.Partitioned {
				roots = append(roots, t.String())
			}
		}
		if len(roots) > 0 {
			rep.Notices = append(rep.Notices, fmt.Sprintf("publication %q publishes through partition roots (%s): PostgreSQL does not publish a TRUNCATE of a single partition, only of the root; truncate the partition on the shards too, or use DELETE",
				j.Publication, strings.Join(roots, ", ")))
		}
	}
	return nil
}

// foreignKeysMode is [general] resharding_foreign_keys.
func foreignKeysMode(j *job.Job) string { return j.Catalog.Config.General.ReshardingForeignKeys }

func foreignKeysEffect(j *job.Job) string {
	switch foreignKeysMode(j) {
	case "not_valid":
		return "it is created NOT VALID and not validated"
	case "skip":
		return "it is not created on the shards"
	}
	return "it is validated on every shard, and left NOT VALID (reported with its rows without a referenced row) where that fails"
}

// crossShard says why rows of a foreign key can live on other shards than
// the rows they reference, or "" when they cannot.
func crossShard(fk foreignKey, from, to *copier.Table) string {
	switch {
	case to.Omni:
		return "" // the referenced table is whole on every shard
	case from.Omni:
		return fmt.Sprintf("the omni table %s is whole on every shard, but each shard holds only its own rows of %s (sharded by %s)", from, to, to.ShardColumn)
	}
	for i, c := range fk.cols {
		if c == from.ShardColumn && i < len(fk.refCols) && fk.refCols[i] == to.ShardColumn {
			if from.Mapped || to.Mapped {
				return fmt.Sprintf("both are sharded by the key (%s -> %s), but list or range mappings place them", c, fk.refCols[i])
			}
			if family(from) != family(to) {
				return fmt.Sprintf("the sharding columns %s and %s are hashed as different types", c, fk.refCols[i])
			}
			return ""
		}
	}
	if from.ShardColumn == to.ShardColumn {
		return fmt.Sprintf("both are sharded by %s, which the foreign key does not carry: a row and the row it references can hash to different shards", from.ShardColumn)
	}
	return fmt.Sprintf("%s is sharded by %s and %s by %s, which the foreign key does not pair", from, from.ShardColumn, to, to.ShardColumn)
}

// family groups sharding types that hash alike (every integer width hashes
// as int8; varchar as text).
func family(t *copier.Table) string {
	switch t.Router.Function().DataType() {
	case sharding.Text, sharding.Varchar:
		return "text"
	case sharding.UUID:
		return "uuid"
	}
	return "integer"
}

// foreignKey is one foreign key of the source, as declared (not the
// copies PostgreSQL makes on partitions).
type foreignKey struct {
	name, table, ref string
	cols, refCols    []string
}

func foreignKeys(ctx context.Context, conn *pgx.Conn) ([]foreignKey, error) {
	rows, err := conn.Query(ctx, `SELECT c.conname, fn.nspname || '.' || f.relname, rn.nspname || '.' || r.relname,
		ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o),
		ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o)
		FROM pg_constraint c
		JOIN pg_class f ON f.oid = c.conrelid JOIN pg_namespace fn ON fn.oid = f.relnamespace
		JOIN pg_class r ON r.oid = c.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
		WHERE c.contype = 'f' AND c.conparentid = 0
		ORDER BY 2, 1`)
	if err != nil {
		return nil, fmt.Errorf("foreign keys of the source: %w", err)
	}
	defer rows.Close()
	var out []foreignKey
	for rows.Next() {
		var fk foreignKey
		if err := rows.Scan(&fk.name, &fk.table, &fk.ref, &fk.cols, &fk.refCols); err != nil {
			return nil, err
		}
		out = append(out, fk)
	}
	return out, rows.Err()
}

// unpublished is a table of the source's schemas that the publication does
// not carry.
type unpublished struct {
	name, kind, why, effect string
}

func unpublishedTables(ctx context.Context, conn *pgx.Conn, covered map[string]bool) ([]unpublished, error) {
	rows, err := conn.Query(ctx, `SELECT n.nspname || '.' || c.relname, c.relkind::text, c.relpersistence::text, c.relispartition,
			coalesce((SELECT pn.nspname || '.' || p.relname FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
				JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE i.inhrelid = c.oid AND c.relispartition), '')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p', 'm', 'f') AND c.relpersistence <> 't'
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'reshard') AND n.nspname NOT LIKE 'pg\_%'
		  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
		ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("tables of the source: %w", err)
	}
	defer rows.Close()
	var out []unpublished
	for rows.Next() {
		var name, kind, persistence, parent string
		var partition bool
		if err := rows.Scan(&name, &kind, &persistence, &partition, &parent); err != nil {
			return nil, err
		}
		if covered[name] || (parent != "" && !covered[parent]) {
			continue // a partition of an uncovered tree is named with its root
		}
		u := unpublished{name: name, kind: "table", why: "not in the publication",
			effect: "schema sync creates it on the shards, empty; its rows are not copied or streamed, and VERIFY lists it as not published"}
		switch {
		case kind == "m":
			u.kind, u.why, u.effect = "materialized view", "a publication carries no materialized view", "schema sync creates it WITH NO DATA; REFRESH MATERIALIZED VIEW it on every shard"
		case kind == "f":
			u.kind, u.why, u.effect = "foreign table", "a publication carries no foreign table", "schema sync creates it on the shards; its rows stay on the foreign server"
		case persistence == "u":
			u.kind, u.why = "unlogged table", "a publication never carries unlogged tables"
		case kind == "p":
			u.kind = "partitioned table"
		case partition:
			u.kind = "partition"
		}
		out = append(out, u)
	}
	return out, rows.Err()
}
