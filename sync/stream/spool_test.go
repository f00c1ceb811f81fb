package stream

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// A streamed transaction past its memory budget goes to disk; reading it
// back gives every change, in order, exactly as it was (NULLs, unchanged
// TOASTed values, empty and large values, truncates), without the
// rolled-back subtransactions, and releasing it removes the file.
func TestSpoolSpillsAndReadsBack(t *testing.T) {
	dir := t.TempDir()
	var spilledTo string
	b := &spoolBudget{limit: 4096, dir: dir, onSpill: func(_ uint32, file string) { spilledTo = file }}
	users := &relation{name: "users"}
	orders := &relation{name: "orders"}
	big := bytes.Repeat([]byte("x"), 3<<20)
	var want []*change
	sp := &spool{xid: 42}
	for i := 0; i < 500; i++ {
		c := &change{kind: opInsert, rel: users, subxid: 42, newRow: []value{{data: []byte(strconv.Itoa(i))}, {null: true}, {data: []byte{}}}}
		switch {
		case i%50 == 7:
			c = &change{kind: opUpdate, rel: orders, subxid: 42, oldIsKey: true,
				oldRow: []value{{data: []byte("k" + strconv.Itoa(i))}}, newRow: []value{{data: []byte("n")}, {toasted: true}}}
		case i == 300:
			c = &change{kind: opInsert, rel: orders, subxid: 42, newRow: []value{{data: big}}}
		case i == 400:
			c = &change{kind: opTruncate, subxid: 42, truncated: []*relation{users, orders}, cascade: true}
		case i >= 100 && i < 150:
			c.subxid = 43 // rolled back below
		}
		if err := sp.add(b, c, 100); err != nil {
			t.Fatal(err)
		}
		if c.subxid != 43 {
			want = append(want, c)
		}
	}
	sp.abortSub(43)
	if sp.file == nil || spilledTo == "" {
		t.Fatal("500 changes of ~260 bytes in a 4 KiB budget were not spilled")
	}
	if len(sp.mem) == 0 {
		t.Fatal("nothing was kept in memory before spilling")
	}
	var got []*change
	chunks := 0
	if err := sp.changes(64, func(cs []*change) error {
		if len(cs) > 64 {
			t.Fatalf("chunk of %d changes, want at most 64", len(cs))
		}
		chunks++
		got = append(got, cs...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("read back %d changes, want %d", len(got), len(want))
	}
	for i := range want {
		if !sameChange(got[i], want[i]) {
			t.Fatalf("change %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if chunks < len(want)/64 {
		t.Fatalf("%d chunks for %d changes", chunks, len(want))
	}
	sp.release(b)
	if _, err := os.Stat(spilledTo); !os.IsNotExist(err) {
		t.Fatalf("spill file %s still there after release: %v", spilledTo, err)
	}
	if b.used.Load() != 0 {
		t.Fatalf("budget still charged %d bytes after release", b.used.Load())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Fatalf("files left: %v", left)
	}
}

// A spill directory that cannot be written is an error naming the
// transaction, not a lost change.
func TestSpoolSpillError(t *testing.T) {
	b := &spoolBudget{limit: 0, dir: filepath.Join(t.TempDir(), "missing")}
	sp := &spool{xid: 7}
	err := sp.add(b, &change{kind: opInsert, rel: &relation{}}, 10)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("transaction 7")) {
		t.Fatalf("got %v, want an error naming transaction 7", err)
	}
}

func sameChange(a, b *change) bool {
	if a.kind != b.kind || a.rel != b.rel || a.subxid != b.subxid || a.oldIsKey != b.oldIsKey || a.cascade != b.cascade || len(a.truncated) != len(b.truncated) {
		return false
	}
	for i := range a.truncated {
		if a.truncated[i] != b.truncated[i] {
			return false
		}
	}
	return sameValues(a.oldRow, b.oldRow) && sameValues(a.newRow, b.newRow) && (a.oldRow == nil) == (b.oldRow == nil)
}

// The budget is charged at least what decoded changes hold on the heap
// (the change, its rows, the message copy), and not far more, for narrow
// and wide rows: what it allows in memory is what the process holds.
func TestSpoolChargesWhatChangesHold(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cols, len int
	}{{"3 short columns", 3, 8}, {"1 column of 40 bytes", 1, 40}, {"20 columns of 100 bytes", 20, 100}} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 20000
			msgs := make([][]byte, n)
			for i := range msgs {
				m := []byte{'I', 0, 0, 0, 1, 'N', byte(tc.cols >> 8), byte(tc.cols)}
				for c := 0; c < tc.cols; c++ {
					m = append(m, 't', 0, 0, byte(tc.len>>8), byte(tc.len))
					m = append(m, bytes.Repeat([]byte{byte('a' + i%26)}, tc.len)...)
				}
				msgs[i] = m
			}
			b := &spoolBudget{limit: 1 << 40, dir: t.TempDir()}
			sp := &spool{xid: 1}
			rel := &relation{name: "t"}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for _, m := range msgs {
				rm, err := decodeRow(m, false)
				if err != nil {
					t.Fatal(err)
				}
				if err := sp.add(b, &change{kind: rm.kind, rel: rel, newRow: rm.newRow, oldRow: rm.oldRow}, int64(len(m))); err != nil {
					t.Fatal(err)
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			charged := b.used.Load()
			runtime.KeepAlive(sp)
			runtime.KeepAlive(msgs)
			if sp.file != nil || len(sp.mem) != n {
				t.Fatalf("spilled within an unlimited budget")
			}
			t.Logf("%d changes hold %d bytes on the heap, charged %d (%.2fx)", n, held, charged, float64(charged)/float64(held))
			if charged < held || charged > held+held/4 {
				t.Fatalf("%d changes hold %d bytes on the heap, the budget is charged %d", n, held, charged)
			}
		})
	}
}

// The budgets of one stream's slots share their memory: what one slot's
// transactions hold is not left to another's.
func TestSpoolBudgetShared(t *testing.T) {
	var shared atomic.Int64
	dir := t.TempDir()
	a := &spoolBudget{limit: 10000, shared: &shared, dir: dir}
	b := &spoolBudget{limit: 10000, shared: &shared, dir: dir}
	spA, spB := &spool{xid: 1}, &spool{xid: 2}
	c := func() *change {
		return &change{kind: opInsert, rel: &relation{}, newRow: []value{{data: make([]byte, 100)}}}
	}
	for spA.file == nil {
		if err := spA.add(a, c(), 100); err != nil {
			t.Fatal(err)
		}
	}
	if err := spB.add(b, c(), 100); err != nil {
		t.Fatal(err)
	}
	if spB.file == nil {
		t.Fatal("the second slot's transaction was kept in memory although the first holds the shared budget")
	}
	spA.release(a)
	spB.release(b)
	if shared.Load() != 0 || a.used.Load() != 0 || b.used.Load() != 0 {
		t.Fatalf("budget still charged after release: %d", shared.Load())
	}
}

// A spool keeps its captured statements (resharding_ddl = "replicate") in
// order beside its changes, in memory and spilled alike, each with the
// table it creates with rows (CREATE TABLE AS), without those of a
// rolled-back subtransaction; read back, the statements come at their
// place among the changes.
func TestSpoolKeepsStatements(t *testing.T) {
	ddlRel := &relation{schema: "reshard", name: "ddl", ddl: true, columns: []string{"id", "command_tag", "objects"}}
	stmt := func(id int, tag, objects string, subxid uint32) *change {
		return &change{kind: opInsert, rel: ddlRel, subxid: subxid,
			newRow: []value{{data: []byte(strconv.Itoa(id))}, {data: []byte(tag)}, {data: []byte(objects)}}}
	}
	rows := &relation{schema: "public", name: "t"}
	b := &spoolBudget{limit: 2048, dir: t.TempDir()}
	sp := &spool{xid: 9}
	var want []string
	add := func(c *change, kept bool) {
		t.Helper()
		if err := sp.add(b, c, 60); err != nil {
			t.Fatal(err)
		}
		if kept {
			if isDDL(c) {
				want = append(want, "ddl "+string(c.newRow[0].data))
			} else {
				want = append(want, "row "+string(c.newRow[0].data))
			}
		}
	}
	add(stmt(1, "ALTER TABLE", `[]`, 9), true) // in memory
	for i := 0; i < 100; i++ {
		add(&change{kind: opInsert, rel: rows, subxid: 9, newRow: []value{{data: []byte(strconv.Itoa(i))}}}, true)
	}
	if sp.file == nil {
		t.Fatal("100 changes in a 2 KiB budget were not spilled")
	}
	add(stmt(2, "CREATE TABLE AS", `[{"type": "table", "identity": "public.t2"}]`, 9), true) // spilled
	add(stmt(3, "DROP TABLE", `[]`, 10), false)                                              // rolled back
	add(stmt(4, "SELECT INTO", `[{"type": "table", "identity": "public.\"T 3\""}]`, 9), true)
	sp.abortSub(10)
	var got []string
	for _, st := range sp.stmts {
		got = append(got, string(st.change.newRow[0].data)+" "+st.creates)
	}
	if g, w := strings.Join(got, ", "), `1 , 2 public.t2, 4 public.T 3`; g != w {
		t.Fatalf("statements %q, want %q", g, w)
	}
	got = nil
	if err := sp.changes(30, func(cs []*change) error {
		for _, c := range cs {
			if isDDL(c) {
				got = append(got, "ddl "+string(c.newRow[0].data))
			} else {
				got = append(got, "row "+string(c.newRow[0].data))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if g, w := strings.Join(got, ","), strings.Join(want, ","); g != w {
		t.Fatalf("read back %s\nwant %s", g, w)
	}
	sp.release(b)
}
