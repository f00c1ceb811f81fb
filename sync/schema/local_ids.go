package schema

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/sync/copier"
)

// Shard-local ids. After cutover the application writes to the shards
// directly, so a value a shard's column default hands out for a table's
// sharding key must belong on that shard. For every hash-sharded table
// whose sharding key takes its values from a sequence, the CUTOVER phase
// installs on shard k of N a generator that draws from the column's own
// sequence (already interleaved: INCREMENT BY N from offset k, so values
// stay unique across shards even when drawn by hand) and skips every value
// that does not hash to k, exactly as satisfies_hash_partition(N, k) sees
// it. Each draw lands on shard k with probability 1/N, so a default costs N
// sequence draws on average (docs/cutover.md gives the measured cost).
//
//   - serial and DEFAULT nextval(...) columns get the generator as their
//     default: reshard_local.nextval('seq', N, k);
//   - identity columns cannot take a default: a BEFORE INSERT trigger
//     replaces a value the identity just drew (it equals the session's
//     currval) that does not belong on k by one that does; a value the
//     application gives explicitly is left as it is.
//
// The stream's apply sessions run with session_replication_role = replica,
// so the trigger never fires for replicated rows. Everything lives in the
// schema reshard_local, which belongs to the application from cutover on
// (reshard's own state schema, reshard, is dropped when the migration
// ends).
const localSchema = "reshard_local"

// localKeyParent is an empty hash-partitioned table whose partition key is
// what satisfies_hash_partition needs to place a bigint.
const localKeyParent = localSchema + ".int8_key"

var localInfraSQL = []string{
	`CREATE SCHEMA IF NOT EXISTS ` + localSchema,
	`CREATE TABLE IF NOT EXISTS ` + localKeyParent + ` (k bigint) PARTITION BY HASH (k)`,
	`CREATE OR REPLACE FUNCTION ` + localSchema + `.nextval(seq regclass, shards int, shard int) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE v bigint;
BEGIN
	-- The next value of seq that hash-partitioning places on shard of shards.
	LOOP
		v := nextval(seq);
		IF satisfies_hash_partition('` + localKeyParent + `'::regclass, shards, shard, v) THEN
			RETURN v;
		END IF;
	END LOOP;
END $$`,
}

// keyColumn is a sharding key whose values come from a sequence, on the
// table that owns its default (the partition root for a partition).
type keyColumn struct {
	table, column string // quoted
	sequence      string // quoted, schema-qualified
	identity      bool
}

// sequenceKeys finds the hash-sharded tables of the publication whose
// sharding key takes its values from a sequence on the shards (shard is a
// connection to one of them).
func sequenceKeys(ctx context.Context, src, shard *pgx.Conn, publication string, dst *catalog.Cluster, log hclog.Logger) ([]keyColumn, error) {
	tables, err := copier.Tables(ctx, src, publication, dst)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []keyColumn
	for _, t := range tables {
		if t.Omni || t.ShardColumn == "" {
			continue
		}
		var k keyColumn
		err := shard.QueryRow(ctx, `
SELECT quote_ident(rn.nspname) || '.' || quote_ident(r.relname), quote_ident(a.attname), a.attidentity <> '',
       COALESCE((SELECT quote_ident(sn.nspname) || '.' || quote_ident(s.relname)
                 FROM pg_depend d JOIN pg_class s ON s.oid = d.objid JOIN pg_namespace sn ON sn.oid = s.relnamespace
                 WHERE a.attidentity <> '' AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                   AND d.refobjid = r.oid AND d.refobjsubid = a.attnum AND d.deptype = 'i' AND s.relkind = 'S' LIMIT 1),
                (SELECT quote_ident(sn.nspname) || '.' || quote_ident(s.relname)
                 FROM pg_attrdef ad JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                   JOIN pg_class s ON s.oid = d.refobjid JOIN pg_namespace sn ON sn.oid = s.relnamespace
                 WHERE a.attidentity = '' AND ad.adrelid = r.oid AND ad.adnum = a.attnum
                   AND d.refclassid = 'pg_class'::regclass AND s.relkind = 'S' LIMIT 1), '')
FROM pg_class r JOIN pg_namespace rn ON rn.oid = r.relnamespace
JOIN pg_attribute a ON a.attrelid = r.oid AND a.attname = $2 AND NOT a.attisdropped
WHERE r.oid = COALESCE(pg_partition_root(to_regclass($1)), to_regclass($1))`, t.Qualified(), t.ShardColumn).Scan(&k.table, &k.column, &k.identity, &k.sequence)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("the sequence behind %s.%s: %w", t, t.ShardColumn, err)
		}
		if k.sequence == "" || seen[k.table+"."+k.column] {
			continue
		}
		seen[k.table+"."+k.column] = true
		switch typ := t.Router.Function().DataType(); {
		case t.Mapped:
			log.Warn("sharding key with list or range mappings: its sequence is interleaved (ids unique across shards), but a shard's default may hand out keys that belong elsewhere", "table", t.String(), "column", t.ShardColumn)
			continue
		case typ != sharding.BigInt && typ != sharding.Integer && typ != sharding.SmallInt:
			log.Warn("sequence-backed sharding key not configured as an integer type: ids are interleaved, not placed", "table", t.String(), "column", t.ShardColumn)
			continue
		}
		out = append(out, k)
	}
	return out, nil
}

// localIDStatements are the statements that install shard-local ids for
// the keys on shard k of n.
func localIDStatements(keys []keyColumn, n, k int) []*Statement {
	if len(keys) == 0 {
		return nil
	}
	var out []*Statement
	for _, sql := range localInfraSQL {
		out = append(out, &Statement{SQL: sql, Kind: "shard-local ids", Phase: PhaseCutover})
	}
	for _, key := range keys {
		gen := fmt.Sprintf("%s.nextval(%s::regclass, %d, %d)", localSchema, quoteLiteral(key.sequence), n, k)
		if !key.identity {
			out = append(out, &Statement{
				SQL:  fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT %s", key.table, key.column, gen),
				Kind: "shard-local ids", Phase: PhaseCutover, Table: key.table,
			})
			continue
		}
		fn := localTriggerFunction(key)
		out = append(out,
			&Statement{SQL: fmt.Sprintf(`CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE drawn bool;
BEGIN
	-- Shard-local ids for the identity column %s of %s (shard %d of %d).
	IF NEW.%s IS NULL OR satisfies_hash_partition('%s'::regclass, %d, %d, NEW.%s::bigint) THEN
		RETURN NEW;
	END IF;
	BEGIN
		drawn := NEW.%s = currval(%s::regclass);
	EXCEPTION WHEN object_not_in_prerequisite_state THEN
		drawn := false; -- no value drawn in this session: the application gave it
	END;
	IF drawn THEN
		NEW.%s := %s;
	END IF;
	RETURN NEW;
END $$`, fn, key.column, key.table, k, n, key.column, localKeyParent, n, k, key.column, key.column, quoteLiteral(key.sequence), key.column, gen),
				Kind: "shard-local ids", Phase: PhaseCutover, Table: key.table},
			&Statement{SQL: fmt.Sprintf("CREATE OR REPLACE TRIGGER reshard_local_ids BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION %s()", key.table, fn),
				Kind: "shard-local ids", Phase: PhaseCutover, Table: key.table},
		)
	}
	return out
}

// localTriggerFunction names the trigger function of an identity key.
func localTriggerFunction(key keyColumn) string {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%s", key.table, key.column)
	return fmt.Sprintf("%s.ids_%016x", localSchema, h.Sum64())
}

func quoteLiteral(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}
