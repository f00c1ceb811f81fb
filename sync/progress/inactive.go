package progress

// InactiveSlot is a replication slot of reshard's that exists on a server
// but that no stream is reading: it holds WAL there until it is used again
// or dropped.
type InactiveSlot struct {
	// Task is the id of the migration the slot belongs to ("" when no task
	// of this process claims it).
	Task string
	// Host, Port and Database locate the server.
	Host     string
	Port     int
	Database string
	// Name is the slot name.
	Name string
	// RetainedBytes is pg_current_wal_lsn() - restart_lsn on that server;
	// LagBytes is pg_current_wal_lsn() - confirmed_flush_lsn.
	RetainedBytes, LagBytes int64
	// Confirmed is the slot's confirmed_flush_lsn, as text.
	Confirmed string
}

// SetInactiveSlots replaces the list of reshard's inactive slots (the last
// look at every server).
func (r *Registry) SetInactiveSlots(slots []InactiveSlot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inactive = append([]InactiveSlot(nil), slots...)
}

// InactiveSlots returns reshard's inactive slots, as last seen.
func (r *Registry) InactiveSlots() []InactiveSlot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]InactiveSlot(nil), r.inactive...)
}
