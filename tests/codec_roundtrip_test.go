package tests

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sharding"
)

const (
	roundTripSource = "sharding_rt_src"
	roundTripDest   = "sharding_rt_dst"
	roundTripRows   = 3000
)

// roundTripSchema is created in the source and in every destination. The
// table covers the types a copy meets: integers, numeric, text, bytea,
// jsonb, arrays, timestamptz, uuid, an enum and a composite, with NULLs in
// every column but id.
const roundTripSchema = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'very "happy"');
CREATE TYPE addr AS (street text, num int, tags text[]);
CREATE TABLE t (
	id    int8 PRIMARY KEY,
	k8    int8,
	k4    int4,
	k2    int2,
	num   numeric,
	txt   text,
	vc    varchar(64),
	raw   bytea,
	doc   jsonb,
	ints  int[],
	texts text[],
	ts    timestamptz,
	u     uuid,
	m     mood,
	a     addr
);
-- Widening: the source has int4/int2 where the destinations have int8.
CREATE TABLE w (id int4 PRIMARY KEY, k int4, s int2, note text);
`

const roundTripDestWiden = `
DROP TABLE w;
CREATE TABLE w (id int8 PRIMARY KEY, k int8, s int8, note text);
`

// roundTripData fills t with awkward values; i%N picks NULLs so that every
// column but id has some.
const roundTripData = `
INSERT INTO t
SELECT i,
	CASE WHEN i % 13 = 0 THEN NULL WHEN i % 101 = 0 THEN -9223372036854775808 + i WHEN i % 103 = 0 THEN 9223372036854775807 - i
	     ELSE hashint8extended(i, 7) END,
	CASE WHEN i % 11 = 0 THEN NULL ELSE hashint4(i) END,
	CASE WHEN i % 7 = 0 THEN NULL ELSE (hashint4(i) % 32768)::int2 END,
	CASE WHEN i % 9 = 0 THEN NULL WHEN i % 17 = 0 THEN 'NaN'::numeric
	     ELSE (hashint4(i)::numeric / 1000) * (10::numeric ^ (i % 30)) END,
	CASE i % 8 WHEN 0 THEN NULL WHEN 1 THEN E'tab\there' WHEN 2 THEN E'new\nline\r\n' WHEN 3 THEN E'back\\slash \\N \\.'
	     WHEN 4 THEN 'ünïcödé €𝄞 ' || i WHEN 5 THEN '' WHEN 6 THEN '\N' ELSE repeat(md5(i::text), i % 40) END,
	CASE WHEN i % 6 = 0 THEN NULL ELSE left(E'\\x41\t' || md5(i::text), 60) END,
	CASE WHEN i % 8 = 0 THEN NULL ELSE decode(md5(i::text), 'hex') || '\x005c090a'::bytea END,
	CASE WHEN i % 10 = 0 THEN NULL ELSE jsonb_build_object('i', i, 's', E'q"uo\\te\ttab\n', 'arr', jsonb_build_array(1, 'ü', NULL)) END,
	CASE WHEN i % 12 = 0 THEN NULL ELSE ARRAY[i, -i, NULL, 2147483647]::int[] END,
	CASE WHEN i % 14 = 0 THEN NULL ELSE ARRAY['a b', E'c\td', NULL, '{}', '"q"', E'\\', 'NULL', ''] END,
	CASE WHEN i % 15 = 0 THEN NULL WHEN i % 16 = 0 THEN 'infinity'::timestamptz
	     ELSE timestamptz '1999-12-31 23:59:59.999999+00' + i * interval '37 min 13.123456 s' END,
	CASE WHEN i % 5 = 0 THEN NULL ELSE md5(i::text || 'u')::uuid END,
	CASE WHEN i % 4 = 0 THEN NULL ELSE (enum_range(NULL::mood))[1 + i % 4] END,
	CASE WHEN i % 3 = 0 THEN NULL ELSE ROW(E'Main\tSt, "Apt" \\1', i, ARRAY['x', NULL])::addr END
