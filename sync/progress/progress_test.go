package progress

import (
	"errors"
	"testing"
	"time"
)

func TestSchemaRegistry(t *testing.T) {
	r := NewRegistry()
	a := &SchemaStatement{Shard: 0, SQL: "CREATE INDEX a"}
	b := &SchemaStatement{Shard: 1, SQL: "CREATE INDEX b"}
	c := &SchemaStatement{Shard: 1, SQL: "CREATE INDEX c"}
	r.AddSchema(a, b, c)
	rows := r.Schema()
	if len(rows) != 3 || rows[0].State != StatePending || !rows[0].StartedAt.IsZero() {
		t.Fatalf("after add: %+v", rows)
	}
	r.Start(a)
	time.Sleep(2 * time.Millisecond)
	r.Finish(b, StateFailed, errors.New("boom"))
	r.Start(c)
	r.Finish(c, StateSkipped, nil)
	rows = r.Schema()
	if len(rows) != 2 || rows[0].SQL != "CREATE INDEX a" || rows[0].State != StateRunning || rows[0].Elapsed <= 0 {
		t.Fatalf("running row: %+v", rows)
	}
	if rows[1].State != StateFailed || rows[1].Error != "boom" {
		t.Fatalf("failed row: %+v", rows[1])
	}
	r.Finish(a, StateDone, nil)
	if rows := r.Schema(); len(rows) != 1 {
		t.Fatalf("done and skipped statements still listed: %+v", rows)
	}
	r.RemoveSchema([]*SchemaStatement{a, b, c})
	if rows := r.Schema(); len(rows) != 0 {
		t.Fatalf("after remove: %+v", rows)
	}
}
