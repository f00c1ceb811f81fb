package sharding

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// chunkReader returns data in reads of at most n bytes.
type chunkReader struct {
	data []byte
	n    int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.data)
	c.data = c.data[k:]
	return k, nil
}

// fuzzRead reads data with r, checking every field of every row, and
// returns the rows and the final error (nil for a complete stream). It
// fails the test if any error is not ErrMalformed.
func fuzzRead(t *testing.T, r RowReader, columns func() int) ([][]byte, error) {
	var rows [][]byte
	for {
		row, err := r.Next()
		if err == io.EOF {
			return rows, nil
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not wrapping ErrMalformed: %v", err)
			}
			// Fields after a failure: an error or stale data, never a panic.
			for i := range 4 {
				_, _, _ = r.Field(i)
			}
			return rows, err
		}
		rows = append(rows, bytes.Clone(row))
		n := columns()
		for i := range min(n, 64) + 1 {
			if i == min(n, 64) {
				i = n
			}
			f, isNull, err := r.Field(i)
			switch {
			case err != nil && !errors.Is(err, ErrMalformed):
				t.Fatalf("field %d: error not wrapping ErrMalformed: %v", i, err)
			case err != nil:
			case isNull && f != nil:
				t.Fatalf("field %d: NULL with data %q", i, f)
			case i == n && len(row) > 1:
				t.Fatalf("field %d of a %d-field row: %q", i, n, f)
			}
		}
		if _, _, err := r.Field(-1); err == nil {
			t.Fatal("field -1 accepted")
		}
	}
}

// splitOmni pushes data through a one-shard omni Splitter in chunks of
// chunk bytes and returns the shard's stream.
func splitOmni(t *testing.T, f Format, data []byte, chunk int, opts Options) ([]byte, error) {
	router, err := NewRouter(Table{Omni: true, Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	s, err := NewSplitter(f, router, []io.Writer{&out}, opts)
	if err != nil {
		t.Fatal(err)
	}
	for len(data) > 0 {
		n := min(chunk, len(data))
		if _, err := s.Write(data[:n]); err != nil {
			return nil, err
		}
		data = data[n:]
	}
	err = s.Close()
	return out.Bytes(), err
}

func FuzzBinaryReader(f *testing.F) {
	good := binStream(
		binRow(i8(1), []byte("alpha"), null, []byte{}),
		binRow(i8(-2), null, i4(7), []byte("x")),
	)
	f.Add(good, uint8(0))
	f.Add(good, uint8(3))
	f.Add(binStream(), uint8(1))
	f.Add(binStream(binRow()), uint8(1))
	f.Add(binStream(binRow(i2(1), i4(2), i8(3))), uint8(7))
	f.Add([]byte(binarySignature+"\x00\x00\x00\x00\x00\x00\x00\x02xy\x00\x01\x00\x00\x00\x01z\xff\xff"), uint8(2))
	f.Add(good[:len(good)-1], uint8(5))
	f.Add(append(bytes.Clone(good), 0), uint8(5))
	f.Add(append([]byte(binaryHeader), 0, 1, 0x7f, 0xff, 0xff, 0xff, 1), uint8(0))
	f.Add(append([]byte(binaryHeader), 0xff, 0xfe), uint8(0))
	f.Add([]byte("PGCOPY"), uint8(0))
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		opts := Options{ReadBufferSize: 16, MaxRowSize: 1 << 16}
		r, err := NewBinaryReader(&chunkReader{data: data, n: 1 + int(chunk)%64}, opts)
		if err != nil {
			t.Fatal(err)
		}
		rows, readErr := fuzzRead(t, r, r.Columns)

		// The Splitter (pushed in chunks) agrees with the reader, and its
		// output is the rows under a fresh header.
		out, splitErr := splitOmni(t, FormatBinary, data, 1+int(chunk)%37, opts)
		if (readErr == nil) != (splitErr == nil) {
			t.Fatalf("reader error %v, splitter error %v", readErr, splitErr)
		}
		if readErr != nil {
			return
		}
		if want := binStream(rows...); !bytes.Equal(out, want) {
			t.Fatalf("splitter output\n%x\nwant\n%x", out, want)
		}
		// Written again, the rows read back the same.
		var buf bytes.Buffer
		w, _ := NewBinaryWriter(&buf, Options{WriteBufferSize: 7})
		for _, row := range rows {
			if err := w.WriteRow(row); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		r2, _ := NewBinaryReader(iotest.HalfReader(&buf), Options{})
		rows2, err := fuzzRead(t, r2, r2.Columns)
		if err != nil || len(rows2) != len(rows) {
			t.Fatalf("re-read: %d rows, %v; want %d", len(rows2), err, len(rows))
		}
		for i := range rows {
			if !bytes.Equal(rows[i], rows2[i]) {
				t.Fatalf("row %d re-read as %x, want %x", i, rows2[i], rows[i])
			}
		}
		// Widening every column either works or reports malformed data.
		ww, _ := NewBinaryWriter(io.Discard, Options{Widen: []int{0, 1, 2}})
		for _, row := range rows {
			if err := ww.WriteRow(row); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatal(err)
			}
		}
	})
}

func FuzzTextReader(f *testing.F) {
	f.Add([]byte("1\tplain\t\\N\n-2\ttab\\there\\nnew\t\n\\N\tback\\\\slash\t\\x41\n"), uint8(0))
	f.Add([]byte("1\ta\\101\\0\\777\\x4g\\xg\\q\n"), uint8(2))
	f.Add([]byte("1\n\\.\n"), uint8(1))
	f.Add([]byte("\n\n\n"), uint8(1))
	f.Add([]byte("1\ta\n2\tb"), uint8(4))
	f.Add([]byte("1\ta\n2\tb\tc\n"), uint8(4))
	f.Add([]byte("a\\\tb\tc\n"), uint8(9))
	f.Add([]byte("1\ta\\\n"), uint8(0))
	f.Add([]byte("1\ta\\\\\n"), uint8(0))
	f.Add([]byte("ünï\tcödé\t€\n"), uint8(3))
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		opts := Options{ReadBufferSize: 16, MaxRowSize: 1 << 16}
		r, err := NewTextReader(&chunkReader{data: data, n: 1 + int(chunk)%64}, opts)
		if err != nil {
			t.Fatal(err)
		}
		rows, readErr := fuzzRead(t, r, r.Columns)
		out, splitErr := splitOmni(t, FormatText, data, 1+int(chunk)%37, opts)
		if (readErr == nil) != (splitErr == nil) {
			t.Fatalf("reader error %v, splitter error %v", readErr, splitErr)
		}
		if readErr != nil {
			return
		}
		// The rows are the stream, up to an end-of-data marker.
		joined := bytes.Join(rows, nil)
		if !bytes.Equal(joined, data) && !bytes.Equal(append(joined, "\\.\n"...), data) {
			t.Fatalf("rows %q do not make up %q", joined, data)
		}
		if !bytes.Equal(out, joined) {
			t.Fatalf("splitter output %q, want %q", out, joined)
		}
		for _, row := range rows {
			if row[len(row)-1] != '\n' || bytes.IndexByte(row[:len(row)-1], '\n') >= 0 {
				t.Fatalf("row %q is not one line", row)
			}
		}
	})
}