FROM generate_series(1, 3000) i;
INSERT INTO w SELECT i * 7919 - 10000000, CASE WHEN i % 9 = 0 THEN NULL ELSE hashint4(i) END,
	CASE WHEN i % 5 = 0 THEN NULL ELSE (hashint4(i) % 32768)::int2 END, 'n' || i
FROM generate_series(1, 2000) i;
`

// roundTripEnv holds the source and the three destination shards, one per
// instance.
type roundTripEnv struct {
	src  *pgx.Conn
	dsts []*pgx.Conn
}

func setupRoundTrip(ctx context.Context, t *testing.T) *roundTripEnv {
	t.Helper()
	src := cluster.Instances[0]
	if err := src.CreateDatabase(ctx, roundTripSource); err != nil {
		t.Fatal(err)
	}
	if err := src.Exec(ctx, roundTripSource, roundTripSchema+roundTripData); err != nil {
		t.Fatal(err)
	}
	env := &roundTripEnv{}
	var err error
	if env.src, err = src.Connect(ctx, roundTripSource); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.src.Close(context.Background()) })
	for _, inst := range cluster.Instances {
		if err := inst.CreateDatabase(ctx, roundTripDest); err != nil {
			t.Fatal(err)
		}
		if err := inst.Exec(ctx, roundTripDest, roundTripSchema+roundTripDestWiden); err != nil {
			t.Fatal(err)
		}
		conn, err := inst.Connect(ctx, roundTripDest)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		env.dsts = append(env.dsts, conn)
	}
	return env
}

// splitCopy copies the query's rows from the source into table on every
// destination through a Splitter: either pushed by CopyTo into the Splitter
// (push) or pulled by the Splitter from a pipe (pull). Each destination is
// fed by a pipe into CopyFrom.
func (e *roundTripEnv) splitCopy(ctx context.Context, copyOut, copyIn string, f sharding.Format,
	router *sharding.Router, opts sharding.Options, push bool) (sharding.Stats, error) {
	pipes := make([]*io.PipeWriter, len(e.dsts))
	dst := make([]io.Writer, len(e.dsts))
	errs := make([]error, len(e.dsts))
	var wg sync.WaitGroup
	for i, conn := range e.dsts {
		pr, pw := io.Pipe()
		pipes[i], dst[i] = pw, pw
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = conn.PgConn().CopyFrom(ctx, pr, copyIn)
			pr.CloseWithError(errs[i]) // unblock the splitter if the copy failed
		}()
	}
	s, err := sharding.NewSplitter(f, router, dst, opts)
	if err != nil {
		return sharding.Stats{}, err
	}
	if push {
		_, err = e.src.PgConn().CopyTo(ctx, s, copyOut)
	} else {
		pr, pw := io.Pipe()
		go func() {
			_, err := e.src.PgConn().CopyTo(ctx, pw, copyOut)
			pw.CloseWithError(err)
		}()
		_, err = s.ReadFrom(pr)
		pr.CloseWithError(err)
	}
	if err == nil {
		err = s.Close()
	}
	for _, pw := range pipes {
		if err != nil {
			pw.CloseWithError(err) // abort: the destinations must not commit
		} else {
			pw.Close()
		}
	}
	wg.Wait()
	if err != nil {
		return s.Stats(), err
	}
	for i, e := range errs {
		if e != nil {
			return s.Stats(), fmt.Errorf("destination %d: %w", i, e)
		}
	}
	return s.Stats(), nil
}

// rowDigests returns md5 of each row's text, by id.
func rowDigests(ctx context.Context, t *testing.T, conn *pgx.Conn, query string) map[int64]string {
	t.Helper()
	rows, err := conn.Query(ctx, query)
	if err != nil {
		t.Fatal(err)
	}
	m := map[int64]string{}
	for rows.Next() {
		var id int64
		var d string
		if err := rows.Scan(&id, &d); err != nil {
			t.Fatal(err)
		}
		m[id] = d
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// checkPlacement asserts that every row of table on shard k satisfies
// satisfies_hash_partition for remainder k of the destinations' count,
// through a parent partitioned by hash on keyType, and (a control) not for
// remainder k+1.
func checkPlacement(ctx context.Context, t *testing.T, dsts []*pgx.Conn, table, column, keyType string) {
	t.Helper()
	n := len(dsts)
	for k, conn := range dsts {
		parent := "hp_" + keyType
		if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (k %s) PARTITION BY HASH (k)", parent, keyType)); err != nil {
			t.Fatal(err)
		}
		var total, wrong, control int64
		q := fmt.Sprintf(`SELECT count(*),
			count(*) FILTER (WHERE NOT satisfies_hash_partition('%[1]s'::regclass, %[2]d, %[3]d, %[4]s::%[6]s)),
			count(*) FILTER (WHERE satisfies_hash_partition('%[1]s'::regclass, %[2]d, %[5]d, %[4]s::%[6]s))
			FROM %[7]s`, parent, n, k, column, (k+1)%n, keyType, table)
		if err := conn.QueryRow(ctx, q).Scan(&total, &wrong, &control); err != nil {
			t.Fatal(err)
		}
		if total == 0 {
			t.Fatalf("shard %d holds no rows", k)
		}
		if wrong != 0 || control != 0 {
			t.Fatalf("shard %d: %d of %d rows do not belong there (control %d)", k, wrong, total, control)
		}
	}
}

// checkUnion asserts that the shards together hold exactly the source's
// rows: the same count and order-independent checksum, and row by row the
// same text.
func checkUnion(ctx context.Context, t *testing.T, env *roundTripEnv, digestQuery, sumQuery string, want int) {
	t.Helper()
	srcRows := rowDigests(ctx, t, env.src, digestQuery)
	if len(srcRows) != want {
		t.Fatalf("source has %d rows, want %d", len(srcRows), want)
	}
	var srcCount int64
	var srcSum string
	if err := env.src.QueryRow(ctx, sumQuery).Scan(&srcCount, &srcSum); err != nil {
		t.Fatal(err)
	}
	var count int64
	sums := "0"
	for k, conn := range env.dsts {
		var c int64
		var s string
		if err := conn.QueryRow(ctx, sumQuery).Scan(&c, &s); err != nil {
			t.Fatal(err)
		}
		count += c
		if err := env.src.QueryRow(ctx, "SELECT ($1::numeric + $2::numeric)::text", sums, s).Scan(&sums); err != nil {
			t.Fatal(err)
		}
		for id, d := range rowDigests(ctx, t, conn, digestQuery) {
			sd, ok := srcRows[id]
			switch {
			case !ok:
				t.Fatalf("shard %d: row %d is not in the source, or is on two shards", k, id)
			case sd != d:
				t.Fatalf("shard %d: row %d differs from the source", k, id)
			}
			delete(srcRows, id)
		}
	}
	if len(srcRows) != 0 || count != srcCount || sums != srcSum {
		t.Fatalf("shards hold %d rows (checksum %s), source %d (checksum %s); %d source rows missing",
			count, sums, srcCount, srcSum, len(srcRows))
	}
}

// TestCopyRoundTrip copies a table covering every common type from the
// source into three shards through the codec, in both COPY formats and
// sharded on an int8, a text and a uuid column, then checks that the union
// equals the source and that every row sits on its shard by PostgreSQL's
// own hash partitioning.
func TestCopyRoundTrip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := setupRoundTrip(ctx, t)
	keys := []struct {
		column string
		pos    int
		typ    sharding.DataType
		sql    string
	}{
		{"k8", 1, sharding.BigInt, "int8"},
		{"txt", 5, sharding.Text, "text"},
		{"u", 12, sharding.UUID, "uuid"},
	}
	const (
		digests = "SELECT id, md5(t::text) FROM t"
		sum     = "SELECT count(*), coalesce(sum(hashtext(t::text)::numeric), 0)::text FROM t"
	)
	for _, f := range []sharding.Format{sharding.FormatBinary, sharding.FormatText} {
		for i, key := range keys {
			push := i%2 == 0
			if f == sharding.FormatText {
				push = !push
			}
			name := fmt.Sprintf("%v/%s/push=%v", f, key.column, push)
			t.Run(name, func(t *testing.T) {
				for _, conn := range env.dsts {
					if _, err := conn.Exec(ctx, "TRUNCATE t"); err != nil {
						t.Fatal(err)
					}
				}
				router, err := sharding.NewRouter(sharding.Table{Column: key.pos, Type: key.typ, Shards: len(env.dsts)})
				if err != nil {
					t.Fatal(err)
				}
				opt := ""
				if f == sharding.FormatBinary {
					opt = " (FORMAT binary)"
				}
				st, err := env.splitCopy(ctx, "COPY t TO STDOUT"+opt, "COPY t FROM STDIN"+opt, f, router,
					sharding.Options{Columns: 15}, push)
				if err != nil {
					t.Fatal(err)
				}
				if st.Rows != roundTripRows {
					t.Fatalf("split %d rows, want %d", st.Rows, roundTripRows)
				}
				checkUnion(ctx, t, env, digests, sum, roundTripRows)
				checkPlacement(ctx, t, env.dsts, "t", key.column, key.sql)
			})
		}
	}
}

// TestCopyRoundTripWidening copies int4/int2 source columns into int8
// destination columns: the binary codec widens the fields in flight (a
// plain binary COPY would be rejected by PostgreSQL); text needs nothing.
func TestCopyRoundTripWidening(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := setupRoundTrip(ctx, t)
	router, err := sharding.NewRouter(sharding.Table{Column: 1, Type: sharding.BigInt, Shards: len(env.dsts)})
	if err != nil {
		t.Fatal(err)
	}
	const (
		digests = "SELECT id, md5(ROW(id::int8, k::int8, s::int8, note)::text) FROM w"
		sum     = "SELECT count(*), coalesce(sum(hashtext(ROW(id::int8, k::int8, s::int8, note)::text)::numeric), 0)::text FROM w"
	)
	for _, f := range []sharding.Format{sharding.FormatBinary, sharding.FormatText} {
		t.Run(f.String(), func(t *testing.T) {
			for _, conn := range env.dsts {
				if _, err := conn.Exec(ctx, "TRUNCATE w"); err != nil {
					t.Fatal(err)
				}
			}
			opt := ""
			if f == sharding.FormatBinary {
				opt = " (FORMAT binary)"
			}
			_, err := env.splitCopy(ctx, "COPY w TO STDOUT"+opt, "COPY w FROM STDIN"+opt, f, router,
				sharding.Options{Widen: []int{0, 1, 2}}, true)
			if err != nil {
				t.Fatal(err)
			}
			checkUnion(ctx, t, env, digests, sum, 2000)
			checkPlacement(ctx, t, env.dsts, "w", "k", "int8")
		})
	}
	// Without widening, PostgreSQL refuses the 4-byte fields: the widening
	// above is what made the binary copy work.
	for _, conn := range env.dsts {
		if _, err := conn.Exec(ctx, "TRUNCATE w"); err != nil {
			t.Fatal(err)
		}
	}
	_, err = env.splitCopy(ctx, "COPY w TO STDOUT (FORMAT binary)", "COPY w FROM STDIN (FORMAT binary)",
		sharding.FormatBinary, router, sharding.Options{}, true)
	if err == nil {
		t.Fatal("binary copy of int4 into int8 without widening succeeded")
	}
	for k, conn := range env.dsts {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM w").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("shard %d committed %d rows of a failed copy", k, n)
		}
	}
}
