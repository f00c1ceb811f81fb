package tests

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/commands"
)

// TestPreflightNamesFullOriginStates: a destination shard whose
// replication state slots (max_replication_slots of them) are all taken by
// replication origins cannot track the stream's progress; RESHARD refuses
// before it copies anything, naming the shard and the setting (without the
// check the copy ran to its end and the stream then failed with 53400).
// Once the origins are dropped, RESHARD goes ahead and the shards equal
// the source.
func TestPreflightNamesFullOriginStates(t *testing.T) {
	e, src := sourceEnv(t, "pforig", 500, "")
	full := e.dst[1]
	var free int
	fmt.Sscan(full.one(t, `SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_origin_status)`), &free)
	if free <= 0 {
		t.Fatalf("the shared instance has no free replication state slot before the test (%d)", free)
	}
	fill := fmt.Sprintf(`SELECT pg_replication_origin_create('pforig_fill_' || g), pg_replication_origin_advance('pforig_fill_' || g, '0/1') FROM generate_series(1, %d) g`, free)
	drop := `SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname LIKE 'pforig_fill_%'`
	full.exec(t, fill)
	t.Cleanup(func() { _ = full.inst.Exec(context.Background(), full.db, drop) })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := e.exec.Execute(ctx, commands.Reshard{Route: e.route()})
	var ce *commands.Error
	if !errors.As(err, &ce) {
		t.Fatalf("RESHARD with a shard whose replication state slots are taken: %v", err)
	}
	text := ce.Message + " " + ce.Detail + " " + ce.Hint
	for _, want := range []string{"RESHARD refused", "cannot track 1 more replication origin", "max_replication_slots", full.db} {
		if !strings.Contains(text, want) {
			t.Fatalf("RESHARD's refusal does not say %q: %s", want, text)
		}
	}
	t.Logf("refused: %s", text)
	for k, d := range e.dst {
		if n := d.one(t, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`); n != "0" {
			t.Fatalf("shard %d holds %s tables after the refusal", k, n)
		}
	}
	if n := src.one(t, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); n != "0" {
		t.Fatalf("the refusal left %s slots on the source", n)
	}

	full.exec(t, drop)
	id := e.reshardStreaming(t)
	src.exec(t, `INSERT INTO customers (id, name, region) SELECT 100000 + g, 'after' || g, 'eu' FROM generate_series(1, 30) g`)
	e.waitCaughtUp(t, time.Minute)
	e.verifyCopy(t)
	if _, err := e.exec.Execute(ctx, commands.StopTask{Task: id}); err != nil {
		t.Fatal(err)
	}
}
