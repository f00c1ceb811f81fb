package sharding

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// testRow is one source row: an id, a key (nil for NULL) and a note.
type testRow struct {
	id   int64
	key  *int64
	note string
}

func randomRows(r *rand.Rand, n int) []testRow {
	notes := []string{"", "plain", "tab\there", "new\nline", `back\slash`, "ünïcödé €", "\\N", "\x01\x7f"}
	rows := make([]testRow, n)
	for i := range rows {
		rows[i] = testRow{id: int64(i), note: notes[r.IntN(len(notes))]}
		if r.IntN(10) > 0 {
			var k int64
			switch r.IntN(4) {
			case 0:
				k = int64(r.Uint64())
			case 1:
				k = r.Int64N(1000) - 500
			case 2:
				k = []int64{math.MinInt64, math.MaxInt64, 0, -1}[r.IntN(4)]
			default:
				k = int64(int32(r.Uint32()))
			}
			rows[i].key = &k
		}
	}
	return rows
}

func (tr testRow) binary() []byte {
	var key []byte
	if tr.key != nil {
		key = i8(*tr.key)
	}
	return binRow(i8(tr.id), key, []byte(tr.note))
}

var textEscaper = strings.NewReplacer("\\", `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`)

func (tr testRow) text() []byte {
	key := `\N`
	if tr.key != nil {
		key = strconv.FormatInt(*tr.key, 10)
	}
	return []byte(fmt.Sprintf("%d\t%s\t%s\n", tr.id, key, textEscaper.Replace(tr.note)))
}

func encodeRows(f Format, rows []testRow) []byte {
	var b []byte
	for _, r := range rows {
		if f == FormatBinary {
			b = append(b, r.binary()...)
		} else {
			b = append(b, r.text()...)
		}
	}
	if f == FormatBinary {
		return binStream(b)
	}
	return b
}

// chunkWriter pushes data into w in random-sized chunks.
func chunkWrite(t *testing.T, r *rand.Rand, w io.Writer, data []byte) {
	t.Helper()
	for len(data) > 0 {
		n := min(len(data), 1+r.IntN(300))
		if m, err := w.Write(data[:n]); err != nil || m != n {
			t.Fatalf("write: %d, %v", m, err)
		}
		data = data[n:]
	}
}

// checkShards parses every shard's stream and checks that each row is on
// the shard its key hashes to, and that together they hold the source
// rows exactly once.
func checkShards(t *testing.T, f Format, outs []*bytes.Buffer, src []testRow) {
	t.Helper()
	var seen []int64
	for shard, out := range outs {
		r, err := NewRowReader(f, bytes.NewReader(out.Bytes()), Options{Columns: 3})
		if err != nil {
			t.Fatal(err)
		}
		for {
			row, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("shard %d: %v", shard, err)
			}
			idb, _, _ := r.Field(0)
			id, err := DecodeInt(f, idb)
			if err != nil {
				t.Fatal(err)
			}
			want := src[id]
			wantRow := want.text()
			if f == FormatBinary {
				wantRow = want.binary()
			}
			if !bytes.Equal(row, wantRow) {
				t.Fatalf("shard %d row %d: %q, want %q", shard, id, row, wantRow)
			}
			wantShard := 0
			if want.key != nil {
				wantShard = ShardOfHash(HashInt(*want.key), len(outs))
			}
			if shard != wantShard {
				t.Fatalf("row %d on shard %d, want %d", id, shard, wantShard)
			}
			seen = append(seen, id)
		}
	}
	slices.Sort(seen)
	if len(seen) != len(src) {
		t.Fatalf("%d rows on the shards, want %d", len(seen), len(src))
	}
	for i, id := range seen {
		if id != int64(i) {
			t.Fatalf("row %d missing or duplicated", i)
		}
	}
}

