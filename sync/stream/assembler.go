package stream

import (
	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/sync/job"
)

// assembler turns pgoutput messages into committed source transactions:
// BEGIN ... COMMIT, and transactions the source streams while in progress
// (STREAM START/STOP blocks of several transactions interleaved, ended by
// STREAM COMMIT or STREAM ABORT, a subtransaction's abort dropping only
// its changes). Streamed changes are kept in spools, in memory up to the
// budget and on disk past it. Relation messages are described into the
// relation cache; the caller prepares each one (assembled.relation) before
// feeding the next message. The assembler does no I/O but the spills.
type assembler struct {
	rels   *relations
	budget *spoolBudget

	cur       *txn              // the transaction between BEGIN and COMMIT
	streamed  map[uint32]*spool // in-progress streamed transactions
	streamXid uint32            // the transaction of the current stream block
	inStream  bool

	// spoolAfter, when set, bounds the changes of a transaction between
	// BEGIN and COMMIT held in its txn: past it they go to a spool, like a
	// streamed transaction's (charged to the budget, spilled past it), and
	// the transaction is applied alone at its commit. The source sends
	// every transaction smaller than its logical_decoding_work_mem whole
	// at its commit (all of them without streaming): unbounded else.
	spoolAfter int
	// curSizes are the message sizes of cur's changes while they are
	// held in cur (for the budget, should they go to a spool).
	curSizes []int
}

// assembled is what one message yields: nothing, a relation to prepare,
// or a committed transaction.
type assembled struct {
	relation *relation
	txn      *txn
}

func newAssembler(rels *relations, budget *spoolBudget) *assembler {
	return &assembler{rels: rels, budget: budget, streamed: map[uint32]*spool{}}
}

// idle tells whether no transaction is open: every change received so far
// belongs to a committed (or aborted) transaction.
func (a *assembler) idle() bool { return a.cur == nil && len(a.streamed) == 0 }

// release frees what in-progress streamed transactions hold.
func (a *assembler) release() {
	if a.cur != nil && a.cur.spool != nil {
		a.cur.spool.release(a.budget)
	}
	a.cur = nil
	for xid, sp := range a.streamed {
		sp.release(a.budget)
		delete(a.streamed, xid)
	}
}

// feed assembles one pgoutput message (the WAL data of an XLogData
// message starting at walStart). A malformed message is an error.
func (a *assembler) feed(walStart pglogrepl.LSN, data []byte) (assembled, error) {
	if len(data) == 0 {
		return assembled{}, nil
	}
	if data[0] == 'I' || data[0] == 'U' || data[0] == 'D' {
		return assembled{}, a.row(walStart, data)
	}
	lm, err := parseV2(data, a.inStream)
	if err != nil {
		return assembled{}, job.Wrap("XX000", err, "decode pgoutput message at %s: %v", walStart, err)
	}
	switch lm := lm.(type) {
	case *pglogrepl.RelationMessageV2:
		return assembled{relation: a.rels.describe(lm)}, nil
	case *pglogrepl.BeginMessage:
		if a.cur != nil && a.cur.spool != nil {
			a.cur.spool.release(a.budget) // (a BEGIN without a COMMIT)
		}
		a.cur = &txn{xid: lm.Xid}
		a.curSizes = a.curSizes[:0]
	case *pglogrepl.CommitMessage:
		if a.cur == nil {
			return assembled{}, job.Errorf("XX000", "decode pgoutput message at %s: commit without begin", walStart)
		}
		t := a.cur
		t.commitLSN, t.commitTime = lm.CommitLSN, lm.CommitTime
		a.cur = nil
		return assembled{txn: t}, nil
	case *pglogrepl.StreamStartMessageV2:
		a.inStream, a.streamXid = true, lm.Xid
		if a.streamed[lm.Xid] == nil {
			a.streamed[lm.Xid] = &spool{xid: lm.Xid}
		}
	case *pglogrepl.StreamStopMessageV2:
		a.inStream = false
	case *pglogrepl.StreamAbortMessageV2:
		if sp := a.streamed[lm.Xid]; sp != nil && lm.Xid == lm.SubXid {
			sp.release(a.budget)
			delete(a.streamed, lm.Xid)
		} else if sp != nil {
			sp.abortSub(lm.SubXid)
		}
	case *pglogrepl.StreamCommitMessageV2:
		sp := a.streamed[lm.Xid]
		delete(a.streamed, lm.Xid)
		if sp == nil {
			sp = &spool{xid: lm.Xid}
		}
		return assembled{txn: &txn{xid: lm.Xid, commitLSN: lm.CommitLSN, commitTime: lm.CommitTime, spool: sp}}, nil
	case *pglogrepl.TruncateMessageV2:
		c := &change{kind: opTruncate, cascade: lm.Option&pglogrepl.TruncateOptionCascade != 0,
			restartSeqs: lm.Option&pglogrepl.TruncateOptionRestartIdentity != 0}
		for _, id := range lm.RelationIDs {
			r, err := a.rels.lookup(id)
			if err != nil {
				return assembled{}, err
			}
			if !r.ignore {
				c.truncated = append(c.truncated, r)
			}
		}
		if len(c.truncated) > 0 {
			return assembled{}, a.add(c, lm.Xid, len(data))
		}
	}
	return assembled{}, nil
}

// row assembles an INSERT, UPDATE or DELETE.
func (a *assembler) row(walStart pglogrepl.LSN, data []byte) error {
	rm, err := decodeRow(data, a.inStream)
	if err != nil {
		return job.Wrap("XX000", err, "decode pgoutput message at %s: %v", walStart, err)
	}
	r, err := a.rels.lookup(rm.relation)
	if err != nil {
		return err
	}
	if r.ignore {
		return nil
	}
	if err := rm.checkShape(len(r.columns)); err != nil {
		return job.Wrap("XX000", err, "decode pgoutput message at %s for %s: %v", walStart, r, err)
	}
	return a.add(&change{kind: rm.kind, rel: r, newRow: rm.newRow, oldRow: rm.oldRow, oldIsKey: rm.oldType == 'K'}, rm.xid, len(data))
}

// add appends a change to the open transaction: the current stream block's
// spool, or the transaction between BEGIN and COMMIT. A change outside any
// transaction is ignored.
func (a *assembler) add(c *change, subxid uint32, size int) error {
	if a.inStream {
		c.subxid = subxid
		sp := a.streamed[a.streamXid]
		if sp == nil {
			return job.Errorf("XX000", "streamed change of transaction %d outside its stream block", a.streamXid)
		}
		return sp.add(a.budget, c, int64(size))
	}
	switch {
	case a.cur == nil:
	case a.cur.spool != nil:
		return a.cur.spool.add(a.budget, c, int64(size))
	case a.spoolAfter > 0 && len(a.cur.changes) >= a.spoolAfter:
		sp := &spool{xid: a.cur.xid}
		for i, held := range a.cur.changes {
			if err := sp.add(a.budget, held, int64(a.curSizes[i])); err != nil {
				sp.release(a.budget)
				return err
			}
		}
		a.cur.changes, a.curSizes = nil, a.curSizes[:0]
		a.cur.spool = sp
		return sp.add(a.budget, c, int64(size))
	default:
		a.cur.changes = append(a.cur.changes, c)
		if a.spoolAfter > 0 {
			a.curSizes = append(a.curSizes, size)
		}
	}
	return nil
}
