package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/ddl"
	"github.com/reshard/reshard/sync/job"
)

// relation is a source table as pgoutput describes it, and how it is routed.
type relation struct {
	id       uint32
	schema   string
	name     string
	columns  []string
	key      []int // replica-identity column positions
	identity uint8 // 'd' default, 'f' full, 'i' index, 'n' nothing
	router   *sharding.Router
	shardCol int // position of the sharding column, -1 for omni tables
	// sameOnEverySource: every source shard holds the whole table (an omni
	// table): its changes are taken from source shard 0 only.
	sameOnEverySource bool
	qualified         string
	// types are the destination's column types (format_type), by position.
	types []string
	// always marks, by position, the destination's GENERATED ALWAYS
	// identity columns: an INSERT gives them their values with OVERRIDING
	// SYSTEM VALUE, and no UPDATE can set them (see identitySet and
	// plan.replace); anyAlways caches whether there is one, for the
	// updates of every other table.
	always    []bool
	anyAlways bool
	// partitioned: the destination table is partitioned (its rows' ctids
	// are unique per partition only).
	partitioned bool
	// ignore marks reshard's own state tables: their changes are skipped.
	ignore bool
	// ddl marks the source's captured-statement table (reshard.ddl, with
	// resharding_ddl = "replicate"): its rows are statements for the DDL
	// stage.
	ddl bool
	// plan builds and caches the table's statements.
	plan *plan
}

func (r *relation) String() string { return r.schema + "." + r.name }

// identifiesShard tells whether the replica identity carries the sharding
// column: then an UPDATE that changes it comes with the old tuple (and is
// applied as a move), and one without an old tuple keeps its shard.
func (r *relation) identifiesShard() bool {
	if r.identity == 'f' {
		return true
	}
	for _, k := range r.key {
		if k == r.shardCol {
			return true
		}
	}
	return false
}

// shardOf returns the shard of a row by its sharding column, or AllShards.
func (r *relation) shardOf(row []value) (int, error) {
	if r.router.Omni() {
		return sharding.AllShards, nil
	}
	if r.shardCol >= len(row) {
		return 0, fmt.Errorf("%s: row has %d columns, sharding column is #%d", r, len(row), r.shardCol+1)
	}
	v := row[r.shardCol]
	if v.toasted {
		return 0, errNoKey
	}
	return r.router.Shard(sharding.FormatText, v.data, v.null)
}

var errNoKey = errors.New("sharding key not in the tuple")

// stateSchema is where reshard keeps its own state on a destination.
const stateSchema = "reshard"

// relations is the relation cache: pgoutput describes a table (a Relation
// message) before its first change in a session and again whenever the
// table changes, and every change names its table by id.
type relations struct {
	byID map[uint32]*relation
	// captureDDL: reshard.ddl's rows are captured statements, not ignored.
	captureDDL bool
}

func newRelations() *relations { return &relations{byID: map[uint32]*relation{}} }

// describe records the table a Relation message describes (its quoted
// name, columns, replica identity and key columns) and returns it. It is
// not routed yet: a relation shaper does that.
func (rs *relations) describe(m *pglogrepl.RelationMessageV2) *relation {
	r := describe(m)
	if rs.captureDDL && r.schema == ddl.Schema && r.name == ddl.Table {
		r.ignore, r.ddl = false, true
	}
	rs.byID[r.id] = r
	return r
}

// describe builds the relation a Relation message describes.
func describe(m *pglogrepl.RelationMessageV2) *relation {
	r := &relation{id: m.RelationID, schema: m.Namespace, name: m.RelationName, identity: m.ReplicaIdentity}
	r.qualified = pgx.Identifier{r.schema, r.name}.Sanitize()
	for i, c := range m.Columns {
		r.columns = append(r.columns, c.Name)
		if c.Flags&1 != 0 {
			r.key = append(r.key, i)
		}
	}
	// reshard's own bookkeeping on a shard (copy and task state) is
	// published with FOR ALL TABLES, but it is not application data.
	r.ignore = r.schema == stateSchema
	return r
}

