package stream

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync/atomic"
	"unsafe"
)

// spool holds the changes of one in-progress source transaction that the
// source streams before it commits (pgoutput streaming): in memory while
// the stream's budget allows, then appended to a temporary file. Its
// changes are applied at StreamCommit, read back in order, and dropped at
// StreamAbort.
type spool struct {
	xid     uint32
	mem     []*change
	memSize int64 // bytes of mem, as charged to the budget
	// Spilled changes, after those in mem.
	file    *os.File
	w       *bufio.Writer
	spilled int64
	// rels numbers the relations of spilled changes.
	rels    []*relation
	relIdx  map[*relation]uint32
	aborted map[uint32]bool // rolled-back subtransactions of spilled changes
	// stmts are the captured statements among the changes (resharding_ddl
	// = "replicate"), in order, kept in memory as well: the DDL stage
	// needs them before it reads the changes back.
	stmts []spooledStatement
	// quiet: a spill of this spool is not a transaction's (the DDL
	// stage's rows held back past a statement): onSpill is not told.
	quiet bool
}

// spooledStatement is a captured statement of a spooled transaction, and
// the table it creates with rows written before it (CREATE TABLE AS,
// SELECT INTO: see heldRows), "" for other statements.
type spooledStatement struct {
	change  *change
	creates string
}

// spoolBudget is the memory in-progress streamed transactions may use
// together before their changes go to disk: the budgets of one stream's
// slots share one counter (shared), so that a stream of several source
// shards holds no more than one budget.
// The router releases what the receiver charges.
type spoolBudget struct {
	limit  int64
	used   atomic.Int64
	shared *atomic.Int64 // used instead of used when set
	dir    string
	// onSpill is told when a transaction starts going to disk.
	onSpill func(xid uint32, file string)
}

// counter is the memory charged to the budget.
func (b *spoolBudget) counter() *atomic.Int64 {
	if b.shared != nil {
		return b.shared
	}
	return &b.used
}

// heldSize estimates the heap a decoded change holds: the change, its
// rows' value slices, the copy of its message their values point into
// (msg bytes) and its pointer in the spool (with append's spare capacity),
// each allocation rounded up as Go's size classes do (to 16 bytes, and up
// to 1/8 more past 1 KiB). The budget is charged this, so that what it
// allows is what the process holds.
func heldSize(c *change, msg int64) int64 {
	values := int64(unsafe.Sizeof(value{})) * int64(len(c.newRow)+len(c.oldRow))
	return allocSize(int64(unsafe.Sizeof(*c))) + allocSize(msg) + allocSize(values) +
		allocSize(int64(unsafe.Sizeof((*relation)(nil)))*int64(len(c.truncated))) +
		int64(unsafe.Sizeof(c))*3/2
}

// allocSize is about what the Go allocator takes for n bytes.
func allocSize(n int64) int64 {
	if n == 0 {
		return 0
	}
	if n > 1024 {
		n += n / 8
	}
	return (n + 15) &^ 15
}

// add appends a change decoded from a message of msg bytes, spilling it
// (and every later change of the transaction) once the budget is used up.
func (sp *spool) add(b *spoolBudget, c *change, msg int64) error {
	if isDDL(c) {
		sp.stmts = append(sp.stmts, spooledStatement{change: c, creates: createdByRows(c)})
	}
	size := heldSize(c, msg)
	if used := b.counter(); sp.file == nil && used.Load()+size <= b.limit {
		sp.mem = append(sp.mem, c)
		sp.memSize += size
		used.Add(size)
		return nil
	}
	if sp.file == nil {
		f, err := os.CreateTemp(b.dir, fmt.Sprintf("reshard-xid%d-*.spill", sp.xid))
		if err != nil {
			return fmt.Errorf("spill streamed transaction %d to disk: %w", sp.xid, err)
		}
		sp.file, sp.w = f, bufio.NewWriterSize(f, 1<<16)
		sp.relIdx = map[*relation]uint32{}
		if b.onSpill != nil && !sp.quiet {
			b.onSpill(sp.xid, f.Name())
		}
	}
	if err := sp.encode(c); err != nil {
		return fmt.Errorf("spill streamed transaction %d to %s: %w", sp.xid, sp.file.Name(), err)
	}
	sp.spilled++
	return nil
}

