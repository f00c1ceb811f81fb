package progress

// VerifyRow is the result of verifying one table, as SHOW VERIFY lists it.
type VerifyRow struct {
	Task, Schema, Table, Status string
	SourceRows, DestinationRows int64
	Missing, Extra, Different   int64
	Misplaced                   int64
}

// SetVerify records (or replaces) a table's verify result.
func (r *Registry) SetVerify(v VerifyRow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range r.verify {
		if x.Task == v.Task && x.Schema == v.Schema && x.Table == v.Table {
			r.verify[i] = v
			return
		}
	}
	r.verify = append(r.verify, v)
}

// Verify returns every verify result.
func (r *Registry) Verify() []VerifyRow {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]VerifyRow(nil), r.verify...)
}
