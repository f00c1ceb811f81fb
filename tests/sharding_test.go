package tests

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sharding"
)

// hashModuli are the shard counts TestHashMatchesPostgres checks.
var hashModuli = []int{2, 3, 4, 7, 16}

// hashKey is one key of TestHashMatchesPostgres: its value for pgx, and
// its binary and text wire forms.
type hashKey struct {
	value        any // nil for NULL
	binary, text []byte
}

func intKeys(r *rand.Rand, n int, bits int) []hashKey {
	var vals []int64
	switch bits {
	case 16:
		for v := math.MinInt16; v <= math.MaxInt16; v++ {
			vals = append(vals, int64(v)) // every smallint
		}
	case 32:
		vals = append(vals, math.MinInt32, math.MaxInt32, math.MinInt32+1, math.MaxInt32-1)
	case 64:
		vals = append(vals, math.MinInt64, math.MaxInt64, math.MinInt64+1, math.MaxInt64-1,
			math.MinInt32-1, math.MaxInt32+1, 1<<32, -(1 << 32), -(1<<32)-1)
	}
	vals = append(vals, 0, -1, 1, 42, -42)
	for len(vals) < n {
		var v int64
		switch r.IntN(3) {
		case 0:
			v = int64(r.Uint64())
		case 1:
			v = r.Int64N(20001) - 10000
		default:
			v = int64(int32(r.Uint32()))
		}
		switch bits {
		case 16:
			v = int64(int16(v))
		case 32:
			v = int64(int32(v))
		}
		vals = append(vals, v)
	}
	keys := make([]hashKey, 0, len(vals)+3)
	for _, v := range vals {
		k := hashKey{text: strconv.AppendInt(nil, v, 10)}
		switch bits {
		case 16:
			k.value, k.binary = int16(v), binary.BigEndian.AppendUint16(nil, uint16(v))
		case 32:
			k.value, k.binary = int32(v), binary.BigEndian.AppendUint32(nil, uint32(v))
		default:
			k.value, k.binary = v, binary.BigEndian.AppendUint64(nil, uint64(v))
		}
		keys = append(keys, k)
	}
	return append(keys, hashKey{}, hashKey{}, hashKey{}) // NULLs
}

func textKeys(r *rand.Rand, n int) []hashKey {
	alphabet := []rune("abcXYZ019 _-\t\n\\'\"%é€ü𝄞中文ß\u00a0\u200b\U0010FFFF\x01\x7f")
	strs := []string{"", " ", "hello", "a", "\\N", "\\", "é", "€", "𝄞", strings.Repeat("x", 1000), strings.Repeat("ü", 300)}
	for len(strs) < n {
		var b strings.Builder
		for range r.IntN(40) {
			b.WriteRune(alphabet[r.IntN(len(alphabet))])
		}
		strs = append(strs, b.String())
	}
	keys := make([]hashKey, 0, len(strs)+3)
	for _, s := range strs {
		keys = append(keys, hashKey{value: s, binary: []byte(s), text: []byte(s)})
	}
	return append(keys, hashKey{}, hashKey{}, hashKey{})
}

func uuidKeys(r *rand.Rand, n int) []hashKey {
	us := [][16]byte{{}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		{0x55, 0x0e, 0x84, 0x00, 0xe2, 0x9b, 0x41, 0xd4, 0xa7, 0x16, 0x44, 0x66, 0x55, 0x44, 0x00, 0x00}}
	for len(us) < n {
		var u [16]byte
		binary.LittleEndian.PutUint64(u[:8], r.Uint64())
		binary.LittleEndian.PutUint64(u[8:], r.Uint64())
		us = append(us, u)
	}
	keys := make([]hashKey, 0, len(us)+3)
	for i, u := range us {
		text := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
		switch i % 3 { // the other spellings PostgreSQL accepts
		case 1:
			text = "{" + strings.ToUpper(text) + "}"
		case 2:
			text = strings.ReplaceAll(text, "-", "")
		}
		keys = append(keys, hashKey{value: u, binary: append([]byte(nil), u[:]...), text: []byte(text)})
	}
	return append(keys, hashKey{}, hashKey{}, hashKey{})
}