// abortSub drops the changes of a rolled-back subtransaction (their memory
// stays charged until the transaction is released).
func (sp *spool) abortSub(subxid uint32) {
	kept := sp.mem[:0]
	for _, c := range sp.mem {
		if c.subxid != subxid {
			kept = append(kept, c)
		}
	}
	clear(sp.mem[len(kept):])
	sp.mem = kept
	stmts := sp.stmts[:0]
	for _, st := range sp.stmts {
		if st.change.subxid != subxid {
			stmts = append(stmts, st)
		}
	}
	sp.stmts = stmts
	if sp.file != nil {
		if sp.aborted == nil {
			sp.aborted = map[uint32]bool{}
		}
		sp.aborted[subxid] = true
	}
}

// count is the number of changes the spool holds (those of rolled-back
// subtransactions that went to disk included).
func (sp *spool) count() int64 { return int64(len(sp.mem)) + sp.spilled }

// release gives the spool's memory back to the budget and removes its file.
func (sp *spool) release(b *spoolBudget) {
	b.counter().Add(-sp.memSize)
	sp.memSize = 0
	if sp.file != nil {
		name := sp.file.Name()
		sp.file.Close()
		os.Remove(name)
		sp.file = nil
	}
}

// changes calls fn with the transaction's changes in order, at most n at
// a time: those in memory, then those read back from disk. The spool lets
// go of the changes in memory as it hands them on (fn and what it hands
// them to hold them while they need them), so that a large transaction
// read back does not hold its first part in memory to its end; their
// memory stays charged to the budget until release. The changes can be
// read once.
func (sp *spool) changes(n int, fn func([]*change) error) error {
	for lo := 0; lo < len(sp.mem); lo += n {
		part := slices.Clone(sp.mem[lo:min(lo+n, len(sp.mem))])
		clear(sp.mem[lo:min(lo+n, len(sp.mem))])
		if err := fn(part); err != nil {
			return err
		}
	}
	sp.mem = nil
	if sp.file == nil {
		return nil
	}
	if err := sp.w.Flush(); err != nil {
		return fmt.Errorf("spill file %s: %w", sp.file.Name(), err)
	}
	if _, err := sp.file.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("spill file %s: %w", sp.file.Name(), err)
	}
	st, err := sp.file.Stat()
	if err != nil {
		return fmt.Errorf("spill file %s: %w", sp.file.Name(), err)
	}
	r := bufio.NewReaderSize(sp.file, 1<<16)
	batch := make([]*change, 0, n)
	for i := int64(0); i < sp.spilled; i++ {
		c, err := sp.decode(r, st.Size())
		if err != nil {
			return fmt.Errorf("read back spill file %s (change %d of %d): %w", sp.file.Name(), i+1, sp.spilled, err)
		}
		if sp.aborted[c.subxid] {
			continue
		}
		batch = append(batch, c)
		if len(batch) == n {
			if err := fn(batch); err != nil {
				return err
			}
			batch = make([]*change, 0, n)
		}
	}
	if len(batch) > 0 {
		return fn(batch)
	}
	return nil
}

// The spill format of a change: kind, flags (oldIsKey, cascade,
// restartSeqs), subxid, relation number, then the old and new rows (a
// column count, then per column a state byte and for present values a
// length and the bytes), then for a truncate its relation numbers.
const (
	flagOldIsKey = 1 << iota
	flagCascade
	flagRestartSeqs
	flagHasRel
)

func (sp *spool) relNumber(r *relation) uint32 {
	if i, ok := sp.relIdx[r]; ok {
		return i
	}
	i := uint32(len(sp.rels))
	sp.rels = append(sp.rels, r)
	sp.relIdx[r] = i
	return i
}

