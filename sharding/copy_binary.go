package sharding

import (
	"encoding/binary"
	"fmt"
	"io"
)

// binarySignature opens every binary COPY stream.
const binarySignature = "PGCOPY\n\xff\r\n\x00"

// binaryHeader is the header BinaryWriter writes: the signature, flags 0
// and an empty header extension.
const binaryHeader = binarySignature + "\x00\x00\x00\x00" + "\x00\x00\x00\x00"

// binaryTrailer ends a binary COPY stream: a field count of -1.
const binaryTrailer = "\xff\xff"

// binaryDecoder splits a binary COPY stream: the header, then tuples (an
// int16 field count, then per field an int32 length, -1 for NULL, and that
// many bytes), then the trailer (a field count of -1).
type binaryDecoder struct {
	columns int // fields per row, -1 until the first row
	maxRow  int
	header  bool // the header has been consumed
	trailer bool // the trailer has been consumed
	row     []byte
	offs    []int // offset in row of each field's length word

	// An incomplete row: its field count, and the position after the
	// fields in offs. Callers pass data from the start of the row again,
	// with more bytes, and parsing resumes there.
	partial bool
	fields  int
	pos     int
}

func newBinaryDecoder(opts *Options) binaryDecoder {
	return binaryDecoder{columns: opts.columns(), maxRow: opts.maxRowSize()}
}

// split consumes the item at the start of data: the header, a row or the
// trailer. It returns how many bytes it consumed, 0 if data does not hold
// the whole item yet, and the row if the item is one. After a 0, the next
// call must pass the same bytes again, possibly followed by more.
func (d *binaryDecoder) split(data []byte) (int, []byte, error) {
	// The last row's bytes may be overwritten once the caller refills its
	// buffer: field offsets must not be applied to them any more.
	d.row = nil
	if !d.header {
		return d.splitHeader(data)
	}
	if d.trailer {
		if len(data) > 0 {
			return 0, nil, malformed("%d bytes after the binary trailer", len(data))
		}
		return 0, nil, nil
	}
	if !d.partial {
		if len(data) < 2 {
			return 0, nil, nil
		}
		n := int(int16(binary.BigEndian.Uint16(data)))
		if n < 0 {
			if n == -1 {
				d.trailer = true
				return 2, nil, nil
			}
			return 0, nil, malformed("negative field count %d", n)
		}
		if n != d.columns {
			if d.columns >= 0 {
				return 0, nil, malformed("row has %d fields, want %d", n, d.columns)
			}
			d.columns = n
		}
		d.partial, d.fields, d.pos, d.offs, d.row = true, n, 2, d.offs[:0], nil
	}
	// Resume after the fields parsed by earlier calls on a shorter data.
	offs, pos, n := d.offs, d.pos, d.fields
	for len(offs) < n {
		if len(data)-pos < 4 {
			d.offs, d.pos = offs, pos
			return 0, nil, nil
		}
		l := int(int32(binary.BigEndian.Uint32(data[pos:])))
		if l < 0 {
			if l != -1 {
				return 0, nil, malformed("negative field length %d", l)
			}
			offs = append(offs, pos)
			pos += 4
			continue
		}
		if l > d.maxRow-pos-4 {
			return 0, nil, malformed("field of %d bytes makes the row longer than %d bytes", l, d.maxRow)
		}
		if len(data)-pos-4 < l {
			d.offs, d.pos = offs, pos
			return 0, nil, nil
		}
		offs = append(offs, pos)
		pos += 4 + l
	}
	d.offs, d.partial = offs, false
	d.row = data[:pos]
	return pos, d.row, nil
}

func (d *binaryDecoder) splitHeader(data []byte) (int, []byte, error) {
	sig := min(len(data), len(binarySignature))
	if string(data[:sig]) != binarySignature[:sig] {
		return 0, nil, malformed("bad binary COPY signature %q", data[:sig])
	}
	if len(data) < len(binaryHeader) {
		return 0, nil, nil
	}
	flags := binary.BigEndian.Uint32(data[11:])
	if flags>>16 != 0 {
		// Bits 16-31 are critical: PostgreSQL refuses them (bit 16 was
		// WITH OIDS).
		return 0, nil, malformed("unsupported critical header flags %#x", flags)
	}
	ext := int(int32(binary.BigEndian.Uint32(data[15:])))
	if ext < 0 || ext > d.maxRow {
		return 0, nil, malformed("header extension of %d bytes", ext)
	}
	if len(data)-len(binaryHeader) < ext {
		return 0, nil, nil
	}
	d.header = true
	return len(binaryHeader) + ext, nil, nil
}

// finish checks that the stream may end with rest unconsumed.
func (d *binaryDecoder) finish(rest []byte) error {
	switch {
	case !d.header:
		return malformed("stream ends in the binary header (%d bytes)", len(rest))
	case d.trailer:
		return nil
	case len(rest) > 0:
		return malformed("stream ends in a row (%d bytes)", len(rest))
	}
	return malformed("stream ends without the binary trailer")
}

// field returns field i of the last row.
func (d *binaryDecoder) field(i int) ([]byte, bool, error) {
	if d.row == nil {
		return nil, false, malformed("no current row")
	}
	if i < 0 || i >= len(d.offs) {
		return nil, false, malformed("no field %d in a row of %d fields", i, len(d.offs))
	}
	pos := d.offs[i]
	l := int(int32(binary.BigEndian.Uint32(d.row[pos:])))
	if l < 0 {
		return nil, true, nil
	}
	return d.row[pos+4 : pos+4+l : pos+4+l], false, nil
}

