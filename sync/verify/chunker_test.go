package verify

import (
	"testing"

	"github.com/reshard/reshard/sync/copier"
)

func testTable(key ...string) *table {
	return &table{Table: &copier.Table{Schema: "s", Name: "t"}, key: key, hash: "hash_record_extended(x, 0)"}
}

func TestWhere(t *testing.T) {
	one := testTable("id")
	cases := []struct {
		tb    *table
		r     keyRange
		extra []string
		want  string
	}{
		{one, keyRange{}, nil, ""},
		{one, keyRange{lo: []string{"10"}}, nil, ` WHERE x."id" >= '10'`},
		{one, keyRange{hi: []string{"20"}}, nil, ` WHERE x."id" < '20'`},
		{one, keyRange{lo: []string{"10"}, hi: []string{"20"}}, []string{"p"}, ` WHERE x."id" >= '10' AND x."id" < '20' AND p`},
		// Bounds are literals: a quote in a text key is doubled.
		{testTable("a", "b c"), keyRange{lo: []string{"1", "it's"}, hi: []string{"2", "x"}}, nil,
			` WHERE (x."a", x."b c") >= ('1', 'it''s') AND (x."a", x."b c") < ('2', 'x')`},
	}
	for _, c := range cases {
		if got := c.tb.where(c.r, c.extra...); got != c.want {
			t.Errorf("where(%v) = %q, want %q", c.r, got, c.want)
		}
	}
}

func TestKeyText(t *testing.T) {
	for _, c := range []struct {
		tb   *table
		want string
	}{
		{testTable(), "x::text"},
		{testTable("id"), `x."id"::text`},
		{testTable("a", "b"), `ROW(x."a", x."b")::text`},
	} {
		if got := c.tb.keyText(); got != c.want {
			t.Errorf("keyText(%v) = %q, want %q", c.tb.key, got, c.want)
		}
	}
}

func TestChunkCount(t *testing.T) {
	tb := testTable("id")
	for _, c := range []struct {
		estimate int64
		want     int
	}{{0, 1}, {100, 1}, {1000, 1}, {1001, 2}, {10_000, 10}, {1 << 40, maxChunks}} {
		tb.estimate = c.estimate
		if got := chunkCount(tb, 1000); got != c.want {
			t.Errorf("chunkCount(%d rows) = %d, want %d", c.estimate, got, c.want)
		}
	}
	// Without a key a table is never split.
	keyless := testTable()
	keyless.estimate = 1 << 30
	if got := chunkCount(keyless, 1000); got != 1 {
		t.Errorf("keyless table: %d chunks", got)
	}
}

func TestSamplePercent(t *testing.T) {
	tb := testTable("id")
	tb.estimate, tb.pages = 1_000_000, 16_000
	// 10 chunks: 200 pages of 16,000 (1.25%) beat 500 rows of 1M.
	if p := samplePercent(tb, 10); p < 1.24 || p > 1.26 {
		t.Errorf("samplePercent = %g, want 1.25", p)
	}
	tb.estimate, tb.pages = 1000, 5
	if p := samplePercent(tb, 10); p != 100 {
		t.Errorf("samplePercent of a small table = %g, want 100", p)
	}
}
