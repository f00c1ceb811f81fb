// Package stream is the streaming stage of resharding: it reads the source's
// changes from a logical replication slot (pgoutput) and applies each one on
// the destination shards its rows belong to, batching many source
// transactions into one destination transaction per shard, exactly once
// across crashes thanks to a replication origin per destination shard.
//
// The stream is a pipeline of stages, one type each:
//
//	receiver   the replication connection: START_REPLICATION, keepalives, status
//	assembler  pgoutput messages -> committed transactions (streamed and spilled ones too)
//	relations  the relation cache, and each table's shape checked on the destination
//	plan       a table's statements, built when its Relation message arrives
//	router     copy watermarks, shard choice, coalescing and merging -> statements per shard
//	mover      rows that change shard (cross-shard transactions)
//	applier    one per destination shard: its session, origin and transactions
//	positions  what every shard has handled and flushed: what may be confirmed
package stream

import (
	"time"

	"github.com/jackc/pglogrepl"
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
	xid        uint32
	commitLSN  pglogrepl.LSN
	commitTime time.Time
	changes    []*change
	// spool holds the changes instead of changes for a transaction the
	// source streamed while in progress.
	spool *spool
}

// op is one statement for one shard.
type op struct {
	sql  string
	args [][]byte
	// check: an UPDATE that must find its row (the sharding key could not
	// be read from the change, so a moved row would otherwise go unseen).
	mustHit *relation
	// row identifies the row an op touches ("" when unknown); update marks
	// an UPDATE that keeps its key, writes a full row image and locates the
	// row by key alone: a later such UPDATE of the same row in the same
	// destination transaction makes it redundant.
	row    string
	update bool
	// What merging needs: the table, the kind of statement, and for an
	// UPDATE the columns set and the key columns.
	rel     *relation
	kind    changeKind
	setCols []int
	keyCols []int
}

// routed is a statement with its shard.
type routed struct {
	shard int
	op    op
}
