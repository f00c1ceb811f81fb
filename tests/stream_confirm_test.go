package tests

import (
	"fmt"
	"testing"
	"time"

	"github.com/reshard/reshard/sync/stream"
)

// A source transaction whose part on a shard changes nothing there (the
// probe of an UPDATE whose replica identity does not carry the sharding
// key, on the shard that does not hold the row) commits on that shard
// without a transaction id, so its replication origin does not advance.
// The stream must still confirm past it once idle: a cutover drains to the
// source's WAL position taken under its locks, and no later write reaches
// that shard to move its origin (the cutover aborted after
// cutover_timeout).
func TestStreamConfirmsPastNoOpPart(t *testing.T) {
	e, _ := streamEnv(t, "stnoop", 2, movesSchema, movesData)
	slot := "stnoop_slot"
	src := e.src[0]
	e.waitCaughtUp(t, 2*time.Minute)
	// An order and the shard that does not hold it.
	const id = "42"
	other := -1
	for k, d := range e.dst {
		if d.one(t, `SELECT count(*) FROM orders WHERE id = `+id) == "0" {
			other = k
		}
	}
	if other < 0 {
		t.Fatalf("order %s is on every shard", id)
	}
	origin := stream.OriginName(slot, other)
	progress := func() string {
		return e.dst[other].one(t, fmt.Sprintf(`SELECT coalesce(pg_replication_origin_progress('%s', true), '0/0')::text`, origin))
	}
	before := progress()
	// Committed durably: the WAL position read after it is past its end.
	src.exec(t, `SET synchronous_commit = on; UPDATE orders SET total = total + 1 WHERE id = `+id)
	target := src.one(t, `SELECT pg_current_wal_lsn()::text`)
	q := fmt.Sprintf(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' AND confirmed_flush_lsn >= '%s'::pg_lsn`, slot, target)
	deadline := time.Now().Add(time.Minute)
	for src.one(t, q) != "1" {
		if time.Now().After(deadline) {
			t.Fatalf("slot %s confirmed %s, not the source's position %s after the last write, within a minute (shard %d's origin at %s)",
				slot, slotConfirmed(t, e, slot), target, other, progress())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The shard's part was a no-op: its origin did not move (else the
	// test proves nothing).
	if after := progress(); after != before {
		t.Fatalf("shard %d's origin moved from %s to %s: its part of the UPDATE was not a no-op", other, before, after)
	}
	if state, msg := e.taskState(t); state != "streaming" {
		t.Fatalf("task: %s %s", state, msg)
	}
}
