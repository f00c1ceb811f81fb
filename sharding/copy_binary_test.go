package sharding

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

// null marks a NULL field for binRow.
var null []byte

// binRow frames one binary tuple; a nil field is NULL.
func binRow(fields ...[]byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(fields)))
	for _, f := range fields {
		if f == nil {
			b = binary.BigEndian.AppendUint32(b, 0xffffffff)
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// binStream frames rows into a complete binary COPY stream.
func binStream(rows ...[]byte) []byte {
	b := []byte(binaryHeader)
	for _, r := range rows {
		b = append(b, r...)
	}
	return append(b, binaryTrailer...)
}

func i8(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }
func i4(v int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }
func i2(v int16) []byte { return binary.BigEndian.AppendUint16(nil, uint16(v)) }

// readAll reads every row of r, copying each, and checks field access.
func readAll(t *testing.T, r RowReader) ([][]byte, error) {
	t.Helper()
	var rows [][]byte
	for {
		row, err := r.Next()
		if err != nil {
			if err == io.EOF {
				return rows, nil
			}
			return rows, err
		}
		rows = append(rows, bytes.Clone(row))
	}
}

func TestBinaryReader(t *testing.T) {
	rows := [][]byte{
		binRow(i8(1), []byte("alpha"), null, []byte{}),
		binRow(i8(-2), null, i4(7), []byte("x")),
		binRow(null, []byte("\x00\xff\t\n"), i4(-1), null),
	}
	// A header extension the reader must skip.
	stream := []byte(binarySignature + "\x00\x00\x00\x00" + "\x00\x00\x00\x03abc")
	for _, r := range rows {
		stream = append(stream, r...)
	}
	stream = append(stream, binaryTrailer...)

	readers := map[string]func() io.Reader{
		"whole":    func() io.Reader { return bytes.NewReader(stream) },
		"one byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"half":     func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
		"data+EOF": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) },
	}
	for name, mk := range readers {
		t.Run(name, func(t *testing.T) {
			r, err := NewBinaryReader(mk(), Options{ReadBufferSize: 8})
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range rows {
				row, err := r.Next()
				if err != nil {
					t.Fatalf("row %d: %v", i, err)
				}
				if !bytes.Equal(row, want) {
					t.Fatalf("row %d: %x, want %x", i, row, want)
				}
			}
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("after the last row: %v, want io.EOF", err)
			}
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("EOF is not sticky: %v", err)
			}
		})
	}

	r, _ := NewBinaryReader(bytes.NewReader(stream), Options{})
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if r.Columns() != 4 {
		t.Fatalf("columns %d", r.Columns())
	}
	checkField := func(i int, want []byte, wantNull bool) {
		t.Helper()
		got, isNull, err := r.Field(i)
		if err != nil || isNull != wantNull || !bytes.Equal(got, want) || (!wantNull && got == nil) {
			t.Fatalf("field %d: %q null=%v err=%v; want %q null=%v", i, got, isNull, err, want, wantNull)
		}
	}
	checkField(0, i8(1), false)
	checkField(1, []byte("alpha"), false)
	checkField(2, nil, true)
	checkField(3, []byte{}, false)
	for _, i := range []int{-1, 4, 100} {
		if _, _, err := r.Field(i); !errors.Is(err, ErrMalformed) {
			t.Fatalf("field %d: %v", i, err)
		}
	}
	// A field slice cannot be appended into the next field.
	f, _, _ := r.Field(1)
	if cap(f) != len(f) {
		t.Fatalf("field capacity %d exceeds its length %d", cap(f), len(f))
	}
}

func TestBinaryReaderEmptyTable(t *testing.T) {
	r, _ := NewBinaryReader(bytes.NewReader(binStream()), Options{})
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("got %v, want io.EOF", err)
	}
}

