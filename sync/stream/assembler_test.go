package stream

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
)

//go:generate go run ./testdata/record

// fixture reads the pgoutput messages recorded from a real PostgreSQL 15
// for a scenario (testdata/record writes them).
func fixture(t *testing.T, name string) []received {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "pgoutput", name+".bin"))
	if err != nil {
		t.Fatal(err)
	}
	var out []received
	for len(b) > 0 {
		if len(b) < 12 {
			t.Fatalf("%s: truncated fixture", name)
		}
		n := binary.BigEndian.Uint32(b[8:])
		out = append(out, received{walStart: pglogrepl.LSN(binary.BigEndian.Uint64(b)), data: b[12 : 12+n]})
		b = b[12+n:]
	}
	return out
}

// assemble feeds a scenario's messages to an assembler with the given
// memory budget and returns the transactions it committed, in order, and
// the relations it described.
func assemble(t *testing.T, name string, budget int64) ([]*txn, []*relation, *spoolBudget) {
	t.Helper()
	b := &spoolBudget{limit: budget, dir: t.TempDir()}
	a := newAssembler(newRelations(), b)
	var txns []*txn
	var rels []*relation
	for i, m := range fixture(t, name) {
		ev, err := a.feed(m.walStart, m.data)
		if err != nil {
			t.Fatalf("%s: message %d (%q at %s): %v", name, i, m.data[0], m.walStart, err)
		}
		if ev.relation != nil {
			rels = append(rels, ev.relation)
		}
		if ev.txn != nil {
			txns = append(txns, ev.txn)
		}
	}
	if !a.idle() {
		t.Fatalf("%s: a transaction is still open after the last message", name)
	}
	t.Cleanup(func() {
		for _, tx := range txns {
			if tx.spool != nil {
				tx.spool.release(b)
			}
		}
	})
	return txns, rels, b
}

