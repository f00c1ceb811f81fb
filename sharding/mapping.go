package sharding

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// ErrNoShard is the error (wrapped with the key) for a key that matches no
// list or range mapping of a table whose default rule is DefaultNone.
var ErrNoShard = errors.New("key matches no shard mapping")

// Value is a key value in a mapping: an integer or a string, as the
// configuration spells it. The zero Value is "no value", which for a
// range's Start or End means that side is unbounded.
type Value struct {
	kind valueKind
	i    int64
	s    string
}

type valueKind uint8

const (
	valueNone valueKind = iota
	valueInt
	valueString
)

// IntValue returns the integer value v.
func IntValue(v int64) Value { return Value{kind: valueInt, i: v} }

// StringValue returns the string value s (a text key, or a uuid in any text
// form PostgreSQL accepts).
func StringValue(s string) Value { return Value{kind: valueString, s: s} }

// ValueOf converts a decoded configuration value (any Go integer type, or a
// string) to a Value.
func ValueOf(v any) (Value, error) {
	switch x := v.(type) {
	case Value:
		return x, nil
	case string:
		return StringValue(x), nil
	case int:
		return IntValue(int64(x)), nil
	case int8:
		return IntValue(int64(x)), nil
	case int16:
		return IntValue(int64(x)), nil
	case int32:
		return IntValue(int64(x)), nil
	case int64:
		return IntValue(x), nil
	case uint8:
		return IntValue(int64(x)), nil
	case uint16:
		return IntValue(int64(x)), nil
	case uint32:
		return IntValue(int64(x)), nil
	case uint:
		if uint64(x) > 1<<63-1 {
			return Value{}, fmt.Errorf("sharding: mapping value %d out of the bigint range", x)
		}
		return IntValue(int64(x)), nil
	case uint64:
		if x > 1<<63-1 {
			return Value{}, fmt.Errorf("sharding: mapping value %d out of the bigint range", x)
		}
		return IntValue(int64(x)), nil
	}
	return Value{}, fmt.Errorf("sharding: mapping value %v has type %T (want an integer or a string)", v, v)
}

// IsZero reports whether v is the zero Value (no value).
func (v Value) IsZero() bool { return v.kind == valueNone }

// String returns v as the configuration would spell it.
func (v Value) String() string {
	switch v.kind {
	case valueInt:
		return strconv.FormatInt(v.i, 10)
	case valueString:
		return strconv.Quote(v.s)
	}
	return "(none)"
}

// Mapping is one [[sharded_tables.mapping]] entry: the keys that live on
// Shard, given either as a list of Values or as the range [Start, End).
// A zero Start or End leaves that side of the range unbounded; at least one
// must be set. Integer keys compare as integers; text and varchar keys
// compare byte-wise (the order of the C collation, which for UTF-8 is code
// point order); uuid keys compare as PostgreSQL orders uuids (byte-wise).
type Mapping struct {
	// Shard is the shard the mapped keys belong to.
	Shard int
	// Values lists the keys of a list mapping.
	Values []Value
	// Start is the inclusive lower bound of a range mapping.
	Start Value
	// End is the exclusive upper bound of a range mapping.
	End Value
}

// Default is the rule for a key that no mapping matches.
type Default uint8

const (
	// DefaultAuto is DefaultHash for a table without mappings and
	// DefaultNone for a table with mappings.
	DefaultAuto Default = iota
	// DefaultHash places the key by PostgreSQL's hash partitioning.
	DefaultHash
	// DefaultNone makes such a key an error (ErrNoShard).
	DefaultNone
)

// String returns "auto", "hash" or "none".
func (d Default) String() string {
	switch d {
	case DefaultAuto:
		return "auto"
	case DefaultHash:
		return "hash"
	case DefaultNone:
		return "none"
	}
	return fmt.Sprintf("Default(%d)", uint8(d))
}

// rules are mappings compiled for one data type. Integer keys use ints and
// intRanges; text, varchar and uuid keys use strs and strRanges, a uuid
// being keyed by its 16 bytes.
type rules struct {
	ints      map[int64]int
	strs      map[string]int
	intRanges []intRange
	strRanges []strRange
}

type intRange struct {
	lo, hi       int64
	hasLo, hasHi bool
	shard        int
}

func (r *intRange) contains(v int64) bool {
	return (!r.hasLo || v >= r.lo) && (!r.hasHi || v < r.hi)
}

type strRange struct {
	lo, hi       []byte
	hasLo, hasHi bool
	shard        int
}

func (r *strRange) contains(b []byte) bool {
	return (!r.hasLo || bytes.Compare(b, r.lo) >= 0) &&
		(!r.hasHi || bytes.Compare(b, r.hi) < 0)
}

func (r *rules) empty() bool {
	return len(r.ints) == 0 && len(r.strs) == 0 && len(r.intRanges) == 0 && len(r.strRanges) == 0
}

// lookupInt returns the shard of an integer key by the mappings.
func (r *rules) lookupInt(v int64) (int, bool) {
	if s, ok := r.ints[v]; ok {
		return s, true
	}
	for i := range r.intRanges {
		if r.intRanges[i].contains(v) {
			return r.intRanges[i].shard, true
		}
	}
	return 0, false
}