// BinaryReader reads the rows of a COPY ... TO STDOUT (FORMAT binary)
// stream. It reuses one buffer: it does not allocate per row.
type BinaryReader struct {
	buf streamBuf
	dec binaryDecoder
	err error
}

// NewBinaryReader returns a reader of the binary COPY stream src.
func NewBinaryReader(src io.Reader, opts Options) (*BinaryReader, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	return &BinaryReader{
		buf: streamBuf{src: src, size: opts.readBufferSize()},
		dec: newBinaryDecoder(&opts),
	}, nil
}

// Next returns the next row (its field count and fields, as framed in the
// stream), valid until the next call. It returns io.EOF after the trailer,
// and an error wrapping ErrMalformed if the stream is not well formed.
func (r *BinaryReader) Next() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	for {
		n, row, err := r.dec.split(r.buf.data())
		if err != nil {
			r.err = err
			return nil, err
		}
		r.buf.r += n
		if row != nil {
			return row, nil
		}
		if n > 0 {
			continue
		}
		if err := r.buf.more(); err != nil {
			if err == io.EOF {
				err = r.dec.finish(r.buf.data())
				if err == nil {
					err = io.EOF
				}
			} else {
				err = fmt.Errorf("sharding: reading the copy stream: %w", err)
			}
			r.err = err
			return nil, err
		}
	}
}

// Field returns the bytes of field i of the current row (nil and true for
// NULL). The slice is valid until the next call to Next.
func (r *BinaryReader) Field(i int) ([]byte, bool, error) {
	return r.dec.field(i)
}

// Columns returns the number of fields per row, or -1 before the first row
// when Options.Columns was 0.
func (r *BinaryReader) Columns() int { return r.dec.columns }

// BinaryWriter frames rows into a COPY ... FROM STDIN (FORMAT binary)
// stream: the header before the first row, the trailer at Close. Rows are
// copied as they are, except fields of the columns in Options.Widen, which
// are widened from int2 or int4 to int8.
type BinaryWriter struct {
	w       outBuf
	widen   []bool // indexed by column
	started bool
	closed  bool
	scratch [12]byte
}

// NewBinaryWriter returns a writer of a binary COPY stream to dst,
// buffered by Options.WriteBufferSize bytes.
func NewBinaryWriter(dst io.Writer, opts Options) (*BinaryWriter, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	w := &BinaryWriter{w: outBuf{dst: dst, size: opts.writeBufferSize()}}
	for _, c := range opts.Widen {
		if c >= len(w.widen) {
			w.widen = append(w.widen, make([]bool, c+1-len(w.widen))...)
		}
		w.widen[c] = true
	}
	return w, nil
}

func (w *BinaryWriter) start() error {
	if w.closed {
		return fmt.Errorf("sharding: write to a closed COPY stream")
	}
	w.started = true
	return w.w.write([]byte(binaryHeader))
}

// WriteRow writes one row as BinaryReader.Next returned it.
func (w *BinaryWriter) WriteRow(row []byte) error {
	if !w.started || w.closed {
		if err := w.start(); err != nil {
			return err
		}
	}
	if w.widen != nil {
		return w.writeWidened(row)
	}
	if err := w.w.write(row); err != nil {
		return err
	}
	return nil
}

// writeWidened copies row, rewriting 2- and 4-byte fields of widened
// columns as 8-byte ones.
func (w *BinaryWriter) writeWidened(row []byte) error {
	if len(row) < 2 {
		return malformed("row of %d bytes", len(row))
	}
	n := int(int16(binary.BigEndian.Uint16(row)))
	if n < len(w.widen) {
		return malformed("row has %d fields, fewer than the widened column %d", n, len(w.widen)-1)
	}
	pos, span := 2, 0
	for i := range n {
		if len(row)-pos < 4 {
			return malformed("row ends in field %d", i)
		}
		start := pos
		l := int(int32(binary.BigEndian.Uint32(row[pos:])))
		pos += 4
		if l == -1 {
			continue
		}
		if l < 0 || l > len(row)-pos {
			return malformed("field %d has length %d in a row of %d bytes", i, l, len(row))
		}
		if i < len(w.widen) && w.widen[i] && l != 8 {
			var v int64
			switch l {
			case 2:
				v = int64(int16(binary.BigEndian.Uint16(row[pos:])))
			case 4:
				v = int64(int32(binary.BigEndian.Uint32(row[pos:])))
			default:
				return malformed("cannot widen a %d-byte field %d to int8", l, i)
			}
			if err := w.w.write(row[span:start]); err != nil {
				return err
			}
			binary.BigEndian.PutUint32(w.scratch[:4], 8)
			binary.BigEndian.PutUint64(w.scratch[4:], uint64(v))
			if err := w.w.write(w.scratch[:]); err != nil {
				return err
			}
			span = pos + l
		}
		pos += l
	}
	if pos != len(row) {
		return malformed("%d bytes after the last field of a row", len(row)-pos)
	}
	if err := w.w.write(row[span:]); err != nil {
		return err
	}
	return nil
}

// Flush writes buffered data to the underlying writer.
func (w *BinaryWriter) Flush() error {
	return w.w.flush()
}

// Close writes the header if no row was written, then the trailer, and
// flushes. It does not close the underlying writer. Closing twice is a
// no-op.
func (w *BinaryWriter) Close() error {
	if w.closed {
		return nil
	}
	if !w.started {
		if err := w.start(); err != nil {
			return err
		}
	}
	w.closed = true
	if err := w.w.write([]byte(binaryTrailer)); err != nil {
		return err
	}
	return w.Flush()
}
