package verify

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/reshard/reshard/sharding"
)

// sums is one server's count and order-independent checksum (the sum of
// the rows' 64-bit hashes) of a range of a table, and on a destination
// shard the rows in it that belong on another shard.
type sums struct {
	count     int64
	sum       *big.Int
	misplaced int64
}

func zeroSums() sums { return sums{sum: new(big.Int)} }

func (a sums) plus(b sums) sums {
	return sums{count: a.count + b.count, sum: new(big.Int).Add(a.sum, b.sum), misplaced: a.misplaced + b.misplaced}
}

func (a sums) minus(b sums) sums {
	return sums{count: a.count - b.count, sum: new(big.Int).Sub(a.sum, b.sum), misplaced: a.misplaced - b.misplaced}
}

// same reports whether two sides hold the same rows (as far as a 64-bit
// checksum can tell).
func (a sums) same(b sums) bool { return a.count == b.count && a.sum.Cmp(b.sum) == 0 }

func total(ss []sums) sums {
	t := zeroSums()
	for _, s := range ss {
		t = t.plus(s)
	}
	return t
}

// parseSums reads a row of (count, sum, misplaced) starting at column i.
func parseSums(row [][]byte, i int) (sums, error) {
	if len(row) < i+3 {
		return sums{}, fmt.Errorf("%d columns, want %d", len(row), i+3)
	}
	n, err := strconv.ParseInt(string(row[i]), 10, 64)
	if err != nil {
		return sums{}, fmt.Errorf("count %q: %w", row[i], err)
	}
	sum, ok := new(big.Int).SetString(string(row[i+1]), 10)
	if !ok {
		return sums{}, fmt.Errorf("checksum %q", row[i+1])
	}
	m, err := strconv.ParseInt(string(row[i+2]), 10, 64)
	if err != nil {
		return sums{}, fmt.Errorf("misplaced %q: %w", row[i+2], err)
	}
	return sums{count: n, sum: sum, misplaced: m}, nil
}

// placement is where rows belong on the destination: the number of shards,
// and which one the sums are read on (-1 on the source, where nothing is
// misplaced).
type placement struct {
	shards, shard int
}

var onSource = placement{shard: -1}

// sumsSQL is the select list of a range's sums (its FROM is the table
// aliased x): count, checksum, misplaced rows.
func (t *table) sumsSQL(p placement) string {
	return "count(*), coalesce(sum(" + t.hash + "), 0)::text, " + t.misplacedSQL(p)
}

// hashPlaced tells whether the table's rows are placed by PostgreSQL's
// hash alone (no list or range mapping), so that SQL can check placement.
func (t *table) hashPlaced() bool { return !t.Omni && !t.Mapped }

// misplacedSQL counts rows on destination shard p.shard that the sharding
// function puts elsewhere: satisfies_hash_partition against a session's
// hash-partitioned parent of the key's type (placementSetup). Tables with
// list or range mappings are checked outside SQL (mappedPlacement).
func (t *table) misplacedSQL(p placement) string {
	if p.shard < 0 || !t.hashPlaced() {
		return "0"
	}
	return fmt.Sprintf("count(*) FILTER (WHERE %s)", t.notPlacedSQL(p))
}

// notPlacedSQL is true for a row of x that does not belong on p.shard.
func (t *table) notPlacedSQL(p placement) string {
	typ := keyType(t)
	return fmt.Sprintf("NOT satisfies_hash_partition('pg_temp.reshard_verify_hp_%s'::regclass, %d, %d, x.%s::%s)",
		typ, p.shards, p.shard, ident(t.ShardColumn), typ)
}

// placementSetup creates, in a destination session (before its snapshot:
// a read-only transaction cannot), the hash-partitioned parents
// satisfies_hash_partition takes, one per key type.
const placementSetup = `CREATE TEMP TABLE IF NOT EXISTS reshard_verify_hp_bigint (k bigint) PARTITION BY HASH (k);
CREATE TEMP TABLE IF NOT EXISTS reshard_verify_hp_text (k text) PARTITION BY HASH (k);
CREATE TEMP TABLE IF NOT EXISTS reshard_verify_hp_uuid (k uuid) PARTITION BY HASH (k)`

// keyType is the type the sharding key is hashed as.
func keyType(t *table) string {
	switch t.Router.Function().DataType() {
	case sharding.Text, sharding.Varchar:
		return "text"
	case sharding.UUID:
		return "uuid"
	}
	return "bigint" // integers of every width hash as int8
}

// rangeSumsSQL reads the sums of r's rows of t.
func (t *table) rangeSumsSQL(r keyRange, p placement) string {
	return "SELECT " + t.sumsSQL(p) + " FROM " + t.From() + " x" + t.where(r)
}

// batchSumsSQL reads the sums of several whole tables in one statement:
// one row per table, led by its index in the plan.
func batchSumsSQL(tables []*table, p placement) string {
	var b strings.Builder
	for i, t := range tables {
		if i > 0 {
			b.WriteString(" UNION ALL ")
		}
		fmt.Fprintf(&b, "SELECT %d, %s FROM %s x", t.index, t.sumsSQL(p), t.From())
	}
	return b.String()
}

// shardValuesSQL reads, on a destination shard, the distinct sharding
// keys of r's rows of a mapped table and how many rows hold each, for the
// sharding function to place.
func (t *table) shardValuesSQL(r keyRange) string {
	return fmt.Sprintf("SELECT x.%s::text, count(*) FROM %s x%s GROUP BY 1", ident(t.ShardColumn), t.From(), t.where(r))
}
