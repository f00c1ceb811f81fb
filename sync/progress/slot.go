package progress

import (
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
)

// Slot is the progress of one stream: a source slot being applied.
type Slot struct {
	// Task is the id of the task streaming it.
	Task string
	// Host, Port and Database locate the source shard.
	Host     string
	Port     int
	Database string
	// Name is the slot name.
	Name string
	// CopyData tells whether the slot was created by a copy.
	CopyData bool

	mu        sync.Mutex
	reg       *Registry // set by AddSlot, to count errors
	confirmed pglogrepl.LSN
	lagBytes  int64
	retained  int64
	lastTx    time.Time
	applied   int64
	changes   []int64 // per destination shard
	spilled   int64
	err       string
}

// SlotRow is a point-in-time view of a Slot.
type SlotRow struct {
	Task, Host, Database, Name, Error string
	Port                              int
	CopyData                          bool
	Confirmed                         pglogrepl.LSN
	LagBytes                          int64
	// RetainedBytes is the WAL the source keeps for the slot
	// (pg_current_wal_lsn() - restart_lsn): what the slot costs on disk.
	RetainedBytes   int64
	LastTransaction time.Time
	Applied         int64
	// ShardChanges is, per destination shard, how many row changes were
	// applied there (before merging into fewer statements).
	ShardChanges []int64
	// Spilled counts source transactions whose changes went to disk.
	Spilled int64
}

// Confirmed records the position confirmed to the source.
func (s *Slot) Confirmed(lsn pglogrepl.LSN) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.confirmed = lsn
}

// Lag records the slot's lag in bytes, as the source reports it.
func (s *Slot) Lag(bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lagBytes = bytes
}

// Retained records the WAL in bytes the source retains for the slot
// (pg_current_wal_lsn() - restart_lsn), as the source reports it.
func (s *Slot) Retained(bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retained = bytes
}

// Transaction records the commit time of the last source transaction seen.
func (s *Slot) Transaction(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastTx = t
}

// Applied counts statements applied on the destination.
func (s *Slot) Applied(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied += n
}

// AppliedChanges counts row changes applied, per destination shard
// (changes[k] on shard k).
func (s *Slot) AppliedChanges(changes []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.changes) < len(changes) {
		s.changes = append(s.changes, 0)
	}
	for k, n := range changes {
		s.changes[k] += int64(n)
	}
}

// AppliedOnShard counts n row changes applied on destination shard k.
func (s *Slot) AppliedOnShard(k, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.changes) <= k {
		s.changes = append(s.changes, 0)
	}
	s.changes[k] += int64(n)
}

// Spilled counts a source transaction whose changes went to disk.
func (s *Slot) Spilled() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spilled++
}

// SetError records the last error ("" clears it).
func (s *Slot) SetError(e string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = e
}

// Interrupted records the error that interrupted the stream (it
// reconnects) and counts it.
func (s *Slot) Interrupted(err error) {
	s.mu.Lock()
	s.err = err.Error()
	reg := s.reg
	s.mu.Unlock()
	if reg != nil {
		reg.CountError(ComponentStream, err)
	}
}

// Row returns the slot's current view.
func (s *Slot) Row() SlotRow {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SlotRow{Task: s.Task, Host: s.Host, Port: s.Port, Database: s.Database, Name: s.Name, CopyData: s.CopyData,
		Confirmed: s.confirmed, LagBytes: s.lagBytes, RetainedBytes: s.retained, LastTransaction: s.lastTx, Applied: s.applied, Spilled: s.spilled, Error: s.err,
		ShardChanges: append([]int64(nil), s.changes...)}
}

// AddSlot registers a stream.
func (r *Registry) AddSlot(s *Slot) {
	s.mu.Lock()
	s.reg = r
	s.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.slots = append(r.slots, s)
}

// RemoveSlot forgets a stream.
func (r *Registry) RemoveSlot(s *Slot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := r.slots[:0]
	for _, x := range r.slots {
		if x != s {
			kept = append(kept, x)
		}
	}
	r.slots = kept
}

// Slots returns every running stream.
func (r *Registry) Slots() []SlotRow {
	r.mu.Lock()
	slots := append([]*Slot(nil), r.slots...)
	r.mu.Unlock()
	out := make([]SlotRow, len(slots))
	for i, s := range slots {
		out[i] = s.Row()
	}
	return out
}