func TestSplitterRoutes(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	src := randomRows(rnd, 3000)
	router, err := NewRouter(Table{Column: 1, Type: BigInt, Shards: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []Format{FormatBinary, FormatText} {
		data := encodeRows(f, src)
		newOuts := func() ([]*bytes.Buffer, []io.Writer) {
			outs := make([]*bytes.Buffer, 3)
			ws := make([]io.Writer, 3)
			for i := range outs {
				outs[i] = new(bytes.Buffer)
				ws[i] = outs[i]
			}
			return outs, ws
		}
		t.Run(f.String()+"/ReadFrom", func(t *testing.T) {
			outs, ws := newOuts()
			st, err := Split(f, router, iotest.OneByteReader(bytes.NewReader(data)), ws, Options{ReadBufferSize: 64, WriteBufferSize: 128})
			if err != nil {
				t.Fatal(err)
			}
			if st.Rows != int64(len(src)) || st.Bytes != int64(len(data)) {
				t.Fatalf("stats %+v", st)
			}
			var sum int64
			for i, n := range st.ShardRows {
				if n == 0 {
					t.Fatalf("no rows on shard %d", i)
				}
				sum += n
			}
			if sum != st.Rows {
				t.Fatalf("shard rows %v do not add up to %d", st.ShardRows, st.Rows)
			}
			checkShards(t, f, outs, src)
		})
		t.Run(f.String()+"/Write", func(t *testing.T) {
			outs, ws := newOuts()
			s, err := NewSplitter(f, router, ws, Options{})
			if err != nil {
				t.Fatal(err)
			}
			chunkWrite(t, rnd, s, data)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			checkShards(t, f, outs, src)
			// Pushed and pulled give the same bytes.
			outs2, ws2 := newOuts()
			if _, err := Split(f, router, bytes.NewReader(data), ws2, Options{}); err != nil {
				t.Fatal(err)
			}
			for i := range outs {
				if !bytes.Equal(outs[i].Bytes(), outs2[i].Bytes()) {
					t.Fatalf("shard %d differs between Write and ReadFrom", i)
				}
			}
		})
		t.Run(f.String()+"/Write then ReadFrom", func(t *testing.T) {
			outs, ws := newOuts()
			s, _ := NewSplitter(f, router, ws, Options{ReadBufferSize: 100})
			cut := len(data)/2 + 3 // in the middle of a row
			if _, err := s.Write(data[:cut]); err != nil {
				t.Fatal(err)
			}
			// Small reads and buffer so that the buffer compacts and grows.
			n, err := s.ReadFrom(iotest.HalfReader(bytes.NewReader(data[cut:])))
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(len(data)-cut) {
				t.Fatalf("ReadFrom read %d bytes, want %d", n, len(data)-cut)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			checkShards(t, f, outs, src)
		})
	}
}

func TestSplitterOmni(t *testing.T) {
	src := randomRows(rand.New(rand.NewPCG(7, 8)), 200)
	router, _ := NewRouter(Table{Omni: true, Shards: 3})
	for _, f := range []Format{FormatBinary, FormatText} {
		data := encodeRows(f, src)
		outs := []*bytes.Buffer{{}, {}, {}}
		st, err := Split(f, router, bytes.NewReader(data), []io.Writer{outs[0], outs[1], outs[2]}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for i, out := range outs {
			if !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("%v: shard %d does not hold the whole table", f, i)
			}
			if st.ShardRows[i] != int64(len(src)) {
				t.Fatalf("%v: stats %+v", f, st)
			}
		}
	}
}

func TestSplitterUnmatchedKeyFails(t *testing.T) {
	rows := []testRow{{id: 0, key: ptr(int64(5))}, {id: 1, key: ptr(int64(50))}, {id: 2, key: ptr(int64(500))}}
	router, _ := NewRouter(Table{Column: 1, Type: BigInt, Shards: 2, Mappings: []Mapping{
		{Shard: 0, Start: IntValue(0), End: IntValue(10)},
		{Shard: 1, Values: []Value{IntValue(50)}},
	}})
	for _, f := range []Format{FormatBinary, FormatText} {
		outs := []*bytes.Buffer{{}, {}}
		s, _ := NewSplitter(f, router, []io.Writer{outs[0], outs[1]}, Options{})
		_, err := s.ReadFrom(bytes.NewReader(encodeRows(f, rows)))
		if !errors.Is(err, ErrNoShard) || !strings.Contains(err.Error(), "row 3") || !strings.Contains(err.Error(), "500") {
			t.Fatalf("%v: %v", f, err)
		}
		if st := s.Stats(); st.Rows != 2 {
			t.Fatalf("%v: %d rows routed before the failure", f, st.Rows)
		}
		if _, err := s.Write([]byte("more")); !errors.Is(err, ErrNoShard) {
			t.Fatalf("%v: error is not sticky: %v", f, err)
		}
		if err := s.Close(); !errors.Is(err, ErrNoShard) {
			t.Fatalf("%v: Close: %v", f, err)
		}
		// Nothing was flushed, in particular no trailer: the
		// destinations cannot mistake the stream for a complete one.
		for i, out := range outs {
			if out.Len() != 0 {
				t.Fatalf("%v: shard %d received %q", f, i, out.Bytes())
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestSplitterTruncatedSource(t *testing.T) {
	router, _ := NewRouter(Table{Column: 1, Type: BigInt, Shards: 2})
	src := randomRows(rand.New(rand.NewPCG(9, 10)), 50)
	for _, f := range []Format{FormatBinary, FormatText} {
		data := encodeRows(f, src)
		for _, cut := range []int{len(data) - 1, len(data) - 2, len(data) / 2, 5} {
			if f == FormatText && data[cut-1] == '\n' {
				continue // a text stream cut at a line end is indistinguishable from a shorter table
			}
			s, _ := NewSplitter(f, router, []io.Writer{io.Discard, io.Discard}, Options{})
			if _, err := s.Write(data[:cut]); err != nil {
				t.Fatalf("%v cut %d: Write: %v", f, cut, err)
			}
			if err := s.Close(); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%v cut %d: Close: %v", f, cut, err)
			}
		}
	}
}

func TestSplitterWidening(t *testing.T) {
	// Source (id int4, key int2, note text) into destinations whose first
	// two columns are int8.
	var rows []byte
	var want [2][]byte
	router, _ := NewRouter(Table{Column: 1, Type: SmallInt, Shards: 2})
	for i := range 100 {
		id, key := int32(i*1000-50000), int16(i*7-300)
		rows = append(rows, binRow(i4(id), i2(key), []byte("n"))...)
		shard := ShardOfHash(HashInt(int64(key)), 2)
		want[shard] = append(want[shard], binRow(i8(int64(id)), i8(int64(key)), []byte("n"))...)
	}
	outs := []*bytes.Buffer{{}, {}}
	if _, err := Split(FormatBinary, router, bytes.NewReader(binStream(rows)), []io.Writer{outs[0], outs[1]}, Options{Widen: []int{0, 1}}); err != nil {
		t.Fatal(err)
	}
	for i := range outs {
		if !bytes.Equal(outs[i].Bytes(), binStream(want[i])) {
			t.Fatalf("shard %d:\n%x\nwant\n%x", i, outs[i].Bytes(), binStream(want[i]))
		}
	}
}

func TestSplitterErrors(t *testing.T) {
	router, _ := NewRouter(Table{Column: 5, Type: BigInt, Shards: 2})
	if _, err := NewSplitter(FormatBinary, router, []io.Writer{io.Discard}, Options{}); err == nil {
		t.Fatal("wrong number of destinations accepted")
	}
	if _, err := NewSplitter(Format(9), router, []io.Writer{io.Discard, io.Discard}, Options{}); err == nil {
		t.Fatal("bad format accepted")
	}
	if _, err := NewSplitter(FormatBinary, nil, nil, Options{}); err == nil {
		t.Fatal("nil router accepted")
	}
	// The sharding column beyond the row.
	_, err := Split(FormatBinary, router, bytes.NewReader(binStream(binRow(i8(1)))), []io.Writer{io.Discard, io.Discard}, Options{})
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("missing column: %v", err)
	}
	// An invalid key.
	router, _ = NewRouter(Table{Column: 0, Type: BigInt, Shards: 2})
	_, err = Split(FormatText, router, strings.NewReader("12x\n"), []io.Writer{io.Discard, io.Discard}, Options{})
	if err == nil || !strings.Contains(err.Error(), "12x") {
		t.Fatalf("bad key: %v", err)
	}
	// A destination that fails.
	boom := errors.New("boom")
	_, err = Split(FormatText, router, strings.NewReader("1\n2\n3\n"), []io.Writer{failWriter{boom}, failWriter{boom}}, Options{})
	if !errors.Is(err, boom) {
		t.Fatalf("failing destination: %v", err)
	}
	// A source that fails.
	_, err = Split(FormatText, router, iotest.ErrReader(boom), []io.Writer{io.Discard, io.Discard}, Options{})
	if !errors.Is(err, boom) {
		t.Fatalf("failing source: %v", err)
	}
}

func TestSplitterSteadyStateAllocs(t *testing.T) {
	router, _ := NewRouter(Table{Column: 1, Type: BigInt, Shards: 4})
	src := randomRows(rand.New(rand.NewPCG(11, 12)), 500)
	for _, f := range []Format{FormatBinary, FormatText} {
		data := encodeRows(f, src)
		body := data
		if f == FormatBinary {
			body = data[len(binaryHeader) : len(data)-len(binaryTrailer)]
		}
		s, _ := NewSplitter(f, router, []io.Writer{io.Discard, io.Discard, io.Discard, io.Discard}, Options{})
		if f == FormatBinary {
			_, _ = s.Write([]byte(binaryHeader))
		}
		// Rows pushed one Write each, as pgconn's CopyTo does, and in
		// chunks that cut rows.
		var rowsOf [][]byte
		r, _ := NewRowReader(f, bytes.NewReader(data), Options{})
		for {
			row, err := r.Next()
			if err != nil {
				break
			}
			rowsOf = append(rowsOf, bytes.Clone(row))
		}
		allocs := testing.AllocsPerRun(20, func() {
			for _, row := range rowsOf {
				if _, err := s.Write(row); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < len(body); i += 1000 {
				if _, err := s.Write(body[i:min(i+1000, len(body))]); err != nil {
					t.Fatal(err)
				}
			}
		})
		if allocs != 0 {
			t.Errorf("%v: %v allocations per %d rows", f, allocs, 2*len(src))
		}
	}
}
