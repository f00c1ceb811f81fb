package migrate

import "testing"

func TestReportSummary(t *testing.T) {
	r := &Report{Removed: []Removed{
		{Node: "src shard 0", Kind: "slot", Name: "reshard_a"},
		{Node: "dst shard 0", Kind: "schema", Name: "reshard"},
		{Node: "dst shard 1", Kind: "schema", Name: "reshard"},
		{Node: "dst shard 0", Kind: "rows", Name: "all rows of 3 tables"},
	}, Notes: []string{"kept x"}}
	want := "removed 1 slot (reshard_a); 2 schemas (reshard ×2); 1 rows (all rows of 3 tables); kept x"
	if got := r.Summary(); got != want {
		t.Fatalf("Summary() = %q, want %q", got, want)
	}
	if got := (&Report{}).Summary(); got != "nothing to remove" {
		t.Fatalf("empty Summary() = %q", got)
	}
}

func TestStateSlotsAndOrigins(t *testing.T) {
	st := State{Slot: "reshard_x", Forward: "reshard_x_f1", Reverse: "reshard_x_rev", Round: 1}
	if got := st.forwardBases(); len(got) != 3 || got[0] != "reshard_x" || got[1] != "reshard_x_f1" || got[2] != "reshard_x_f2" {
		t.Fatalf("forwardBases = %v", got)
	}
	slots := st.SlotsInUse(1, 2)
	if len(slots) != 3 || slots[0] != "reshard_x_f1" || slots[1] != "reshard_x_rev_0" || slots[2] != "reshard_x_rev_1" {
		t.Fatalf("SlotsInUse = %v", slots)
	}
	origins := st.OriginsInUse(1, 2)
	want := []string{"reshard_reshard_x_f1_0", "reshard_reshard_x_f1_1", "reshard_reshard_x_rev_0_0", "reshard_reshard_x_rev_1_0"}
	if len(origins) != len(want) {
		t.Fatalf("OriginsInUse = %v", origins)
	}
	for i := range want {
		if origins[i] != want[i] {
			t.Fatalf("OriginsInUse = %v, want %v", origins, want)
		}
	}
}
