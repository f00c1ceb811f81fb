package tests

import (
	"testing"
	"time"
)

// Tables of shapes real schemas have (PostgREST's test schema has both):
// a column of a type with no binary input or output function (isn's
// isbn: the copy's units go again in text), and a table of no columns
// (CREATE TABLE t (), rows inserted with DEFAULT VALUES). Both copy, and
// their later rows stream; then the shards equal the source.
func TestCopyTypeWithoutBinaryAndTableWithoutColumns(t *testing.T) {
	e, _ := streamEnv(t, "cpshape", 2, `
		CREATE EXTENSION IF NOT EXISTS isn;
		CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
		CREATE TABLE books (id int PRIMARY KEY, customer_id bigint, code isbn, title text);
		CREATE TABLE no_columns ();
		ALTER TABLE no_columns REPLICA IDENTITY FULL;`, `
		INSERT INTO countries VALUES ('NL', 'Netherlands');
		INSERT INTO books SELECT g, g % 50, (d || CASE WHEN k = 10 THEN 'X' ELSE k::text END)::isbn, 'b' || g
		  FROM (SELECT g, d, (11 - (SELECT sum((11 - i) * substr(d, i, 1)::int) FROM generate_series(1, 9) i) % 11) % 11 AS k
		    FROM (SELECT g, '030' || lpad(g::text, 6, '0') AS d FROM generate_series(1, 300) g) b) c;
		INSERT INTO no_columns DEFAULT VALUES; INSERT INTO no_columns DEFAULT VALUES; INSERT INTO no_columns DEFAULT VALUES;`)
	src := e.src[0]
	src.exec(t, `INSERT INTO books VALUES (1001, 7, '0-306-40615-2', 'streamed');
		UPDATE books SET title = 'moved', customer_id = customer_id + 1 WHERE id % 5 = 0;
		INSERT INTO no_columns DEFAULT VALUES;`)
	e.waitCaughtUp(t, time.Minute)
	if state, msg := e.taskState(t); state != "streaming" {
		t.Fatalf("task: %s %s", state, msg)
	}
	verifyPlaced(t, e, "books")
	want := src.one(t, `SELECT count(*) FROM no_columns`)
	if want != "4" {
		t.Fatalf("source has %s rows of no_columns, want 4", want)
	}
	for k, d := range e.dst {
		if got := d.one(t, `SELECT count(*) FROM no_columns`); got != want {
			t.Errorf("shard %d has %s rows of no_columns (omni), the source %s", k, got, want)
		}
	}
}
