package sharding

import (
	"errors"
	"strconv"
	"testing"
)

func mustFunction(t *testing.T, typ DataType, shards int, m []Mapping, def Default) *Function {
	t.Helper()
	f, err := NewFunction(typ, shards, m, def)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFunctionIntMappings(t *testing.T) {
	m := []Mapping{
		{Shard: 2, Values: []Value{IntValue(5), IntValue(150), StringValue("-7")}},
		{Shard: 0, Start: IntValue(0), End: IntValue(100)},
		{Shard: 1, Start: IntValue(50), End: IntValue(200)}, // overlaps: the first range wins
		{Shard: 3, Start: IntValue(1000)},                   // unbounded above
		{Shard: 1, End: IntValue(-100)},                     // unbounded below
	}
	f := mustFunction(t, BigInt, 4, m, DefaultAuto)
	if f.HashDefault() {
		t.Fatal("a table with mappings defaults to hash under DefaultAuto")
	}
	want := map[int64]int{
		5: 2, 150: 2, -7: 2, // lists beat ranges
		0: 0, 99: 0, 50: 0, 100: 1, 199: 1,
		1000: 3, 1 << 62: 3, -100 - 1: 1, -1 << 63: 1,
	}
	for k, w := range want {
		got, err := f.ShardInt(k)
		if err != nil || got != w {
			t.Errorf("%d: shard %d, %v; want %d", k, got, err, w)
		}
		// The same key in wire forms.
		got, err = f.Shard(FormatText, []byte(strconv.FormatInt(k, 10)), false)
		if err != nil || got != w {
			t.Errorf("text %d: shard %d, %v; want %d", k, got, err, w)
		}
	}
	for _, k := range []int64{200, 999, -99, -50} {
		_, err := f.ShardInt(k)
		if !errors.Is(err, ErrNoShard) {
			t.Errorf("%d: %v, want ErrNoShard", k, err)
		}
	}
	if _, err := f.Shard(FormatBinary, nil, true); !errors.Is(err, ErrNoShard) {
		t.Errorf("NULL without a hash default: %v", err)
	}

	// With a hash default, unmatched keys (and NULL) fall back to the hash.
	h := mustFunction(t, Integer, 4, m, DefaultHash)
	for _, k := range []int64{200, 999, -99} {
		got, err := h.ShardInt(k)
		if err != nil || got != ShardOfHash(HashInt(k), 4) {
			t.Errorf("%d: %d, %v", k, got, err)
		}
	}
	if got, err := h.ShardInt(5); err != nil || got != 2 {
		t.Errorf("mapped key under hash default: %d, %v", got, err)
	}
	if got, err := h.Shard(FormatBinary, nil, true); err != nil || got != 0 {
		t.Errorf("NULL: %d, %v", got, err)
	}
}

func TestFunctionTextMappings(t *testing.T) {
	m := []Mapping{
		{Shard: 1, Values: []Value{StringValue("eu"), StringValue("ünïcode"), IntValue(42)}},
		{Shard: 0, Start: StringValue("a"), End: StringValue("m")},
		{Shard: 2, Start: StringValue("m")},
	}
	f := mustFunction(t, Varchar, 3, m, DefaultNone)
	want := map[string]int{"eu": 1, "ünïcode": 1, "42": 1, "a": 0, "apple": 0, "lzzz": 0, "m": 2, "zebra": 2, "ü": 2}
	for k, w := range want {
		got, err := f.Shard(FormatText, []byte(k), false)
		if err != nil || got != w {
			t.Errorf("%q: %d, %v; want %d", k, got, err, w)
		}
	}
	// Byte order: "B" < "a", "" before everything.
	for _, k := range []string{"B", "", "0"} {
		if _, err := f.ShardText([]byte(k)); !errors.Is(err, ErrNoShard) {
			t.Errorf("%q: %v, want ErrNoShard", k, err)
		}
	}
	if _, err := f.ShardInt(1); err == nil {
		t.Error("integer key accepted by a varchar function")
	}
}

func TestFunctionUUIDMappings(t *testing.T) {
	m := []Mapping{
		{Shard: 1, Values: []Value{StringValue("{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}")}},
		{Shard: 0, Start: StringValue("00000000-0000-0000-0000-000000000000"), End: StringValue("80000000-0000-0000-0000-000000000000")},
	}
	f := mustFunction(t, UUID, 2, m, DefaultAuto)
	got, err := f.Shard(FormatText, []byte("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), false)
	if err != nil || got != 1 {
		t.Fatalf("listed uuid: %d, %v", got, err)
	}
	u, _ := DecodeUUID(FormatText, []byte("7fffffff-ffff-ffff-ffff-ffffffffffff"))
	if got, err := f.Shard(FormatBinary, u[:], false); err != nil || got != 0 {
		t.Fatalf("uuid in range: %d, %v", got, err)
	}
	u[0] = 0x80
	if _, err := f.ShardUUID(u); !errors.Is(err, ErrNoShard) {
		t.Fatalf("uuid past the range: %v", err)
	}
}

func TestFunctionWithoutMappingsHashes(t *testing.T) {
	for _, typ := range []DataType{BigInt, Integer, SmallInt, Text, Varchar, UUID} {
		f := mustFunction(t, typ, 7, nil, DefaultAuto)
		if !f.HashDefault() {
			t.Fatalf("%v: no hash default without mappings", typ)
		}
		if got, err := f.Shard(FormatText, nil, true); err != nil || got != 0 {
			t.Fatalf("%v NULL: %d, %v", typ, got, err)
		}
	}
	// DefaultNone without mappings: every non-NULL key is an error.
	f := mustFunction(t, Text, 2, nil, DefaultNone)
	if _, err := f.ShardText([]byte("x")); !errors.Is(err, ErrNoShard) {
		t.Fatalf("got %v", err)
	}
}

func TestFunctionConfigErrors(t *testing.T) {
	bad := []struct {
		name string
		typ  DataType
		n    int
		m    []Mapping
		def  Default
	}{
		{"no shards", BigInt, 0, nil, DefaultAuto},
		{"bad type", DataType(0), 2, nil, DefaultAuto},
		{"bad default", BigInt, 2, nil, Default(9)},
		{"shard out of range", BigInt, 2, []Mapping{{Shard: 2, Values: []Value{IntValue(1)}}}, DefaultAuto},
		{"negative shard", BigInt, 2, []Mapping{{Shard: -1, Values: []Value{IntValue(1)}}}, DefaultAuto},
		{"empty mapping", BigInt, 2, []Mapping{{Shard: 0}}, DefaultAuto},
		{"values and range", BigInt, 2, []Mapping{{Shard: 0, Values: []Value{IntValue(1)}, Start: IntValue(0)}}, DefaultAuto},
		{"duplicate value", BigInt, 2, []Mapping{{Shard: 0, Values: []Value{IntValue(1)}}, {Shard: 1, Values: []Value{StringValue("1")}}}, DefaultAuto},
		{"empty range", BigInt, 2, []Mapping{{Shard: 0, Start: IntValue(5), End: IntValue(5)}}, DefaultAuto},
		{"inverted text range", Text, 2, []Mapping{{Shard: 0, Start: StringValue("b"), End: StringValue("a")}}, DefaultAuto},
		{"string for integer", BigInt, 2, []Mapping{{Shard: 0, Values: []Value{StringValue("x")}}}, DefaultAuto},
		{"bad uuid", UUID, 2, []Mapping{{Shard: 0, Values: []Value{StringValue("nope")}}}, DefaultAuto},
		{"integer for uuid", UUID, 2, []Mapping{{Shard: 0, Values: []Value{IntValue(1)}}}, DefaultAuto},
		{"duplicate uuid spellings", UUID, 2, []Mapping{{Shard: 0, Values: []Value{
			StringValue("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), StringValue("A0EEBC999C0B4EF8BB6D6BB9BD380A11")}}}, DefaultAuto},
	}
	for _, b := range bad {
		if _, err := NewFunction(b.typ, b.n, b.m, b.def); err == nil {
			t.Errorf("%s: accepted", b.name)
		}
	}
}

func TestValueOf(t *testing.T) {
	for _, v := range []any{int(3), int8(3), int16(3), int32(3), int64(3), uint8(3), uint16(3), uint32(3), uint(3), uint64(3)} {
		got, err := ValueOf(v)
		if err != nil || got != IntValue(3) {
			t.Errorf("%T: %v, %v", v, got, err)
		}
	}
	if got, err := ValueOf("x"); err != nil || got != StringValue("x") {
		t.Errorf("string: %v, %v", got, err)
	}
	for _, v := range []any{1.5, true, nil, uint64(1 << 63), []int{1}} {
		if _, err := ValueOf(v); err == nil {
			t.Errorf("%#v accepted", v)
		}
	}
}

func TestParseDataTypeAndFormat(t *testing.T) {
	for s, want := range map[string]DataType{"bigint": BigInt, "INTEGER": Integer, "smallint": SmallInt, "varchar": Varchar, "text": Text, "uuid": UUID, "int8": BigInt} {
		got, err := ParseDataType(s)
		if err != nil || got != want {
			t.Errorf("%q: %v, %v", s, got, err)
		}
		if _, err := ParseDataType(want.String()); err != nil {
			t.Errorf("%v does not parse back", want)
		}
	}
	if _, err := ParseDataType("numeric"); err == nil {
		t.Error("numeric accepted")
	}
	if f, err := ParseFormat("Binary"); err != nil || f != FormatBinary {
		t.Errorf("binary: %v, %v", f, err)
	}
	if _, err := ParseFormat("csv"); err == nil {
		t.Error("csv accepted")
	}
}

func TestFunctionShardAllocs(t *testing.T) {
	fi := mustFunction(t, BigInt, 4, []Mapping{{Shard: 1, Values: []Value{IntValue(7)}}, {Shard: 2, Start: IntValue(100), End: IntValue(200)}}, DefaultHash)
	ft := mustFunction(t, Text, 4, []Mapping{{Shard: 1, Values: []Value{StringValue("k")}}, {Shard: 2, Start: StringValue("m"), End: StringValue("n")}}, DefaultHash)
	key := []byte("some key")
	n := testing.AllocsPerRun(100, func() {
		_, _ = fi.Shard(FormatText, []byte("150"), false)
		_, _ = fi.Shard(FormatText, []byte("12345"), false)
		_, _ = ft.Shard(FormatText, key, false)
	})
	if n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}
