package verify

import (
	"math/big"
	"testing"
)

func TestParseSums(t *testing.T) {
	// Sums of 64-bit hashes exceed int64: numeric, read exactly.
	s, err := parseSums([][]byte{[]byte("7"), []byte("-92233720368547758070"), []byte("2")}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := new(big.Int).SetString("-92233720368547758070", 10)
	if s.count != 7 || s.sum.Cmp(want) != 0 || s.misplaced != 2 {
		t.Fatalf("parseSums = %+v", s)
	}
	for _, bad := range [][][]byte{{[]byte("x"), []byte("1"), []byte("0")}, {[]byte("1"), []byte("1.5"), []byte("0")}, {[]byte("1")}} {
		if _, err := parseSums(bad, 0); err == nil {
			t.Errorf("parseSums(%q) did not fail", bad)
		}
	}
}

func TestSumsArithmetic(t *testing.T) {
	a := sums{count: 3, sum: big.NewInt(10), misplaced: 1}
	b := sums{count: 1, sum: big.NewInt(-4)}
	if c := a.plus(b).minus(b); !c.same(a) || c.misplaced != 1 {
		t.Fatalf("plus then minus: %+v", c)
	}
	if a.same(sums{count: 3, sum: big.NewInt(11)}) || a.same(sums{count: 2, sum: big.NewInt(10)}) {
		t.Fatal("different sums compare the same")
	}
	if !total([]sums{a, b}).same(sums{count: 4, sum: big.NewInt(6)}) {
		t.Fatal("total")
	}
}

func TestRowHash(t *testing.T) {
	r := catalogRow{columns: []string{"id", "doc"}, typeOIDs: []uint32{20, 114}}
	if got := rowHash(r, map[uint32]bool{20: true, 114: true}); got != "hash_record_extended(x, 0)" {
		t.Errorf("every type hashable: %s", got)
	}
	// json has no hash function: its text is hashed.
	if got, want := rowHash(r, map[uint32]bool{20: true}), `hash_record_extended(ROW(x."id", x."doc"::text), 0)`; got != want {
		t.Errorf("json column: %s, want %s", got, want)
	}
}
