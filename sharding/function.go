package sharding

import (
	"fmt"
	"strconv"
)

// Function is the sharding function of one column: the shard of a key of
// DataType among a number of shards, by the column's list and range
// mappings and then its default rule. It is safe for concurrent use.
type Function struct {
	typ    DataType
	shards int
	hash   bool // the default rule is the hash; otherwise unmatched keys are errors
	rules  rules
	mapped bool // there are mappings to consult
}

// NewFunction returns the sharding function for keys of type t among
// shards shards (at least 1), with the given mappings and default rule.
func NewFunction(t DataType, shards int, mappings []Mapping, def Default) (*Function, error) {
	if !t.valid() {
		return nil, fmt.Errorf("sharding: invalid data type %v", t)
	}
	if shards < 1 {
		return nil, fmt.Errorf("sharding: %d shards (want at least 1)", shards)
	}
	r, err := compileMappings(t, shards, mappings)
	if err != nil {
		return nil, err
	}
	f := &Function{typ: t, shards: shards, rules: r, mapped: !r.empty()}
	switch def {
	case DefaultAuto:
		f.hash = !f.mapped
	case DefaultHash:
		f.hash = true
	case DefaultNone:
		f.hash = false
	default:
		return nil, fmt.Errorf("sharding: invalid default rule %v", def)
	}
	return f, nil
}

// DataType returns the type of the keys f places.
func (f *Function) DataType() DataType { return f.typ }

// Shards returns the number of shards f places keys on.
func (f *Function) Shards() int { return f.shards }

// HashDefault reports whether keys that match no mapping are placed by the
// hash (otherwise they are an error).
func (f *Function) HashDefault() bool { return f.hash }

// Shard returns the shard of a key given in format fm: data is the
// value's text representation (unescaped: COPY text escapes must be undone
// first, as TextReader.Field does) or its binary one. A NULL key is on
// shard 0 under the hash default, and an error otherwise. Shard does not
// allocate unless it fails.
func (f *Function) Shard(fm Format, data []byte, isNull bool) (int, error) {
	if isNull {
		return f.null()
	}
	switch {
	case f.typ.IsInteger():
		v, err := DecodeInt(fm, data)
		if err != nil {
			return 0, err
		}
		return f.ShardInt(v)
	case f.typ == UUID:
		u, err := DecodeUUID(fm, data)
		if err != nil {
			return 0, err
		}
		return f.shardUUID(&u)
	default:
		return f.shardText(data)
	}
}

func (f *Function) null() (int, error) {
	if f.hash {
		return ShardOfHash(HashNull, f.shards), nil
	}
	return 0, fmt.Errorf("sharding: %w: NULL %v key", ErrNoShard, f.typ)
}

// ShardInt returns the shard of integer key v. f must be for an integer
// type.
func (f *Function) ShardInt(v int64) (int, error) {
	if !f.typ.IsInteger() {
		return 0, fmt.Errorf("sharding: integer key for a %v column", f.typ)
	}
	if f.mapped {
		if s, ok := f.rules.lookupInt(v); ok {
			return s, nil
		}
	}
	if f.hash {
		return ShardOfHash(HashInt(v), f.shards), nil
	}
	return 0, fmt.Errorf("sharding: %w: %v key %d", ErrNoShard, f.typ, v)
}

// ShardText returns the shard of a text or varchar key whose UTF-8 bytes
// are b. f must be for text or varchar.
func (f *Function) ShardText(b []byte) (int, error) {
	if !f.typ.isString() {
		return 0, fmt.Errorf("sharding: text key for a %v column", f.typ)
	}
	return f.shardText(b)
}

func (f *Function) shardText(b []byte) (int, error) {
	if f.mapped {
		if s, ok := f.rules.lookupBytes(b); ok {
			return s, nil
		}
	}
	if f.hash {
		return ShardOfHash(HashText(b), f.shards), nil
	}
	return 0, fmt.Errorf("sharding: %w: %v key %s", ErrNoShard, f.typ, quoteKey(b))
}

// ShardUUID returns the shard of uuid key u. f must be for uuid.
func (f *Function) ShardUUID(u [16]byte) (int, error) {
	if f.typ != UUID {
		return 0, fmt.Errorf("sharding: uuid key for a %v column", f.typ)
	}
	return f.shardUUID(&u)
}

func (f *Function) shardUUID(u *[16]byte) (int, error) {
	if f.mapped {
		if s, ok := f.rules.lookupBytes(u[:]); ok {
			return s, nil
		}
	}
	if f.hash {
		return ShardOfHash(HashUUID(*u), f.shards), nil
	}
	return 0, fmt.Errorf("sharding: %w: uuid key %s", ErrNoShard, formatUUID(*u))
}

// String describes f, for logs.
func (f *Function) String() string {
	def := "none"
	if f.hash {
		def = "hash"
	}
	return f.typ.String() + " over " + strconv.Itoa(f.shards) + " shards, default " + def
}