// changesOf returns a transaction's changes, read back from its spool for
// a streamed one.
func changesOf(t *testing.T, tx *txn) []*change {
	t.Helper()
	if tx.spool == nil {
		return tx.changes
	}
	var out []*change
	if err := tx.spool.changes(500, func(cs []*change) error {
		out = append(out, cs...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// describeChange renders a change as "I t 1,one,NULL" for comparison.
func describeChange(c *change) string {
	row := func(vs []value) string {
		parts := make([]string, len(vs))
		for i, v := range vs {
			switch {
			case v.null:
				parts[i] = "NULL"
			case v.toasted:
				parts[i] = "TOAST"
			case len(v.data) > 40:
				parts[i] = fmt.Sprintf("<%d bytes>", len(v.data))
			default:
				parts[i] = string(v.data)
			}
		}
		return strings.Join(parts, ",")
	}
	switch c.kind {
	case opInsert:
		return "I " + c.rel.name + " " + row(c.newRow)
	case opUpdate:
		s := "U " + c.rel.name + " " + row(c.newRow)
		if c.oldRow != nil {
			s += " old " + row(c.oldRow)
		}
		return s
	case opDelete:
		return "D " + c.rel.name + " " + row(c.oldRow) + " key " + strconv.FormatBool(c.oldIsKey)
	case opTruncate:
		names := make([]string, len(c.truncated))
		for i, r := range c.truncated {
			names[i] = r.name
		}
		return fmt.Sprintf("T %s cascade %v restart %v", strings.Join(names, ","), c.cascade, c.restartSeqs)
	}
	return "?"
}

func TestAssembleBeginCommit(t *testing.T) {
	txns, rels, _ := assemble(t, "begin_commit", 1<<20)
	if len(rels) != 1 || rels[0].name != "t" || strings.Join(rels[0].columns, ",") != "id,v,big" || len(rels[0].key) != 1 || rels[0].key[0] != 0 || rels[0].identity != 'd' {
		t.Fatalf("relations: %+v", rels)
	}
	want := [][]string{
		{"I t 1,one,NULL", "I t 2,two,<3000 bytes>", "U t 1,uno,NULL", "D t 2,NULL,NULL key true"},
		{"I t 3,three,NULL"},
	}
	if len(txns) != len(want) {
		t.Fatalf("%d transactions, want %d", len(txns), len(want))
	}
	for i, tx := range txns {
		if tx.spool != nil || tx.commitLSN == 0 || tx.commitTime.IsZero() {
			t.Fatalf("transaction %d: %+v", i, tx)
		}
		if i > 0 && tx.commitLSN <= txns[i-1].commitLSN {
			t.Fatalf("commit LSNs out of order: %s then %s", txns[i-1].commitLSN, tx.commitLSN)
		}
		var got []string
		for _, c := range changesOf(t, tx) {
			got = append(got, describeChange(c))
		}
		if strings.Join(got, "\n") != strings.Join(want[i], "\n") {
			t.Fatalf("transaction %d:\n%s\nwant:\n%s", i, strings.Join(got, "\n"), strings.Join(want[i], "\n"))
		}
	}
}

// A large transaction streamed in blocks, a small one committed between
// two blocks: the small one comes out first (it committed first), the
// large one whole, in order, at its STREAM COMMIT, whether its changes were
// kept in memory or spilled to disk.
func TestAssembleStreamedCommit(t *testing.T) {
	for _, budget := range []int64{64 << 20, 16 << 10} {
		t.Run(fmt.Sprintf("budget %d", budget), func(t *testing.T) {
			txns, _, b := assemble(t, "streamed_commit", budget)
			if len(txns) != 2 {
				t.Fatalf("%d transactions, want 2", len(txns))
			}
			small, big := txns[0], txns[1]
			if small.spool != nil || len(small.changes) != 1 || describeChange(small.changes[0]) != "I t 100000,small, committed first" {
				t.Fatalf("first transaction: %+v", small)
			}
			if big.spool == nil || big.commitLSN <= small.commitLSN {
				t.Fatalf("second transaction: not streamed, or committed before the first: %+v", big)
			}
			spilled := big.spool.file != nil
			if spilled != (budget < 1<<20) {
				t.Fatalf("budget %d: spilled = %v", budget, spilled)
			}
			changes := changesOf(t, big)
			if len(changes) != 1800 {
				t.Fatalf("streamed transaction: %d changes, want 1800", len(changes))
			}
			for i, c := range changes {
				if c.kind != opInsert || string(c.newRow[0].data) != strconv.Itoa(i+1) {
					t.Fatalf("change %d: %s", i, describeChange(c))
				}
			}
			big.spool.release(b)
			small.spool = nil
			if used := b.used.Load(); used != 0 {
				t.Fatalf("%d bytes still charged to the budget after release", used)
			}
		})
	}
}

// A streamed transaction rolled back (STREAM ABORT of the top
// transaction) yields nothing and gives its memory back.
func TestAssembleStreamedAbort(t *testing.T) {
	txns, _, b := assemble(t, "streamed_abort", 64<<20)
	if len(txns) != 1 || txns[0].spool != nil || describeChange(txns[0].changes[0]) != "I t 100000,kept" {
		t.Fatalf("transactions: %+v", txns)
	}
	if used := b.used.Load(); used != 0 {
		t.Fatalf("the aborted streamed transaction still holds %d bytes", used)
	}
}

// A subtransaction rolled back inside a streamed transaction: its changes
// are dropped, those before and after it kept (in memory or on disk).
func TestAssembleStreamedSubtransactionAbort(t *testing.T) {
	for _, budget := range []int64{64 << 20, 16 << 10} {
		t.Run(fmt.Sprintf("budget %d", budget), func(t *testing.T) {
			txns, _, _ := assemble(t, "streamed_subabort", budget)
			if len(txns) != 1 || txns[0].spool == nil {
				t.Fatalf("transactions: %+v", txns)
			}
			changes := changesOf(t, txns[0])
			counts := map[string]int{}
			for _, c := range changes {
				counts[string(c.newRow[1].data)]++
			}
			if counts["before"] != 800 || counts["released"] != 800 || counts["rolled back"] != 0 || len(changes) != 1600 {
				t.Fatalf("changes by value: %v (%d in all)", counts, len(changes))
			}
			for i := 1; i < len(changes); i++ {
				a, _ := strconv.Atoi(string(changes[i-1].newRow[0].data))
				b, _ := strconv.Atoi(string(changes[i].newRow[0].data))
				if b <= a {
					t.Fatalf("changes out of order: %d then %d", a, b)
				}
			}
		})
	}
}

// A table that changes between transactions is described again: later
// changes are bound to the new description (three columns), earlier ones
// keep theirs; a TRUNCATE carries its tables and options.
func TestAssembleRelationChange(t *testing.T) {
	txns, rels, _ := assemble(t, "relation_change", 1<<20)
	var got []string
	for _, tx := range txns {
		for _, c := range changesOf(t, tx) {
			s := describeChange(c)
			if c.rel != nil {
				s += fmt.Sprintf(" (%d columns)", len(c.rel.columns))
			}
			got = append(got, s)
		}
		got = append(got, "--")
	}
	want := []string{
		"I t 1,a (2 columns)", "I u 1,1 (2 columns)", "--",
		"I t 2,b,7 (3 columns)", "--",
		"U u 1,2 old 1,1 (2 columns)", "--",
		"T t,u cascade true restart true", "--",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var tDescs int
	for _, r := range rels {
		if r.name == "t" {
			tDescs++
		}
		if r.name == "u" && r.identity != 'f' {
			t.Fatalf("u's replica identity %q, want full", r.identity)
		}
	}
	if tDescs < 2 {
		t.Fatalf("t described %d times, want a second description after ALTER TABLE", tDescs)
	}
}

// Malformed input is an error naming its position, never a panic.
func TestAssembleRejectsMalformed(t *testing.T) {
	a := newAssembler(newRelations(), &spoolBudget{limit: 1 << 20, dir: t.TempDir()})
	if _, err := a.feed(0x10, []byte{'C', 0}); err == nil || !strings.Contains(err.Error(), "0/10") {
		t.Fatalf("a short COMMIT: %v", err)
	}
	if _, err := a.feed(0x20, msg('I', 0, false, 99, []byte{'N'}, tupleBytes([]byte("1")))); err == nil || !strings.Contains(err.Error(), "unknown relation 99") {
		t.Fatalf("a row of an unknown relation: %v", err)
	}
}

// A transaction the source sends whole at its commit (smaller than its
// logical_decoding_work_mem) with more changes than spoolAfter goes to a
// spool, charged to the budget and spilled past it, its changes in order;
// a smaller one stays in its txn.
func TestAssembleLargeTransactionSpooled(t *testing.T) {
	for _, budget := range []int64{1 << 20, 600} {
		t.Run(fmt.Sprintf("budget %d", budget), func(t *testing.T) {
			b := &spoolBudget{limit: budget, dir: t.TempDir()}
			a := newAssembler(newRelations(), b)
			a.spoolAfter = 2
			var txns []*txn
			for i, m := range fixture(t, "begin_commit") {
				ev, err := a.feed(m.walStart, m.data)
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if ev.txn != nil {
					txns = append(txns, ev.txn)
				}
			}
			if len(txns) != 2 || !a.idle() {
				t.Fatalf("%d transactions, idle %v", len(txns), a.idle())
			}
			big, small := txns[0], txns[1]
			if big.spool == nil || big.changes != nil || small.spool != nil || len(small.changes) != 1 {
				t.Fatalf("the 4-change transaction spooled %v (%d changes in its txn), the 1-change one %v", big.spool != nil, len(big.changes), small.spool != nil)
			}
			if spilled := big.spool.file != nil; spilled != (budget < 1<<20) {
				t.Fatalf("budget %d: spilled = %v", budget, spilled)
			}
			if b.used.Load() == 0 && big.spool.file == nil {
				t.Fatal("the spooled transaction is not charged to the budget")
			}
			var got []string
			for _, c := range changesOf(t, big) {
				got = append(got, describeChange(c))
			}
			want := []string{"I t 1,one,NULL", "I t 2,two,<3000 bytes>", "U t 1,uno,NULL", "D t 2,NULL,NULL key true"}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			big.spool.release(b)
			if used := b.used.Load(); used != 0 {
				t.Fatalf("%d bytes still charged after release", used)
			}
		})
	}
}