// TestHashMatchesPostgres checks Go placement against PostgreSQL's
// satisfies_hash_partition for every sharding data type: for each key and
// shard count n, PostgreSQL must agree that the key belongs to remainder
// goShard(key, n) of a parent table partitioned BY HASH on that type, and
// (as a control that the check can fail) must not agree for the next
// remainder.
func TestHashMatchesPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst := cluster.Instances[0]
	const db = "sharding_hash"
	if err := inst.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	conn, err := inst.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	const perType = 100_000
	// A new seed each run (more keys over time), printed so that a failure
	// replays with RESHARD_HASH_SEED=<seed>.
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("RESHARD_HASH_SEED"); v != "" {
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("RESHARD_HASH_SEED=%q: %v", v, err)
		}
	}
	t.Logf("keys seeded with %d (replay: RESHARD_HASH_SEED=%d)", seed, seed)
	r := rand.New(rand.NewPCG(seed, 99))
	types := []struct {
		sqlType string
		typ     sharding.DataType
		keys    func() []hashKey
	}{
		{"bigint", sharding.BigInt, func() []hashKey { return intKeys(r, perType, 64) }},
		{"integer", sharding.Integer, func() []hashKey { return intKeys(r, perType, 32) }},
		{"smallint", sharding.SmallInt, func() []hashKey { return intKeys(r, perType, 16) }},
		{"text", sharding.Text, func() []hashKey { return textKeys(r, perType) }},
		{"varchar", sharding.Varchar, func() []hashKey { return textKeys(r, perType) }},
		{"uuid", sharding.UUID, func() []hashKey { return uuidKeys(r, perType) }},
	}
	for _, tt := range types {
		t.Run(tt.sqlType, func(t *testing.T) {
			keys := tt.keys()
			if len(keys) < perType {
				t.Fatalf("only %d keys", len(keys))
			}
			fns := make([]*sharding.Function, len(hashModuli))
			for i, n := range hashModuli {
				if fns[i], err = sharding.NewFunction(tt.typ, n, nil, sharding.DefaultAuto); err != nil {
					t.Fatal(err)
				}
			}
			rows := make([][]any, len(keys))
			for i, k := range keys {
				row := make([]any, 1+len(hashModuli))
				row[0] = k.value
				for j, fn := range fns {
					sb, err := fn.Shard(sharding.FormatBinary, k.binary, k.value == nil)
					if err != nil {
						t.Fatalf("key %q: %v", k.text, err)
					}
					st, err := fn.Shard(sharding.FormatText, k.text, k.value == nil)
					if err != nil {
						t.Fatalf("key %q: %v", k.text, err)
					}
					if sb != st {
						t.Fatalf("key %q, %d shards: binary form on %d, text form on %d", k.text, hashModuli[j], sb, st)
					}
					row[1+j] = int32(sb)
				}
				rows[i] = row
			}

			parent := "p_" + tt.sqlType
			table := "k_" + tt.sqlType
			var cols, bad, control []string
			for _, n := range hashModuli {
				cols = append(cols, fmt.Sprintf("s%d int4", n))
				bad = append(bad, fmt.Sprintf("NOT satisfies_hash_partition('%s'::regclass, %d, s%d, k)", parent, n, n))
				control = append(control, fmt.Sprintf("satisfies_hash_partition('%s'::regclass, %d, (s%d + 1) %% %d, k)", parent, n, n, n))
			}
			ddl := fmt.Sprintf("CREATE TABLE %s (k %s) PARTITION BY HASH (k); CREATE TABLE %s (k %s, %s)",
				parent, tt.sqlType, table, tt.sqlType, strings.Join(cols, ", "))
			if _, err := conn.Exec(ctx, ddl); err != nil {
				t.Fatal(err)
			}
			colNames := []string{"k"}
			for _, n := range hashModuli {
				colNames = append(colNames, fmt.Sprintf("s%d", n))
			}
			copied, err := conn.CopyFrom(ctx, pgx.Identifier{table}, colNames, pgx.CopyFromRows(rows))
			if err != nil {
				t.Fatal(err)
			}
			if copied != int64(len(rows)) {
				t.Fatalf("copied %d rows of %d", copied, len(rows))
			}
			var total, nulls, wrong, controlHits int64
			q := fmt.Sprintf(`SELECT count(*), count(*) FILTER (WHERE k IS NULL),
				count(*) FILTER (WHERE %s), count(*) FILTER (WHERE %s) FROM %s`,
				strings.Join(bad, " OR "), strings.Join(control, " OR "), table)
			if err := conn.QueryRow(ctx, q).Scan(&total, &nulls, &wrong, &controlHits); err != nil {
				t.Fatal(err)
			}
			if total != int64(len(keys)) || nulls != 3 {
				t.Fatalf("%d rows, %d NULL keys in the table", total, nulls)
			}
			if wrong != 0 {
				var sample []string
				rs, err := conn.Query(ctx, fmt.Sprintf("SELECT k::text FROM %s WHERE %s LIMIT 5", table, strings.Join(bad, " OR ")))
				if err == nil {
					for rs.Next() {
						var s *string
						_ = rs.Scan(&s)
						if s != nil {
							sample = append(sample, strconv.Quote(*s))
						}
					}
					rs.Close()
				}
				t.Fatalf("%d of %d keys placed differently from PostgreSQL, e.g. %v", wrong, total, sample)
			}
			if controlHits != 0 {
				t.Fatalf("control: %d keys also satisfy the next remainder", controlHits)
			}
			t.Logf("%d keys x %d shard counts agree with satisfies_hash_partition", total, len(hashModuli))
		})
	}
}
