package sharding

import (
	"bytes"
	"fmt"
)

// AllShards is the shard Router.Shard returns for a row of an omni table:
// the row belongs to every shard.
const AllShards = -1

// Table is the sharding configuration of one table.
type Table struct {
	// Omni marks a table without a sharding column: each of its rows is
	// copied to every shard. The other fields but Shards are then ignored.
	Omni bool
	// Column is the position (0-based) of the sharding column among the
	// columns of the table's rows, as COPY and pgoutput list them.
	Column int
	// Type is the sharding column's data type.
	Type DataType
	// Shards is the number of destination shards.
	Shards int
	// Mappings are the table's list and range mappings, if any.
	Mappings []Mapping
	// Default is the rule for keys no mapping matches.
	Default Default
	// BlankPadded marks a sharding column of type character(n) (bpchar,
	// with a string Type): its values carry the trailing blanks that
	// PostgreSQL drops from it as text (col::text, col::varchar) and in
	// its hash (hashbpchar), so they are dropped before a key is hashed
	// or mapped.
	BlankPadded bool
}

// Router routes the rows of one table to shards. It is safe for
// concurrent use.
type Router struct {
	fn          *Function // nil for an omni table
	column      int
	shards      int
	blankPadded bool
}

// NewRouter returns the router of table t.
func NewRouter(t Table) (*Router, error) {
	if t.Shards < 1 {
		return nil, fmt.Errorf("sharding: %d shards (want at least 1)", t.Shards)
	}
	if t.Omni {
		return &Router{column: -1, shards: t.Shards}, nil
	}
	if t.Column < 0 {
		return nil, fmt.Errorf("sharding: negative sharding column position %d", t.Column)
	}
	fn, err := NewFunction(t.Type, t.Shards, t.Mappings, t.Default)
	if err != nil {
		return nil, err
	}
	if t.BlankPadded && !t.Type.isString() {
		return nil, fmt.Errorf("sharding: a character(n) sharding column with data_type %s (want varchar or text)", t.Type)
	}
	return &Router{fn: fn, column: t.Column, shards: t.Shards, blankPadded: t.BlankPadded}, nil
}

// Omni reports whether the table is an omni table, whose rows go to every
// shard.
func (r *Router) Omni() bool { return r.fn == nil }

// Column returns the position of the sharding column, or -1 for an omni
// table.
func (r *Router) Column() int { return r.column }

// Shards returns the number of shards.
func (r *Router) Shards() int { return r.shards }

// Function returns the sharding function, or nil for an omni table.
func (r *Router) Function() *Function { return r.fn }

// Shard returns the shard of a row whose sharding key, in format f, is data
// (or NULL): see Function.Shard (a character(n) key without its trailing
// blanks: Table.BlankPadded). For an omni table it returns AllShards.
func (r *Router) Shard(f Format, data []byte, isNull bool) (int, error) {
	if r.fn == nil {
		return AllShards, nil
	}
	if r.blankPadded {
		// Text and binary forms of character(n) are both its characters.
		data = bytes.TrimRight(data, " ")
	}
	return r.fn.Shard(f, data, isNull)
}
