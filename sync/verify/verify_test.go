package verify

import (
	"reflect"
	"sort"
	"testing"
)

func TestCompare(t *testing.T) {
	src := map[string]int32{"1": 10, "2": 20, "3": 30, "4": 40}
	dst := map[string]int32{"1": 10, "2": 21, "4": 40, "5": 50}
	missing, extra, different := compare(src, dst)
	sort.Strings(missing)
	if !reflect.DeepEqual(missing, []string{"3"}) || !reflect.DeepEqual(extra, []string{"5"}) || !reflect.DeepEqual(different, []string{"2"}) {
		t.Fatalf("missing %v extra %v different %v", missing, extra, different)
	}
	if m, e, d := compare(src, src); len(m)+len(e)+len(d) != 0 {
		t.Fatal("identical maps differ")
	}
}

func TestBigOf(t *testing.T) {
	// Sums of hashtext over many rows exceed float64's exact range.
	a, b := bigOf("9007199254740993"), bigOf("9007199254740992")
	if a.Cmp(b) == 0 {
		t.Fatal("precision lost")
	}
	if bigOf("-12").Sign() >= 0 || bigOf("junk").Sign() != 0 {
		t.Fatal("bad parse")
	}
}
