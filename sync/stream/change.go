// Package stream is the streaming stage of resharding: it reads the source's
// changes from a logical replication slot (pgoutput) and applies each one on
// the destination shards its rows belong to, batching many source
// transactions into one destination transaction per shard, exactly once
// across crashes thanks to a replication origin per destination shard.
package stream

import (
	"fmt"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/sharding"
)

// changeKind is what a change does.
type changeKind uint8

const (
	opInsert changeKind = iota + 1
	opUpdate
	opDelete
	opTruncate
)

// value is one column value in pgoutput's text form.
type value struct {
	data    []byte
	null    bool
	toasted bool // unchanged TOASTed value, not sent
}

// change is one row change (or a truncate) of a source transaction.
type change struct {
	kind   changeKind
	rel    *relation
	subxid uint32 // (sub)transaction of a streamed change
	// newRow is the new row (insert, update); oldRow the old row or key
	// (update with a changed key or REPLICA IDENTITY FULL, delete).
	newRow, oldRow []value
	oldIsKey       bool // oldRow holds only replica-identity columns ('K')
	truncated      []*relation
	cascade        bool
	restartSeqs    bool
}

// txn is one committed source transaction.
type txn struct {
	xid       uint32
	commitLSN pglogrepl.LSN
	endLSN    pglogrepl.LSN
	changes   []*change
	// spool holds the changes instead of changes for a transaction the
	// source streamed while in progress.
	spool *spool
}

// relation is a source table as pgoutput describes it, and how it is routed.
type relation struct {
	id       uint32
	schema   string
	name     string
	columns  []string
	key      []int // replica-identity column positions
	identity uint8 // 'd' default, 'f' full, 'i' index, 'n' nothing
	router   *sharding.Router
	shardCol int // position of the sharding column, -1 for omni tables
	// sameOnEverySource: every source shard holds the whole table (an omni
	// table): its changes are taken from source shard 0 only.
	sameOnEverySource bool
	qualified         string
	// types are the destination's column types (format_type), by position.
	types []string
	// ignore marks reshard's own state tables: their changes are skipped.
	ignore bool
	// sqls caches statement texts by shape (only the apply goroutine
	// touches it).
	sqls map[string]string
}

// cached returns the statement of a shape, building it once.
func (r *relation) cached(key []byte, build func() string) string {
	if sql, ok := r.sqls[string(key)]; ok {
		return sql
	}
	if r.sqls == nil {
		r.sqls = map[string]string{}
	}
	sql := build()
	r.sqls[string(key)] = sql
	return sql
}

// identifiesShard tells whether the replica identity carries the sharding
// column: then an UPDATE that changes it comes with the old tuple (and is
// applied as a move), and one without an old tuple keeps its shard.
func (r *relation) identifiesShard() bool {
	if r.identity == 'f' {
		return true
	}
	for _, k := range r.key {
		if k == r.shardCol {
			return true
		}
	}
	return false
}

func (r *relation) String() string { return r.schema + "." + r.name }

// tupleValues copies a pgoutput tuple into values.
func tupleValues(t *pglogrepl.TupleData) []value {
	if t == nil {
		return nil
	}
	out := make([]value, len(t.Columns))
	for i, c := range t.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			out[i].null = true
		case pglogrepl.TupleDataTypeToast:
			out[i].toasted = true
		default:
			out[i].data = c.Data
		}
	}
	return out
}

// shardOf returns the shard of a row by its sharding column, or AllShards.
func (r *relation) shardOf(row []value) (int, error) {
	if r.router.Omni() {
		return sharding.AllShards, nil
	}
	if r.shardCol >= len(row) {
		return 0, fmt.Errorf("%s: row has %d columns, sharding column is #%d", r, len(row), r.shardCol+1)
	}
	v := row[r.shardCol]
	if v.toasted {
		return 0, errNoKey
	}
	return r.router.Shard(sharding.FormatText, v.data, v.null)
}

var errNoKey = fmt.Errorf("sharding key not in the tuple")

// stateSchema is where reshard keeps its own state on a destination.
const stateSchema = "reshard"