// lookupBytes returns the shard of a string or uuid key by the mappings.
func (r *rules) lookupBytes(b []byte) (int, bool) {
	if s, ok := r.strs[string(b)]; ok { // no allocation for a map index
		return s, true
	}
	for i := range r.strRanges {
		if r.strRanges[i].contains(b) {
			return r.strRanges[i].shard, true
		}
	}
	return 0, false
}

// compileMappings checks mappings against the data type and the number of
// shards and compiles them.
func compileMappings(t DataType, shards int, mappings []Mapping) (rules, error) {
	var r rules
	for i, m := range mappings {
		if m.Shard < 0 || m.Shard >= shards {
			return r, fmt.Errorf("sharding: mapping %d: shard %d out of range [0, %d)", i, m.Shard, shards)
		}
		isRange := !m.Start.IsZero() || !m.End.IsZero()
		switch {
		case len(m.Values) > 0 && isRange:
			return r, fmt.Errorf("sharding: mapping %d: has both values and a range", i)
		case len(m.Values) == 0 && !isRange:
			return r, fmt.Errorf("sharding: mapping %d: has neither values nor a range", i)
		}
		for _, v := range m.Values {
			if t.IsInteger() {
				k, err := intKey(v)
				if err != nil {
					return r, fmt.Errorf("sharding: mapping %d: %w", i, err)
				}
				if r.ints == nil {
					r.ints = make(map[int64]int)
				}
				if prev, dup := r.ints[k]; dup {
					return r, fmt.Errorf("sharding: mapping %d: value %d already mapped to shard %d", i, k, prev)
				}
				r.ints[k] = m.Shard
				continue
			}
			k, err := bytesKey(t, v)
			if err != nil {
				return r, fmt.Errorf("sharding: mapping %d: %w", i, err)
			}
			if r.strs == nil {
				r.strs = make(map[string]int)
			}
			if prev, dup := r.strs[k]; dup {
				return r, fmt.Errorf("sharding: mapping %d: value %v already mapped to shard %d", i, v, prev)
			}
			r.strs[k] = m.Shard
		}
		if !isRange {
			continue
		}
		if t.IsInteger() {
			ir := intRange{shard: m.Shard, hasLo: !m.Start.IsZero(), hasHi: !m.End.IsZero()}
			var err error
			if ir.hasLo {
				if ir.lo, err = intKey(m.Start); err != nil {
					return r, fmt.Errorf("sharding: mapping %d: start: %w", i, err)
				}
			}
			if ir.hasHi {
				if ir.hi, err = intKey(m.End); err != nil {
					return r, fmt.Errorf("sharding: mapping %d: end: %w", i, err)
				}
			}
			if ir.hasLo && ir.hasHi && ir.lo >= ir.hi {
				return r, fmt.Errorf("sharding: mapping %d: empty range [%d, %d)", i, ir.lo, ir.hi)
			}
			r.intRanges = append(r.intRanges, ir)
			continue
		}
		sr := strRange{shard: m.Shard, hasLo: !m.Start.IsZero(), hasHi: !m.End.IsZero()}
		if sr.hasLo {
			lo, err := bytesKey(t, m.Start)
			if err != nil {
				return r, fmt.Errorf("sharding: mapping %d: start: %w", i, err)
			}
			sr.lo = []byte(lo)
		}
		if sr.hasHi {
			hi, err := bytesKey(t, m.End)
			if err != nil {
				return r, fmt.Errorf("sharding: mapping %d: end: %w", i, err)
			}
			sr.hi = []byte(hi)
		}
		if sr.hasLo && sr.hasHi && bytes.Compare(sr.lo, sr.hi) >= 0 {
			return r, fmt.Errorf("sharding: mapping %d: empty range [%v, %v)", i, m.Start, m.End)
		}
		r.strRanges = append(r.strRanges, sr)
	}
	return r, nil
}

// intKey converts a mapping value for an integer column: an integer, or a
// string holding a decimal integer.
func intKey(v Value) (int64, error) {
	switch v.kind {
	case valueInt:
		return v.i, nil
	case valueString:
		if k, ok := parseInt([]byte(v.s)); ok {
			return k, nil
		}
	}
	return 0, fmt.Errorf("value %v is not an integer", v)
}

// bytesKey converts a mapping value for a text, varchar or uuid column to
// the bytes the key is compared with: the UTF-8 text (an integer value
// stands for its decimal text), or the 16 bytes of the uuid.
func bytesKey(t DataType, v Value) (string, error) {
	if t == UUID {
		var u [16]byte
		if v.kind != valueString || !parseUUID(&u, []byte(v.s)) {
			return "", fmt.Errorf("value %v is not a uuid", v)
		}
		return string(u[:]), nil
	}
	switch v.kind {
	case valueString:
		return v.s, nil
	case valueInt:
		return strconv.FormatInt(v.i, 10), nil
	}
	return "", fmt.Errorf("value %v is not a string", v)
}