// lookup returns the relation a change names.
func (rs *relations) lookup(id uint32) (*relation, error) {
	r, ok := rs.byID[id]
	if !ok {
		return nil, job.Errorf("XX000", "change for unknown relation %d", id)
	}
	return r, nil
}

// shaper checks a described relation against the destination (the tables
// exist with every column: DDL is not replicated), reads the destination's
// column types, routes the relation by the sharding rules and builds its
// plan.
type shaper struct {
	// conn is a connection to destination shard 0, free for queries.
	conn *pgx.Conn
	dst  *catalog.Cluster
	// sourceRules, for reverse replication, tells which tables the source
	// shards hold whole (see Request.SourceRules).
	sourceRules *catalog.Cluster
}

// prepare makes a described relation ready for routing.
func (s shaper) prepare(ctx context.Context, r *relation) error {
	if r.ignore {
		return nil
	}
	rows, err := s.conn.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod), attidentity = 'a' FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`, r.qualified)
	if err != nil {
		return fmt.Errorf("read the columns of %s on destination shard 0: %w", r, err)
	}
	types := map[string]string{}
	always := map[string]bool{}
	for rows.Next() {
		var n, typ string
		var a bool
		if err := rows.Scan(&n, &typ, &a); err != nil {
			rows.Close()
			return err
		}
		types[n], always[n] = typ, a
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the columns of %s on destination shard 0: %w", r, err)
	}
	var missing []string
	for _, c := range r.columns {
		if _, ok := types[c]; !ok {
			missing = append(missing, c)
		}
	}
	present := len(types) > 0
	if !present && len(r.columns) == 0 {
		// A table of no columns (CREATE TABLE t ()), or none at all.
		if err := s.conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, r.qualified).Scan(&present); err != nil {
			return fmt.Errorf("read %s on destination shard 0: %w", r, err)
		}
	}
	if !present {
		return job.Errorf("42P01", "table %s is not on the destination: DDL is not replicated; create it on every shard (SCHEMA_SYNC PRE) and restart the stream", r)
	}
	if len(missing) > 0 {
		return job.Errorf("42703", "table %s changed on the source: columns %s are missing on the destination; run ALTER TABLE %s ADD COLUMN ... on every shard (DDL is not replicated) and restart the stream",
			r, strings.Join(missing, ", "), r.qualified)
	}
	for _, c := range r.columns {
		r.types = append(r.types, types[c])
		r.always = append(r.always, always[c])
		r.anyAlways = r.anyAlways || always[c]
	}
	// A partition follows the rules naming the tables above it.
	ancestors, err := copier.Ancestors(ctx, s.conn, r.qualified)
	if err != nil {
		return err
	}
	if err := s.conn.QueryRow(ctx, `SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass($1)`, r.qualified).Scan(&r.partitioned); err != nil {
		return fmt.Errorf("read %s on destination shard 0: %w", r, err)
	}
	bases, err := copier.BaseTypes(ctx, s.conn, r.qualified)
	if err != nil {
		return fmt.Errorf("read %s on destination shard 0: %w", r, err)
	}
	router, col, err := copier.RouteColumns(r.schema, r.name, ancestors, r.columns, bases, s.dst)
	if err != nil {
		return err
	}
	r.router, r.shardCol = router, col
	r.sameOnEverySource = col < 0
	if s.sourceRules != nil {
		// Reverse replication: whether the source shards (the new shards)
		// each hold part of the table or a whole copy follows the forward
		// rules, not the destination's.
		_, fcol, err := copier.RouteColumns(r.schema, r.name, ancestors, r.columns, bases, s.sourceRules)
		if err != nil {
			return err
		}
		r.sameOnEverySource = fcol < 0
	}
	r.plan = newPlan(r)
	return nil
}
