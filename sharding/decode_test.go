package sharding

import (
	"encoding/binary"
	"math"
	"strconv"
	"testing"
)

func TestDecodeIntBinaryWidths(t *testing.T) {
	for _, v := range []int64{0, 1, -1, 42, math.MaxInt16, math.MinInt16} {
		b2 := binary.BigEndian.AppendUint16(nil, uint16(int16(v)))
		b4 := binary.BigEndian.AppendUint32(nil, uint32(int32(v)))
		b8 := binary.BigEndian.AppendUint64(nil, uint64(v))
		for _, b := range [][]byte{b2, b4, b8} {
			got, err := DecodeInt(FormatBinary, b)
			if err != nil || got != v {
				t.Fatalf("%x: %d, %v; want %d", b, got, err, v)
			}
		}
	}
	for _, v := range []int64{math.MaxInt64, math.MinInt64, math.MaxInt32 + 1} {
		got, err := DecodeInt(FormatBinary, binary.BigEndian.AppendUint64(nil, uint64(v)))
		if err != nil || got != v {
			t.Fatalf("%d: %d, %v", v, got, err)
		}
	}
	for _, n := range []int{0, 1, 3, 5, 7, 9, 16} {
		if _, err := DecodeInt(FormatBinary, make([]byte, n)); err == nil {
			t.Fatalf("%d-byte binary integer accepted", n)
		}
	}
}

func TestDecodeIntText(t *testing.T) {
	good := map[string]int64{
		"0": 0, "-0": 0, "+7": 7, "42": 42, "-1": -1,
		"9223372036854775807":  math.MaxInt64,
		"-9223372036854775808": math.MinInt64,
		" 12 ":                 12, "\t-3\n": -3,
		"000123": 123,
	}
	for s, want := range good {
		got, err := DecodeInt(FormatText, []byte(s))
		if err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", " ", "-", "+", "1a", "1.0", "1e3", "0x10", "--1", "1 2",
		"9223372036854775808", "-9223372036854775809", "99999999999999999999"} {
		if v, err := DecodeInt(FormatText, []byte(s)); err == nil {
			t.Errorf("%q accepted as %d", s, v)
		}
	}
	// Every int64 boundary neighbourhood round-trips through its text.
	for _, v := range []int64{math.MaxInt64 - 1, math.MinInt64 + 1, 1 << 40, -(1 << 40)} {
		got, err := DecodeInt(FormatText, strconv.AppendInt(nil, v, 10))
		if err != nil || got != v {
			t.Errorf("%d: %d, %v", v, got, err)
		}
	}
}

func TestDecodeUUID(t *testing.T) {
	want := [16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}
	// The spellings PostgreSQL's documentation lists as accepted input.
	for _, s := range []string{
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
		"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
		"a0eebc999c0b4ef8bb6d6bb9bd380a11",
		"a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
		"{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
	} {
		got, err := DecodeUUID(FormatText, []byte(s))
		if err != nil || got != want {
			t.Errorf("%q: %x, %v", s, got, err)
		}
	}
	for _, s := range []string{
		"", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
		"a0eebc9-99c0b-4ef8-bb6d-6bb9bd380a11", // hyphen after an odd number of digits
		"a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-", // hyphen after the last group
		"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
		"g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
	} {
		if _, err := DecodeUUID(FormatText, []byte(s)); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	got, err := DecodeUUID(FormatBinary, want[:])
	if err != nil || got != want {
		t.Fatalf("binary: %x, %v", got, err)
	}
	if _, err := DecodeUUID(FormatBinary, want[:15]); err == nil {
		t.Fatal("15-byte binary uuid accepted")
	}
	if s := formatUUID(want); s != "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" {
		t.Fatalf("formatUUID: %s", s)
	}
}

func TestHashSameForBothFormats(t *testing.T) {
	u := "550e8400-e29b-41d4-a716-446655440000"
	ub, _ := DecodeUUID(FormatText, []byte(u))
	cases := []struct {
		typ          DataType
		text, binary []byte
	}{
		{BigInt, []byte("-123456789012"), binary.BigEndian.AppendUint64(nil, uint64(-123456789012+1<<64))},
		{Integer, []byte("-5"), binary.BigEndian.AppendUint32(nil, uint32(0xfffffffb))},
		{SmallInt, []byte("300"), binary.BigEndian.AppendUint16(nil, 300)},
		{Text, []byte("héllo"), []byte("héllo")},
		{Varchar, []byte(""), []byte("")},
		{UUID, []byte(u), ub[:]},
	}
	for _, c := range cases {
		ht, err1 := Hash(c.typ, FormatText, c.text)
		hb, err2 := Hash(c.typ, FormatBinary, c.binary)
		if err1 != nil || err2 != nil || ht != hb {
			t.Errorf("%v %q: text %d (%v), binary %d (%v)", c.typ, c.text, ht, err1, hb, err2)
		}
	}
}

func TestDecodeAllocs(t *testing.T) {
	text := []byte("-9223372036854775808")
	u := []byte("{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}")
	f, _ := NewFunction(UUID, 4, nil, DefaultAuto)
	n := testing.AllocsPerRun(100, func() {
		_, _ = DecodeInt(FormatText, text)
		_, _ = DecodeUUID(FormatText, u)
		_, _ = f.Shard(FormatText, u, false)
	})
	if n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}
