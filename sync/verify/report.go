package verify

import (
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reshard/reshard/sync/progress"
)

// Statuses of a table in SHOW VERIFY.
const (
	StatusRunning  = "running"
	StatusMatch    = "match"
	StatusMismatch = "mismatch"
)

// maxLoggedKeys caps the keys logged per table, kind and shard.
const maxLoggedKeys = 20

// keyHash is a differing row: its key and, when known, its hash.
type keyHash struct {
	key, hash string
}

// diffs are the differences between the source and one destination group
// of a table (all shards of a sharded table; one shard of an omni table):
// counts, and up to a limit the keys behind them.
type diffs struct {
	missing, extra map[string]string // key -> hash, kept up to the limit
	different      []string
	nMissing       int64
	nExtra         int64
	nDifferent     int64
	// rows are row texts of a table without a key, logged instead of keys.
	rows []string
}

func newDiffs() *diffs { return &diffs{missing: map[string]string{}, extra: map[string]string{}} }

// keys is how many keys d holds.
func (d *diffs) keys() int { return len(d.missing) + len(d.extra) + len(d.different) }

// addMissing records a row on the source and not on the group.
func (d *diffs) addMissing(k keyHash, limit int) {
	d.nMissing++
	if d.keys() < limit {
		d.missing[k.key] = k.hash
	}
}

// addExtra records a row on the group and not on the source.
func (d *diffs) addExtra(k keyHash, limit int) {
	d.nExtra++
	if d.keys() < limit {
		d.extra[k.key] = k.hash
	}
}

// addDifferent records a key on both sides whose rows differ.
func (d *diffs) addDifferent(key string, limit int) {
	d.nDifferent++
	if d.keys() < limit {
		d.different = append(d.different, key)
	}
}

// reconcile pairs a key missing from one chunk with the same key extra in
// another (when the two sides order the key differently, a row can fall in
// different chunks): the same row is no difference, a changed one is.
func (d *diffs) reconcile() {
	for k, h := range d.missing {
		eh, ok := d.extra[k]
		if !ok {
			continue
		}
		delete(d.missing, k)
		delete(d.extra, k)
		d.nMissing--
		d.nExtra--
		if h != eh {
			d.nDifferent++
			d.different = append(d.different, k)
		}
	}
}

// tableState is one table's comparison in progress.
type tableState struct {
	mu        sync.Mutex
	t         *table
	row       progress.VerifyRow
	pending   int
	groups    []*diffs // per destination group
	misplaced []string // keys of misplaced rows, up to a limit
	err       error
	started   time.Time
	// reverse: the streams run from the destination back into the source
	// (after a cutover), so the destination is the reference: missing
	// counts rows on the destination and not on the source.
	reverse bool
	// notPublished: the shards have the table, the publication does not
	// carry it (its differences mean rows left behind).
	notPublished bool
}

// chunkDone adds a compared range's sums: source rows, each destination
// shard's rows, misplaced rows.
func (s *tableState) addSums(src sums, dst []sums) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.row.SourceRows += src.count
	s.row.RowsCompared += src.count
	if s.row.RowsCompared > s.row.RowsEstimate {
		s.row.RowsEstimate = s.row.RowsCompared
	}
	for k, d := range dst {
		s.row.ShardRows[k] += d.count
		s.row.DestinationRows += d.count
		s.row.Misplaced += d.misplaced
	}
}

// fail records an error that keeps the table from being compared.
func (s *tableState) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// snapshot is the table's row as it stands.
func (s *tableState) snapshot() progress.VerifyRow {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.row
	r.ShardRows = append([]int64(nil), r.ShardRows...)
	return r
}

// done marks one range compared and reports whether it was the last.
func (s *tableState) done() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending--
	return s.pending == 0
}

// finish settles the table's status and logs the keys of each kind.
func (s *tableState) finish(log hclog.Logger) progress.VerifyRow {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.row.Elapsed = time.Since(s.started)
	if s.err != nil {
		s.row.Status = "error: " + s.err.Error()
		log.Error("table could not be compared", "table", s.t.String(), "error", s.err)
		return s.row
	}
	s.row.Missing, s.row.Extra, s.row.Different = 0, 0, 0
	for i, d := range s.groups {
		d.reconcile()
		if s.reverse {
			// After a cutover the shards are the reference the old
			// database is checked against.
			d.missing, d.extra, d.nMissing, d.nExtra = d.extra, d.missing, d.nExtra, d.nMissing
		}
		s.row.Missing += d.nMissing
		s.row.Extra += d.nExtra
		s.row.Different += d.nDifferent
		args := []any{"table", s.t.String()}
		if s.t.Omni {
			args = append(args, "shard", i)
		}
		logKeys(log, args, "missing", d.nMissing, mapKeys(d.missing))
		logKeys(log, args, "extra", d.nExtra, mapKeys(d.extra))
		logKeys(log, args, "different", d.nDifferent, d.different)
		if len(d.rows) > 0 {
			log.Warn("rows differ (the table has no key: these rows are on one side only)", append(args, "rows", capKeys(d.rows))...)
		}
	}
	logKeys(log, []any{"table", s.t.String()}, "misplaced", s.row.Misplaced, s.misplaced)
	s.row.Status = StatusMatch
	if s.row.Missing+s.row.Extra+s.row.Different+s.row.Misplaced > 0 {
		s.row.Status = StatusMismatch
		if s.notPublished {
			s.row.Status = StatusNotPublished
			log.Warn("a table on the shards is not in the publication: its rows are not copied or streamed, and a cutover leaves them behind",
				"table", s.t.String(), "source_rows", s.row.SourceRows, "destination_rows", s.row.DestinationRows)
		}
	}
	return s.row
}

func logKeys(log hclog.Logger, args []any, kind string, n int64, keys []string) {
	if n == 0 {
		return
	}
	args = append(args, "kind", kind, "count", n)
	if len(keys) > 0 {
		args = append(args, "keys", capKeys(keys))
	}
	log.Warn("rows differ", args...)
}

func mapKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// capKeys sorts keys and keeps the first maxLoggedKeys.
func capKeys(keys []string) []string {
	keys = append([]string(nil), keys...)
	sort.Strings(keys)
	if len(keys) > maxLoggedKeys {
		keys = keys[:maxLoggedKeys]
	}
	return keys
}