func TestBinaryReaderMalformed(t *testing.T) {
	good := binStream(binRow(i8(1), []byte("a")), binRow(i8(2), null))
	header := []byte(binaryHeader)
	cases := map[string][]byte{
		"empty":               {},
		"bad signature":       append([]byte("PGCOPY\n\xff\r\n\x01"), good[11:]...),
		"text instead":        []byte("1\ta\n2\t\\N\n"),
		"short header":        good[:15],
		"critical flags":      append([]byte(binarySignature+"\x00\x01\x00\x00\x00\x00\x00\x00"), good[19:]...),
		"negative extension":  append([]byte(binarySignature+"\x00\x00\x00\x00\xff\xff\xff\xfe"), good[19:]...),
		"truncated extension": []byte(binarySignature + "\x00\x00\x00\x00\x00\x00\x00\x10abc"),
		"no trailer":          good[:len(good)-2],
		"half a trailer":      good[:len(good)-1],
		"cut in a length":     good[:len(header)+2+2],
		"cut in a field":      good[:len(header)+2+4+3],
		"data after trailer":  append(bytes.Clone(good), 0),
		"field count -2":      append(bytes.Clone(header), 0xff, 0xfe),
		"field length -2":     append(bytes.Clone(header), 0, 1, 0xff, 0xff, 0xff, 0xfe),
		"field count changes": binStream(binRow(i8(1), i8(2)), binRow(i8(1))),
		"giant length":        append(bytes.Clone(header), 0, 1, 0x7f, 0xff, 0xff, 0xff, 1, 2, 3),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			r, _ := NewBinaryReader(bytes.NewReader(data), Options{})
			_, err := readAll(t, r)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
	// Field after a failure inside a row reports an error instead of
	// indexing the previous row with the broken row's offsets.
	cut := binStream(binRow(i8(1), []byte("a")), binRow(null, []byte("bbbb")))
	cut = cut[:len(cut)-2-1] // the second row loses its last byte
	r, _ := NewBinaryReader(bytes.NewReader(cut), Options{Columns: 0})
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("cut row: %v", err)
	}
	for i := range 3 {
		if _, _, err := r.Field(i); !errors.Is(err, ErrMalformed) {
			t.Fatalf("field %d after a failure: %v", i, err)
		}
	}
	// A field count that disagrees with Options.Columns.
	r, _ = NewBinaryReader(bytes.NewReader(good), Options{Columns: 3})
	if _, err := readAll(t, r); !errors.Is(err, ErrMalformed) {
		t.Fatalf("column count: %v", err)
	}
	// A row longer than MaxRowSize.
	big := binStream(binRow(bytes.Repeat([]byte("x"), 100)))
	r, _ = NewBinaryReader(bytes.NewReader(big), Options{MaxRowSize: 64})
	if _, err := readAll(t, r); !errors.Is(err, ErrMalformed) {
		t.Fatalf("max row size: %v", err)
	}
	// A read error is reported as such, not as malformed data.
	boom := errors.New("boom")
	r, _ = NewBinaryReader(io.MultiReader(bytes.NewReader(good[:30]), iotest.ErrReader(boom)), Options{})
	if _, err := readAll(t, r); !errors.Is(err, boom) || errors.Is(err, ErrMalformed) {
		t.Fatalf("read error: %v", err)
	}
}

