package schema

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// postCutoverStatements prepares reverse replication (shards -> source): the
// publication exists on every shard with the source publication's tables,
// and every published table can be received by the source (same columns)
// and published by the shards (a primary key or replica identity). Findings
// that do not stop reverse replication are returned as warnings.
func postCutoverStatements(ctx context.Context, src *pgx.Conn, ep *endpoints, publication string) ([]*Statement, []string, error) {
	var all, ins, upd, del, trunc, viaRoot bool
	err := src.QueryRow(ctx, `SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication WHERE pubname = $1`, publication).
		Scan(&all, &ins, &upd, &del, &trunc, &viaRoot)
	if err != nil {
		return nil, nil, fmt.Errorf("read publication %q on the source: %w", publication, err)
	}
	tables, err := publishedTables(ctx, src, publication)
	if err != nil {
		return nil, nil, err
	}
	var ops []string
	for _, o := range []struct {
		on   bool
		name string
	}{{ins, "insert"}, {upd, "update"}, {del, "delete"}, {trunc, "truncate"}} {
		if o.on {
			ops = append(ops, o.name)
		}
	}
	// FOR ALL TABLES needs a superuser; the shards' schema admin may
	// only be the owner of the tables it created: then the publication
	// lists them.
	var super bool
	if err := ep.shards[0].QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
		return nil, nil, fmt.Errorf("role of the schema admin on the shards: %w", err)
	}
	var create string
	if all && super {
		create = fmt.Sprintf("CREATE PUBLICATION %s FOR ALL TABLES", quoteIdent(publication))
	} else if len(tables) > 0 {
		quoted := make([]string, len(tables))
		for i, t := range tables {
			quoted[i] = quoteQualified(t.schema, t.name)
		}
		create = fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", quoteIdent(publication), strings.Join(quoted, ", "))
	} else {
		create = fmt.Sprintf("CREATE PUBLICATION %s", quoteIdent(publication))
	}
	create += fmt.Sprintf(" WITH (publish = '%s'", strings.Join(ops, ", "))
	if viaRoot {
		create += ", publish_via_partition_root = true"
	}
	create += ")"
	stmts := []*Statement{{
		SQL: create, Kind: "publication", Phase: PhasePostCutover,
		Exists: &Check{SQL: "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", Args: []any{publication}},
	}}

	// Checks on shard 0 against the source.
	var warnings []string
	shard := ep.shards[0]
	for _, t := range tables {
		srcCols, err := columnNames(ctx, src, t)
		if err != nil {
			return nil, nil, err
		}
		dstCols, err := columnNames(ctx, shard, t)
		if err != nil {
			return nil, nil, err
		}
		if len(dstCols) == 0 {
			warnings = append(warnings, fmt.Sprintf("%s is published on the source but missing on the shards", t))
			continue
		}
		if strings.Join(srcCols, ",") != strings.Join(dstCols, ",") {
			warnings = append(warnings, fmt.Sprintf("%s: columns differ between source (%s) and shards (%s): reverse replication cannot apply to it", t, strings.Join(srcCols, ", "), strings.Join(dstCols, ", ")))
		}
		var identity bool
		err = shard.QueryRow(ctx, `SELECT c.relreplident IN ('f') OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
			OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))
			FROM pg_class c WHERE c.oid = to_regclass($1)`, quoteQualified(t.schema, t.name)).Scan(&identity)
		if err != nil {
			return nil, nil, fmt.Errorf("replica identity of %s: %w", t, err)
		}
		if !identity {
			warnings = append(warnings, fmt.Sprintf("%s has no primary key or replica identity on the shards: updates and deletes cannot be replicated back", t))
		}
	}
	return stmts, warnings, nil
}

func publishedTables(ctx context.Context, conn *pgx.Conn, publication string) ([]qname, error) {
	rows, err := conn.Query(ctx, `SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2`, publication)
	if err != nil {
		return nil, fmt.Errorf("tables of publication %q: %w", publication, err)
	}
	defer rows.Close()
	var out []qname
	for rows.Next() {
		var q qname
		if err := rows.Scan(&q.schema, &q.name); err != nil {
			return nil, err
		}
		out = append(out, q)
	}
	return out, rows.Err()
}

func columnNames(ctx context.Context, conn *pgx.Conn, t qname) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`, quoteQualified(t.schema, t.name))
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", t, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	sort.Strings(out)
	return out, rows.Err()
}
