package tests

import (
	"fmt"
	"testing"
	"time"
)

// TestDDLLargeTransactionSpilled: with resharding_ddl = "replicate", a
// transaction the source sends whole at its commit (its
// logical_decoding_work_mem above it) and larger than a batch is held like
// any other: in a spool, spilled to disk past resharding_stream_memory
// (here 1 MiB), and the DDL stage applies it read back in parts, each
// captured statement at its place among the row changes: a column added
// before 30,000 rows that have it, a table created with 15,000 rows
// (CREATE TABLE AS: its rows arrive before its statement, across parts,
// and are applied after it), a column dropped, then updates of the rows.
// The shards end equal to the source, catalog and rows, and SHOW DDL lists
// the three statements applied on both shards.
func TestDDLLargeTransactionSpilled(t *testing.T) {
	e, src := ddlEnv(t, "ddlspill", "resharding_stream_memory = 1048576")
	// Sent whole at its commit, not streamed while in progress.
	src.exec(t, fmt.Sprintf(`ALTER DATABASE %s SET logical_decoding_work_mem = '1GB'`, src.db))
	e.reshardStreaming(t)
	src.exec(t, `BEGIN;
		ALTER TABLE tickets ADD COLUMN note text;
		INSERT INTO tickets (customer_id, status, body, note)
			SELECT 1 + g % 200, 'busy', 'big ' || g, repeat('n', 40) FROM generate_series(1, 30000) g;
		CREATE TABLE tickets_even AS SELECT id, customer_id, body FROM tickets WHERE id % 2 = 0;
		ALTER TABLE tickets DROP COLUMN note;
		UPDATE tickets SET body = body || ' (after the drop)' WHERE id % 3 = 0;
		COMMIT`)
	e.caughtUp(t, 2*time.Minute)
	slots := e.exec.Registry.Slots()
	if len(slots) != 1 || slots[0].Spilled == 0 {
		t.Fatalf("the transaction did not go to disk: %+v", slots)
	}
	if got := src.one(t, `SELECT coalesce(sum(s.stream_txns), 0)::bigint FROM pg_stat_replication_slots s
		JOIN pg_replication_slots r USING (slot_name) WHERE r.database = current_database()`); got != "0" {
		t.Fatalf("the source streamed %s transactions while in progress: the test means one sent whole at its commit", got)
	}
	keys := map[string]string{"tickets_even": "customer_id"}
	for k, v := range ddlKeys {
		keys[k] = v
	}
	e.compareDDL(t, keys)
	for k, d := range e.dst {
		if n := d.one(t, `SELECT count(*) FROM tickets_even`); n == "0" {
			t.Errorf("shard %d: tickets_even is empty", k)
		}
	}
	e.checkDDLApplied(t, 3)
}