// TestBinaryReaderGiantLengthAllocation checks that a length claiming
// hundreds of megabytes in a truncated stream costs memory in proportion to
// the bytes actually received, not to the claim.
func TestBinaryReaderGiantLengthAllocation(t *testing.T) {
	data := append([]byte(binaryHeader), 0, 1, 0x1f, 0xff, 0xff, 0xff) // a 512 MiB field
	data = append(data, bytes.Repeat([]byte("y"), 100_000)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r, _ := NewBinaryReader(bytes.NewReader(data), Options{})
	_, err := readAll(t, r)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 4<<20 {
		t.Fatalf("allocated %d bytes for a 100 kB stream", n)
	}
}

func TestBinaryWriter(t *testing.T) {
	var out bytes.Buffer
	w, err := NewBinaryWriter(&out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != binaryHeader+binaryTrailer {
		t.Fatalf("empty stream %q", got)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := w.WriteRow(binRow(i8(1))); err == nil {
		t.Fatal("write after Close accepted")
	}

	// Rows read and written again give back the stream.
	src := binStream(binRow(i8(1), []byte("a"), null), binRow(i8(2), null, []byte{}))
	out.Reset()
	r, _ := NewBinaryReader(bytes.NewReader(src), Options{})
	w, _ = NewBinaryWriter(&out, Options{WriteBufferSize: 16})
	rows, err := readAll(t, r)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		if err := w.WriteRow(row); err != nil {
			t.Fatal(err)
		}
	}
	if out.Len() > 0 && !bytes.HasPrefix(out.Bytes(), []byte(binaryHeader)) {
		t.Fatal("stream does not start with the header")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), src) {
		t.Fatalf("round trip:\n%x\nwant\n%x", out.Bytes(), src)
	}
}

func TestBinaryWriterWidening(t *testing.T) {
	var out bytes.Buffer
	w, err := NewBinaryWriter(&out, Options{Widen: []int{0, 1, 2, 3, 4}})
	if err != nil {
		t.Fatal(err)
	}
	in := [][]byte{
		binRow(i2(-2), i4(-70000), i8(-5), null, i4(2147483647), []byte("text stays")),
		binRow(i2(32767), i4(-2147483648), i8(1<<40), i2(-32768), null, null),
	}
	want := [][]byte{
		binRow(i8(-2), i8(-70000), i8(-5), null, i8(2147483647), []byte("text stays")),
		binRow(i8(32767), i8(-2147483648), i8(1<<40), i8(-32768), null, null),
	}
	for _, row := range in {
		if err := w.WriteRow(row); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), binStream(want...)) {
		t.Fatalf("widened:\n%x\nwant\n%x", out.Bytes(), binStream(want...))
	}

	// Fields that cannot be widened, and rows too short for the columns.
	w, _ = NewBinaryWriter(io.Discard, Options{Widen: []int{1}})
	for name, row := range map[string][]byte{
		"3-byte field": binRow(i8(1), []byte{1, 2, 3}),
		"1 field":      binRow(i4(1)),
		"cut row":      binRow(i8(1), i4(1))[:10],
		"extra bytes":  append(binRow(i8(1), i4(1)), 0),
		"bad length":   append(binary.BigEndian.AppendUint16(nil, 2), 0, 0, 0, 9, 1),
	} {
		if err := w.WriteRow(row); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := NewBinaryWriter(io.Discard, Options{Widen: []int{-1}}); err == nil {
		t.Fatal("negative widened column accepted")
	}
	if _, err := NewBinaryWriter(io.Discard, Options{Widen: []int{3}, Columns: 3}); err == nil {
		t.Fatal("widened column beyond Columns accepted")
	}
}

type failWriter struct{ err error }

func (f failWriter) Write(p []byte) (int, error) { return 0, f.err }

func TestWriterErrors(t *testing.T) {
	boom := errors.New("boom")
	w, _ := NewBinaryWriter(failWriter{boom}, Options{WriteBufferSize: 32})
	var err error
	for i := 0; i < 10 && err == nil; i++ {
		err = w.WriteRow(binRow(i8(int64(i))))
	}
	if !errors.Is(err, boom) {
		t.Fatalf("write: %v", err)
	}
	if err := w.WriteRow(binRow(i8(1))); !errors.Is(err, boom) {
		t.Fatalf("error is not sticky: %v", err)
	}
	tw, _ := NewTextWriter(failWriter{boom}, Options{})
	if err := tw.WriteRow([]byte("1\n")); err != nil {
		t.Fatalf("buffered write failed early: %v", err)
	}
	if err := tw.Close(); !errors.Is(err, boom) {
		t.Fatalf("close: %v", err)
	}
	// A short write is an error too.
	sw, _ := NewTextWriter(shortWriter{}, Options{})
	_ = sw.WriteRow([]byte("12345\n"))
	if err := sw.Close(); !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("short write: %v", err)
	}
}

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, nil }
