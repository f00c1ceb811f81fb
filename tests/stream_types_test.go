package tests

import (
	"testing"
	"time"
)

// typesSchema: a REPLICA IDENTITY FULL table with a column of every
// built-in type family, arrays, ranges, a composite, an enum, a domain and
// the extension types citext, hstore and ltree. Many have no equality
// operator (json, xml, point, line, polygon, ...) or one that is not
// identity (citext, box compares areas).
const typesSchema = `
CREATE EXTENSION IF NOT EXISTS citext;
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE EXTENSION IF NOT EXISTS ltree;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (p point, label text);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE everything (
  customer_id bigint,
  b bool, i2 int2, i4 int4, i8 int8, n numeric(12,3), f4 float4, f8 float8, m money,
  c char(3), vc varchar(10), t text, by bytea,
  d date, tm time, tmz timetz, ts timestamp, tsz timestamptz, iv interval,
  u uuid, j json, jb jsonb, x xml,
  pt point, ln line, ls lseg, bx box, pa path, pg polygon, ci circle,
  ip inet, cid cidr, mac macaddr, mac8 macaddr8,
  bt bit(4), vb varbit(8), tsv tsvector, tsq tsquery,
  r4 int4range, rts tstzrange, mr int4multirange,
  ai int[], apt point[], aj json[], atx text[],
  comp pair, e mood, dom posint, o oid, lsn pg_lsn, snap pg_snapshot,
  ct citext, hs hstore, lt ltree
);
ALTER TABLE everything REPLICA IDENTITY FULL;`

// typesRow is one row of every type, varied by g.
const typesRow = `SELECT g % 50 + 1,
  g % 2 = 0, g::int2, g, g::int8 * 1000000000, g / 7.0, g / 3.0, g / 7.0, g * 1.5,
  'a' || g % 3, 'v' || g, 'text ' || g, decode(md5(g::text), 'hex'),
  DATE '2025-01-01' + g, TIME '10:00' + g * INTERVAL '1 minute', TIMETZ '10:00+02' , TIMESTAMP '2025-01-01 10:00' + g * INTERVAL '1 hour',
  TIMESTAMPTZ '2025-01-01 10:00+00' + g * INTERVAL '1 second', g * INTERVAL '1 day 2 hours',
  md5(g::text)::uuid, ('{"g": ' || g || ', "a": [1, 2]}')::json, ('{"g": ' || g || '}')::jsonb, ('<r g="' || g || '">x</r>')::xml,
  point(g, g / 3.0), line(point(0, 0), point(1, g + 1)), lseg(point(0, 0), point(g, 1)), box(point(0, 0), point(g, 2)),
  path(polygon(box(point(0, 0), point(g, 1)))), polygon(box(point(0, 0), point(1, g))), circle(point(g, 0), g),
  ('10.0.' || g % 255 || '.1')::inet, ('10.' || g % 255 || '.0.0/16')::cidr, '08:00:2b:01:02:03'::macaddr, '08:00:2b:01:02:03:04:05'::macaddr8,
  (g % 16)::bit(4), (g % 200)::bit(8)::varbit, to_tsvector('simple', 'word ' || g), to_tsquery('simple', 'word & w' || g),
  int4range(g, g + 10), tstzrange(TIMESTAMPTZ '2025-01-01 00:00+00', TIMESTAMPTZ '2025-01-01 00:00+00' + g * INTERVAL '1 hour'),
  int4multirange(int4range(1, g + 2), int4range(g + 5, g + 9)),
  ARRAY[g, NULL, g + 1], ARRAY[point(g, 1), point(1, g)], ARRAY[('{"g": ' || g || '}')::json], ARRAY['a', NULL, 'b ' || g],
  ROW(point(g, 2), 'p' || g)::pair, (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, (g + 1)::posint, g::oid, ('0/' || to_hex(g * 4096))::pg_lsn,
  pg_snapshot '10:20:10,14,15',
  ('Word' || g)::citext, hstore(ARRAY['k', 'g'], ARRAY['v', g::text]), ('top.sub' || g % 4 || '.leaf')::ltree
FROM generate_series(1, 60) g`

// Rows of a REPLICA IDENTITY FULL table are located by every column,
// whatever its type: updated (in place and moved to another shard) and
// deleted, with NULLs and identical rows (one of two deleted, one of two
// updated), the shards end equal to the source.
func TestStreamFullIdentityEveryType(t *testing.T) {
	e, _ := streamEnv(t, "sttypes", 2, typesSchema, `
		INSERT INTO countries VALUES ('NL', 'Netherlands');
		INSERT INTO everything `+typesRow+`;
		-- identical rows, and rows of NULLs
		INSERT INTO everything SELECT * FROM everything WHERE customer_id <= 5;
		INSERT INTO everything (customer_id) SELECT g FROM generate_series(1, 4) g;
		INSERT INTO everything (customer_id) VALUES (1), (1);
		INSERT INTO everything (customer_id, j, pt, t) VALUES (7, '[]', '(1,1)', NULL), (7, '[]', '(1,1)', NULL);`)
	src := e.src[0]
	// As SCHEMA_SYNC POST would: the shards publish every table (PRE
	// copied the publication), so they need the replica identity too.
	for _, d := range e.dst {
		d.exec(t, `ALTER TABLE everything REPLICA IDENTITY FULL`)
	}
	for _, sql := range []string{
		// In place, every column compared.
		`UPDATE everything SET t = 'updated ' || i4 WHERE i4 % 5 = 0`,
		`UPDATE everything SET f8 = -0.0, f4 = 'NaN', n = 1.5 WHERE i4 % 7 = 0`,
		`DELETE FROM everything WHERE i4 % 9 = 0`,
		// One of two identical rows deleted, one of two updated.
		`DELETE FROM everything WHERE ctid = (SELECT min(ctid) FROM everything WHERE i4 = 2)`,
		`UPDATE everything SET t = 'one of two' WHERE ctid = (SELECT min(ctid) FROM everything WHERE i4 = 3)`,
		// Rows of NULLs, and rows equal in their non-NULL columns.
		`DELETE FROM everything WHERE ctid = (SELECT min(ctid) FROM everything WHERE customer_id = 1 AND i4 IS NULL)`,
		`UPDATE everything SET t = 'was null' WHERE ctid = (SELECT min(ctid) FROM everything WHERE customer_id = 2 AND i4 IS NULL)`,
		`UPDATE everything SET ct = 'X' WHERE ctid = (SELECT min(ctid) FROM everything WHERE customer_id = 7)`,
		// Moved to another shard (the whole old row locates it there).
		`UPDATE everything SET customer_id = customer_id + 1 WHERE i4 % 4 = 1`,
		`UPDATE everything SET customer_id = 40 WHERE ctid = (SELECT min(ctid) FROM everything WHERE i4 = 4)`,
		// citext: 'Word1' and 'WORD1' are equal to =, not the same row.
		`INSERT INTO everything (customer_id, ct) VALUES (9, 'Same'), (9, 'SAME')`,
		`DELETE FROM everything WHERE ct::text = 'SAME'`,
	} {
		src.exec(t, sql)
	}
	e.waitCaughtUp(t, time.Minute)
	if state, msg := e.taskState(t); state != "streaming" {
		t.Fatalf("task: %s %s", state, msg)
	}
	verifyPlaced(t, e, "everything")
	if n := src.one(t, `SELECT count(*) FROM everything WHERE t LIKE 'updated%' OR t IN ('one of two', 'was null')`); n == "0" {
		t.Fatal("no updated rows to compare: the test proves nothing")
	}
}
