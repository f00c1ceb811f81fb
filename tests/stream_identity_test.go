package tests

import (
	"testing"
	"time"
)

// identitySchema: tables whose columns are GENERATED ALWAYS AS IDENTITY,
// as Chinook's are: the primary key, a second identity outside the key,
// one under REPLICA IDENTITY FULL, and a partitioned one; each with a
// TOASTed column the changes leave out when it does not change.
const identitySchema = `
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE invoices (
  id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  customer_id bigint NOT NULL,
  ticket bigint GENERATED ALWAYS AS IDENTITY (START WITH 1000),
  total numeric NOT NULL,
  doc text);
CREATE TABLE logs (
  n bigint GENERATED ALWAYS AS IDENTITY,
  customer_id bigint,
  msg text);
ALTER TABLE logs REPLICA IDENTITY FULL;
CREATE TABLE lines (
  id bigint GENERATED ALWAYS AS IDENTITY,
  customer_id bigint NOT NULL,
  qty int,
  doc text,
  PRIMARY KEY (id, customer_id)) PARTITION BY HASH (customer_id);
CREATE TABLE lines_0 PARTITION OF lines FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE lines_1 PARTITION OF lines FOR VALUES WITH (MODULUS 2, REMAINDER 1);`

// Changes of tables with GENERATED ALWAYS identity columns stream exactly:
// inserts keep the source's identity values (OVERRIDING SYSTEM VALUE),
// updates leave an identity column the change shows unchanged alone (no
// UPDATE may set it), an identity the source gave a new value (SET ... =
// DEFAULT) replaces the row, and rows move between shards, under the
// default replica identity and REPLICA IDENTITY FULL, with TOASTed
// values left out of the changes.
func TestStreamIdentityAlways(t *testing.T) {
	for _, shards := range []int{2, 3} {
		t.Run(map[int]string{2: "2 shards", 3: "3 shards"}[shards], func(t *testing.T) {
			name := map[int]string{2: "stident2", 3: "stident3"}[shards]
			e, _ := streamEnv(t, name, shards, identitySchema, `
				INSERT INTO countries VALUES ('NL', 'Netherlands');
				INSERT INTO invoices (customer_id, total, doc) SELECT g % 40, g, `+toasted("g")+` FROM generate_series(1, 300) g;
				INSERT INTO logs (customer_id, msg) SELECT g % 40, 'log ' || g FROM generate_series(1, 100) g;
				INSERT INTO lines (customer_id, qty, doc) SELECT g % 40, g, `+toasted("g")+` FROM generate_series(1, 200) g;`)
			for _, d := range e.dst {
				d.exec(t, `ALTER TABLE logs REPLICA IDENTITY FULL`)
			}
			src := e.src[0]
			for _, sql := range []string{
				// New rows: identity values drawn on the source.
				`INSERT INTO invoices (customer_id, total, doc) SELECT g % 40, g, 'new' FROM generate_series(1, 50) g`,
				`INSERT INTO logs (customer_id, msg) VALUES (3, 'new'), (3, 'new')`,
				`INSERT INTO lines (customer_id, qty) SELECT g % 40, g FROM generate_series(1, 30) g`,
				// In place: the key unchanged, the TOASTed doc left out.
				`UPDATE invoices SET total = total + 1 WHERE id % 3 = 0`,
				`UPDATE lines SET qty = qty * 2 WHERE id % 4 = 0`,
				// Moves to another customer (and shard), doc left out.
				`UPDATE invoices SET customer_id = customer_id + 1 WHERE id % 5 = 0`,
				`UPDATE lines SET customer_id = customer_id + 7 WHERE id % 6 = 0`,
				// Identity columns given new values: outside the key, and
				// the key itself.
				`UPDATE invoices SET ticket = DEFAULT, total = total + 2 WHERE id % 7 = 0`,
				`UPDATE invoices SET id = DEFAULT WHERE id % 11 = 0`,
				// A new ticket and a move in one statement, twice in a
				// transaction.
				`BEGIN; UPDATE invoices SET ticket = DEFAULT, customer_id = customer_id + 3 WHERE id = 2; UPDATE invoices SET customer_id = customer_id + 1, ticket = DEFAULT WHERE id = 2; COMMIT`,
				// REPLICA IDENTITY FULL: located by every column.
				`UPDATE logs SET msg = msg || '!' WHERE n % 3 = 0`,
				`UPDATE logs SET n = DEFAULT WHERE n % 5 = 0`,
				`UPDATE logs SET customer_id = customer_id + 1 WHERE n % 7 = 0`,
				`DELETE FROM logs WHERE ctid = (SELECT min(ctid) FROM logs WHERE msg = 'new')`,
				`DELETE FROM invoices WHERE id % 13 = 0`,
				`DELETE FROM lines WHERE id % 13 = 0`,
			} {
				src.exec(t, sql)
			}
			e.waitCaughtUp(t, time.Minute)
			if state, msg := e.taskState(t); state != "streaming" {
				t.Fatalf("task: %s %s", state, msg)
			}
			verifyPlaced(t, e, "invoices", "logs", "lines")
			if n := src.one(t, `SELECT count(*) FROM invoices WHERE ticket > 1350`); n == "0" {
				t.Fatal("no ticket was given a new value: the test proves nothing")
			}
		})
	}
}
