package verify

import (
	"math/big"
	"reflect"
	"sort"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/reshard/reshard/sync/progress"
)

func TestReconcile(t *testing.T) {
	d := newDiffs()
	d.addMissing(keyHash{"1", "a"}, 10)
	d.addMissing(keyHash{"2", "b"}, 10)
	d.addMissing(keyHash{"3", "c"}, 10)
	d.addExtra(keyHash{"2", "b"}, 10) // the same row in another chunk: no difference
	d.addExtra(keyHash{"3", "z"}, 10) // changed
	d.addExtra(keyHash{"4", "d"}, 10)
	d.reconcile()
	if d.nMissing != 1 || d.nExtra != 1 || d.nDifferent != 1 {
		t.Fatalf("missing %d extra %d different %d, want 1 1 1", d.nMissing, d.nExtra, d.nDifferent)
	}
	if !reflect.DeepEqual(mapKeys(d.missing), []string{"1"}) || !reflect.DeepEqual(mapKeys(d.extra), []string{"4"}) ||
		!reflect.DeepEqual(d.different, []string{"3"}) {
		t.Fatalf("keys: missing %v extra %v different %v", d.missing, d.extra, d.different)
	}
}

func TestKeyLimit(t *testing.T) {
	d := newDiffs()
	for i := range 10 {
		d.addMissing(keyHash{key: string(rune('a' + i))}, 3)
	}
	if d.nMissing != 10 || len(d.missing) != 3 {
		t.Fatalf("counted %d, kept %d keys; want 10 and 3", d.nMissing, len(d.missing))
	}
}

func TestFinish(t *testing.T) {
	s := &tableState{t: testTable("id"), row: progress.VerifyRow{ShardRows: make([]int64, 2)}, groups: []*diffs{newDiffs()}}
	s.addSums(sums{count: 5, sum: big.NewInt(1)}, []sums{{count: 2, sum: big.NewInt(0)}, {count: 3, sum: big.NewInt(1), misplaced: 0}})
	if r := s.finish(hclog.NewNullLogger()); r.Status != StatusMatch || r.SourceRows != 5 || r.DestinationRows != 5 ||
		!reflect.DeepEqual(r.ShardRows, []int64{2, 3}) {
		t.Fatalf("finish: %+v", r)
	}
	s.groups[0].addExtra(keyHash{key: "9"}, 10)
	if r := s.finish(hclog.NewNullLogger()); r.Status != StatusMismatch || r.Extra != 1 {
		t.Fatalf("finish with an extra key: %+v", r)
	}
	s.fail(errTest)
	if r := s.finish(hclog.NewNullLogger()); r.Status != "error: "+errTest.Error() {
		t.Fatalf("finish of a failed table: %+v", r)
	}
}

type testError struct{}

func (testError) Error() string { return "boom" }

var errTest = testError{}

func TestCapKeys(t *testing.T) {
	var keys []string
	for i := 30; i > 0; i-- {
		keys = append(keys, string(rune('A'+i)))
	}
	got := capKeys(keys)
	if len(got) != maxLoggedKeys || !sort.StringsAreSorted(got) || got[0] != "B" {
		t.Fatalf("capKeys = %v", got)
	}
}

// TestFinishReverse: after a cutover the shards are the reference, so a
// row the old database lacks is missing.
func TestFinishReverse(t *testing.T) {
	s := &tableState{t: testTable("id"), row: progress.VerifyRow{ShardRows: make([]int64, 1)}, groups: []*diffs{newDiffs()}, reverse: true}
	s.groups[0].addExtra(keyHash{key: "7"}, 10)
	if r := s.finish(hclog.NewNullLogger()); r.Missing != 1 || r.Extra != 0 {
		t.Fatalf("reverse finish: %+v", r)
	}
}