func (sp *spool) encode(c *change) error {
	w := sp.w
	var flags byte
	if c.oldIsKey {
		flags |= flagOldIsKey
	}
	if c.cascade {
		flags |= flagCascade
	}
	if c.restartSeqs {
		flags |= flagRestartSeqs
	}
	if c.rel != nil {
		flags |= flagHasRel
	}
	var hdr [10]byte
	hdr[0], hdr[1] = byte(c.kind), flags
	binary.BigEndian.PutUint32(hdr[2:], c.subxid)
	if c.rel != nil {
		binary.BigEndian.PutUint32(hdr[6:], sp.relNumber(c.rel))
	}
	w.Write(hdr[:])
	for _, row := range [][]value{c.oldRow, c.newRow} {
		writeRow(w, row)
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(c.truncated)))
	w.Write(n[:])
	for _, r := range c.truncated {
		binary.BigEndian.PutUint32(n[:], sp.relNumber(r))
		w.Write(n[:])
	}
	// bufio.Writer keeps its first error and returns it from every
	// later write.
	_, err := w.Write(nil)
	return err
}

func writeRow(w *bufio.Writer, row []value) {
	var n [4]byte
	if row == nil {
		binary.BigEndian.PutUint32(n[:], ^uint32(0))
		w.Write(n[:])
		return
	}
	binary.BigEndian.PutUint32(n[:], uint32(len(row)))
	w.Write(n[:])
	for _, v := range row {
		switch {
		case v.null:
			w.WriteByte('n')
		case v.toasted:
			w.WriteByte('u')
		default:
			w.WriteByte('t')
			binary.BigEndian.PutUint32(n[:], uint32(len(v.data)))
			w.Write(n[:])
			w.Write(v.data)
		}
	}
}

var errSpillCorrupt = errors.New("corrupt spill record")

// decode reads back one change from a spill file of size bytes.
func (sp *spool) decode(r *bufio.Reader, size int64) (*change, error) {
	var hdr [10]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	c := &change{kind: changeKind(hdr[0]), subxid: binary.BigEndian.Uint32(hdr[2:])}
	flags := hdr[1]
	c.oldIsKey, c.cascade, c.restartSeqs = flags&flagOldIsKey != 0, flags&flagCascade != 0, flags&flagRestartSeqs != 0
	rel := func(i uint32) (*relation, error) {
		if int64(i) >= int64(len(sp.rels)) {
			return nil, errSpillCorrupt
		}
		return sp.rels[i], nil
	}
	var err error
	if flags&flagHasRel != 0 {
		if c.rel, err = rel(binary.BigEndian.Uint32(hdr[6:])); err != nil {
			return nil, err
		}
	}
	if c.oldRow, err = readRow(r, size); err != nil {
		return nil, err
	}
	if c.newRow, err = readRow(r, size); err != nil {
		return nil, err
	}
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	count := binary.BigEndian.Uint32(n[:])
	if int64(count) > int64(len(sp.rels)) {
		return nil, errSpillCorrupt
	}
	for i := uint32(0); i < count; i++ {
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return nil, err
		}
		t, err := rel(binary.BigEndian.Uint32(n[:]))
		if err != nil {
			return nil, err
		}
		c.truncated = append(c.truncated, t)
	}
	return c, nil
}

// maxSpillColumns bounds a row read back (PostgreSQL allows 1,664).
const maxSpillColumns = 1 << 16

// readRow reads back a row from a spill file of size bytes.
func readRow(r *bufio.Reader, size int64) ([]value, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	cols := binary.BigEndian.Uint32(n[:])
	if cols == ^uint32(0) {
		return nil, nil
	}
	if cols > maxSpillColumns {
		return nil, errSpillCorrupt
	}
	row := make([]value, cols)
	for i := range row {
		kind, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		switch kind {
		case 'n':
			row[i].null = true
		case 'u':
			row[i].toasted = true
		case 't':
			if _, err := io.ReadFull(r, n[:]); err != nil {
				return nil, err
			}
			l := int64(binary.BigEndian.Uint32(n[:]))
			// A corrupt length cannot allocate more than the file
			// holds; a value is read into a buffer of its size (read
			// in growing steps, a 200 MB one would take twice that).
			if l > size {
				return nil, errSpillCorrupt
			}
			data := make([]byte, l)
			if _, err := io.ReadFull(r, data); err != nil {
				return nil, err
			}
			row[i].data = data
		default:
			return nil, errSpillCorrupt
		}
	}
	return row, nil
}
