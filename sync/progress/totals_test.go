package progress

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestCopyTotalsNeverDecrease(t *testing.T) {
	r := NewRegistry()
	a := &TableCopy{Task: "1", Schema: "public", Table: "a"}
	b := &TableCopy{Task: "1", Schema: "public", Table: "b"}
	r.AddCopies(a, b)
	r.StartCopy(a)
	a.Add(10, 100)
	a.Reset() // retried from scratch: the discarded attempt still counts
	a.Add(4, 40)
	b.Add(1, 5)
	want := []CopyTotal{{"public", "a", 14, 140}, {"public", "b", 1, 5}}
	if got := r.CopyTotals(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("totals %v, want %v", got, want)
	}
	if rows := r.Copies(); rows[0].Rows != 4 || rows[0].Bytes != 40 {
		t.Fatalf("the unit's own counters after a retry: %+v", rows[0])
	}
	r.RemoveCopies("1")
	if got := r.CopyTotals(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("totals after the task ended %v, want %v", got, want)
	}
	c := &TableCopy{Task: "2", Schema: "public", Table: "a"}
	r.AddCopies(c)
	c.Add(1, 1)
	want[0] = CopyTotal{"public", "a", 15, 141}
	if got := r.CopyTotals(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("totals with a second task %v, want %v", got, want)
	}
}

func TestStatementAndErrorCounts(t *testing.T) {
	r := NewRegistry()
	stmts := []*SchemaStatement{{Database: "dst", Shard: 0, Phase: "PRE"}, {Database: "dst", Shard: 0, Phase: "PRE"}, {Database: "dst", Shard: 1, Phase: "PRE"}}
	r.AddSchema(stmts...)
	r.Finish(stmts[0], StateDone, nil)
	r.Finish(stmts[1], StateDone, nil)
	r.Finish(stmts[2], StateFailed, &pgconn.PgError{Code: "42P07"})
	r.RemoveSchema(stmts)
	counts := map[string]int64{}
	for _, c := range r.StatementCounts() {
		counts[fmt.Sprintf("%s/%d/%s/%s", c.Database, c.Shard, c.Phase, c.State)] = c.Count
	}
	if len(counts) != 2 || counts["dst/0/PRE/done"] != 2 || counts["dst/1/PRE/failed"] != 1 {
		t.Fatalf("statement counts %v", counts)
	}

	u := &TableCopy{Task: "1"}
	r.AddCopies(u)
	r.FinishCopy(u, context.Canceled) // stopped on purpose: not an error
	r.FinishCopy(u, fmt.Errorf("copy: %w", context.DeadlineExceeded))
	s := &Slot{Task: "1"}
	r.AddSlot(s)
	s.Interrupted(errors.New("boom"))
	errs := map[string]int64{}
	for _, e := range r.ErrorCounts() {
		errs[e.Component+"/"+e.Kind] = e.Count
	}
	if len(errs) != 3 || errs["schema/42P07"] != 1 || errs["copy/timeout"] != 1 || errs["stream/other"] != 1 {
		t.Fatalf("error counts %v", errs)
	}
	if row := s.Row(); row.Error != "boom" {
		t.Fatalf("slot error %q", row.Error)
	}
}

func TestSlotShardChanges(t *testing.T) {
	s := &Slot{}
	s.AppliedChanges([]int{3, 0})
	s.AppliedChanges([]int{1, 2, 5})
	if got := fmt.Sprint(s.Row().ShardChanges); got != "[4 2 5]" {
		t.Fatalf("shard changes %s", got)
	}
}
