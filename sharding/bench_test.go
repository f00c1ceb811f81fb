package sharding

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"
)

// benchRows is the number of distinct rows the benchmark streams repeat.
const benchRows = 10000

// benchTable describes the benchmark's rows: id int8, user_id int8 (the
// sharding column), note text, created_at timestamptz; about 100 bytes a
// row in either format.
func benchNote(i int) string {
	return fmt.Sprintf("order %08d: two widgets, one gadget, gift wrap, deliver%4d", i, i%1000)
}

// benchBinaryRows returns benchRows binary tuples.
func benchBinaryRows() []byte {
	var b []byte
	for i := range benchRows {
		b = binary.BigEndian.AppendUint16(b, 4)
		b = binary.BigEndian.AppendUint32(b, 8)
		b = binary.BigEndian.AppendUint64(b, uint64(i))
		b = binary.BigEndian.AppendUint32(b, 8)
		b = binary.BigEndian.AppendUint64(b, uint64(i*7919%100003))
		note := benchNote(i)
		b = binary.BigEndian.AppendUint32(b, uint32(len(note)))
		b = append(b, note...)
		b = binary.BigEndian.AppendUint32(b, 8)
		b = binary.BigEndian.AppendUint64(b, uint64(int64(i)*1_000_000+757_000_000_000_000))
	}
	return b
}

// benchTextRows returns benchRows text lines.
func benchTextRows() []byte {
	var b []byte
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range benchRows {
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, '\t')
		b = strconv.AppendInt(b, int64(i*7919%100003), 10)
		b = append(b, '\t')
		b = append(b, benchNote(i)...)
		b = append(b, '\t')
		b = t0.Add(time.Duration(i)*time.Second).AppendFormat(b, "2006-01-02 15:04:05-07")
		b = append(b, '\n')
	}
	return b
}

// repeatReader serves head, then body repeated n times, then tail, in
// reads of at most chunk bytes (0: as much as asked).
type repeatReader struct {
	head, body, tail []byte
	n, chunk         int
	state            int // 0 head, 1 body, 2 tail, 3 done
	off              int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.chunk > 0 && len(p) > r.chunk {
		p = p[:r.chunk]
	}
	total := 0
	for len(p) > 0 && r.state < 3 {
		var src []byte
		switch r.state {
		case 0:
			src = r.head
		case 1:
			src = r.body
			if r.n == 0 {
				r.state, r.off = 2, 0
				continue
			}
		case 2:
			src = r.tail
		}
		k := copy(p, src[r.off:])
		p = p[k:]
		total += k
		r.off += k
		if r.off == len(src) {
			r.off = 0
			if r.state == 1 {
				r.n--
			} else {
				r.state++
			}
		}
	}
	if total == 0 && r.state == 3 {
		return 0, io.EOF
	}
	return total, nil
}

func benchSplit(b *testing.B, f Format, head, rows, tail []byte, shards int) {
	router, err := NewRouter(Table{Column: 1, Type: BigInt, Shards: shards})
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]io.Writer, shards)
	for i := range dst {
		dst[i] = io.Discard
	}
	reps := (b.N + benchRows - 1) / benchRows
	b.SetBytes(int64(len(rows) / benchRows))
	b.ReportAllocs()
	b.ResetTimer()
	src := &repeatReader{head: head, body: rows, tail: tail, n: reps}
	st, err := Split(f, router, src, dst, Options{})
	if err != nil {
		b.Fatal(err)
	}
	if st.Rows != int64(reps*benchRows) {
		b.Fatalf("split %d rows, want %d", st.Rows, reps*benchRows)
	}
	b.ReportMetric(float64(st.Rows)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkSplitBinary4Shards(b *testing.B) {
	benchSplit(b, FormatBinary, []byte(binaryHeader), benchBinaryRows(), []byte(binaryTrailer), 4)
}

func BenchmarkSplitText4Shards(b *testing.B) {
	benchSplit(b, FormatText, nil, benchTextRows(), nil, 4)
}

// benchPush pushes rows into a Splitter one Write per row, as pgconn's
// CopyTo delivers them (one CopyData message per row).
func benchPush(b *testing.B, f Format, head, rows, tail []byte, shards int) {
	router, err := NewRouter(Table{Column: 1, Type: BigInt, Shards: shards})
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]io.Writer, shards)
	for i := range dst {
		dst[i] = io.Discard
	}
	// Cut the block into rows.
	r, err := NewRowReader(f, bytes.NewReader(append(append(append([]byte(nil), head...), rows...), tail...)), Options{})
	if err != nil {
		b.Fatal(err)
	}
	var ends []int
	off := 0
	for {
		row, err := r.Next()
		if err != nil {
			break
		}
		off += len(row)
		ends = append(ends, off)
	}
	if len(ends) != benchRows {
		b.Fatalf("%d rows", len(ends))
	}
	s, err := NewSplitter(f, router, dst, Options{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Write(head); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(rows) / benchRows))
	b.ReportAllocs()
	b.ResetTimer()
	start := 0
	for i := range b.N {
		k := i % benchRows
		if k == 0 {
			start = 0
		}
		if _, err := s.Write(rows[start:ends[k]]); err != nil {
			b.Fatal(err)
		}
		start = ends[k]
	}
	if _, err := s.Write(tail); err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkSplitBinary4ShardsPush(b *testing.B) {
	benchPush(b, FormatBinary, []byte(binaryHeader), benchBinaryRows(), []byte(binaryTrailer), 4)
}

func BenchmarkSplitText4ShardsPush(b *testing.B) {
	benchPush(b, FormatText, nil, benchTextRows(), nil, 4)
}

// BenchmarkShardInt measures placing one integer key given in binary form.
func BenchmarkShardInt(b *testing.B) {
	r, _ := NewRouter(Table{Column: 0, Type: BigInt, Shards: 4})
	key := i8(123456789)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Shard(FormatBinary, key, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkShardText measures placing one 36-byte text key.
func BenchmarkShardText(b *testing.B) {
	r, _ := NewRouter(Table{Column: 0, Type: Text, Shards: 4})
	key := []byte("user-5f1c2a9e-0b7d-4c3e-9a55-1d2e3f4a")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Shard(FormatText, key, false); err != nil {
			b.Fatal(err)
		}
	}
}
