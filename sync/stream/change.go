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

// change is one row change (or a truncate) of a source transaction. (Its
// fields are ordered so that it takes 96 bytes: a large streamed
// transaction holds millions.)
type change struct {
	rel *relation
	// newRow is the new row (insert, update); oldRow the old row or key
	// (update with a changed key or REPLICA IDENTITY FULL, delete).
	newRow, oldRow []value
	truncated      []*relation
	// keep: for a truncated relation whose copy was taken partly after
	// the TRUNCATE (see copyMarks.truncateCovered), the rows that must survive it: the
	// condition selecting the key ranges copied after it.
	keep        map[*relation]string
	subxid      uint32 // (sub)transaction of a streamed change
	kind        changeKind
	oldIsKey    bool // oldRow holds only replica-identity columns ('K')
	cascade     bool
	restartSeqs bool
}

// txn is one committed source transaction.
type txn struct {
	xid        uint32
	commitLSN  pglogrepl.LSN
	commitTime time.Time
	changes    []*change
	// seqBase numbers the changes: changes[i] is the transaction's change
	// seqBase+i (a part of a streamed transaction starts past the others).
	seqBase int
	// spool holds the changes instead of changes for a transaction the
	// source streamed while in progress.
	spool *spool
}

// position is where a change is in the source's order: its transaction's
// commit LSN, and its number in the transaction.
type position struct {
	lsn pglogrepl.LSN
	seq int
}

// after tells whether p comes after q.
func (p position) after(q position) bool {
	return p.lsn > q.lsn || p.lsn == q.lsn && p.seq > q.seq
}

// op is one statement for one shard.
type op struct {
	sql  string
	args [][]byte
	// pos is the change the statement comes from.
	pos position
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
	// probe: the DELETE taking a row off this shard if it is here (a row
	// that moves elsewhere), returning it and recording it as moved.
	probe bool
	// arrive: the row may not be on this shard (it moves here): an UPDATE
	// that finds no row, or an arrival with no statement, gets the row
	// from the shard whose probe took it (see mover).
	arrive *arrival
}

// arrival is a row a change may bring onto a shard.
type arrival struct {
	change *change
	// newRow is the row the change leaves (unchanged TOASTed values still
	// to fill from the moved row).
	newRow []value
	// rowIDs are the row's identities before and after the change.
	rowIDs []string
}

// routed is a statement with its shard.
type routed struct {
	shard int
	op    op
}
