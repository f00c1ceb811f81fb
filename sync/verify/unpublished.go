package verify

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/job"
)

// StatusNotPublished is the status of a table the shards have but the
// publication does not carry (an unlogged table, one left out of a FOR
// TABLE publication) whose rows differ: nothing will copy or stream them,
// so a cutover would leave them behind. It counts as a mismatch.
const StatusNotPublished = "not published"

// unpublished returns the tables schema sync created on the shards
// (destination shard 0 has them, and so does the source) whose rows the
// publication does not carry: unlogged tables, tables left out of a FOR
// TABLE publication. VERIFY compares them too, so that rows a cutover
// would leave behind are a failure, not an omission. A partition of such a
// partitioned table is compared with its root.
func unpublished(ctx context.Context, j *job.Job, src *pgx.Conn, log hclog.Logger) ([]*copier.Table, error) {
	covered, err := copier.Covered(ctx, src, j.Publication)
	if err != nil {
		return nil, err
	}
	dst, err := j.ConnectDestination(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer dst.Close(context.Background())
	rows, err := dst.Query(ctx, `SELECT n.nspname, c.relname, coalesce(pn.nspname || '.' || p.relname, '')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND c.relispartition
		LEFT JOIN pg_class p ON p.oid = i.inhparent LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace
		WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'reshard') AND n.nspname NOT LIKE 'pg\_%'
		  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
		ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("tables of destination shard 0: %w", err)
	}
	var names [][2]string
	for rows.Next() {
		var schema, name, parent string
		if err := rows.Scan(&schema, &name, &parent); err != nil {
			rows.Close()
			return nil, err
		}
		if covered[schema+"."+name] || (parent != "" && !covered[parent]) {
			continue
		}
		names = append(names, [2]string{schema, name})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []*copier.Table
	for _, n := range names {
		var onSource bool
		if err := src.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, pgx.Identifier{n[0], n[1]}.Sanitize()).Scan(&onSource); err != nil {
			return nil, err
		}
		if !onSource {
			log.Warn("a table on the shards is not on the source: not compared", "table", n[0]+"."+n[1])
			continue
		}
		t, err := copier.Describe(ctx, src, n[0], n[1], j.Destination)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}
