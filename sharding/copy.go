package sharding

import (
	"errors"
	"fmt"
	"io"
)

// ErrMalformed is wrapped by every error about a COPY stream that is not
// well formed: a bad header, a truncated row or stream, an impossible field
// length, a row with the wrong number of fields, data after the end.
var ErrMalformed = errors.New("malformed COPY data")

func malformed(format string, args ...any) error {
	return fmt.Errorf("sharding: %w: "+format, append([]any{ErrMalformed}, args...)...)
}

// Default sizes of Options.
const (
	// DefaultBufferSize is the default size of read and write buffers.
	DefaultBufferSize = 64 << 10
	// DefaultMaxRowSize is the default largest row, in bytes: PostgreSQL
	// caps a single field at 1 GiB.
	DefaultMaxRowSize = 1 << 30
)

// Options tune the COPY codecs. The zero value is ready to use.
type Options struct {
	// Columns is the number of fields every row must have; 0 takes it from
	// the first row. A row with another number of fields is an error.
	Columns int
	// ReadBufferSize is the initial size of a reader's buffer
	// (DefaultBufferSize if 0). It grows, by doubling and only as data
	// arrives, to hold a row that does not fit.
	ReadBufferSize int
	// WriteBufferSize is the size of each writer's buffer
	// (DefaultBufferSize if 0).
	WriteBufferSize int
	// MaxRowSize is the largest row accepted, in bytes (DefaultMaxRowSize
	// if 0). A longer row, or a field length that claims more, is an error.
	MaxRowSize int
	// Widen lists the columns (0-based) whose destination type is bigint
	// while the source's may be smallint or integer. In binary format the
	// writers rewrite such 2- and 4-byte fields to 8 bytes, sign-extended;
	// text rows need no change, as the text of any integer is valid bigint
	// text.
	Widen []int
}

func (o *Options) readBufferSize() int {
	if o.ReadBufferSize > 0 {
		return o.ReadBufferSize
	}
	return DefaultBufferSize
}

func (o *Options) writeBufferSize() int {
	if o.WriteBufferSize > 0 {
		return o.WriteBufferSize
	}
	return DefaultBufferSize
}

func (o *Options) maxRowSize() int {
	if o.MaxRowSize > 0 {
		return o.MaxRowSize
	}
	return DefaultMaxRowSize
}

// columns returns the expected field count, -1 for "take it from the
// first row".
func (o *Options) columns() int {
	if o.Columns > 0 {
		return o.Columns
	}
	return -1
}

func (o *Options) check() error {
	switch {
	case o.Columns < 0:
		return fmt.Errorf("sharding: negative column count %d", o.Columns)
	case o.ReadBufferSize < 0 || o.WriteBufferSize < 0:
		return fmt.Errorf("sharding: negative buffer size")
	case o.MaxRowSize < 0:
		return fmt.Errorf("sharding: negative maximum row size %d", o.MaxRowSize)
	}
	for _, c := range o.Widen {
		if c < 0 || c > 1<<15 {
			return fmt.Errorf("sharding: widened column %d out of range", c)
		}
		if o.Columns > 0 && c >= o.Columns {
			return fmt.Errorf("sharding: widened column %d beyond the %d columns", c, o.Columns)
		}
	}
	return nil
}

// RowReader reads the rows of a COPY ... TO STDOUT stream.
type RowReader interface {
	// Next returns the next row as framed in the stream (a binary tuple
	// with its field count; a text line with its newline), which a
	// RowWriter of the same format can copy as is. The slice is valid until
	// the next call to Next. At the end of a complete stream Next returns
	// io.EOF; at the end of a truncated one, an error wrapping ErrMalformed.
	Next() ([]byte, error)
	// Field returns field i (0-based) of the current row: the raw bytes of
	// a binary field, or the unescaped text of a text field. The slice is
	// valid until the next call to Next or Field.
	Field(i int) (data []byte, isNull bool, err error)
}

// RowWriter frames rows into a COPY ... FROM STDIN stream.
type RowWriter interface {
	// WriteRow writes one row as a RowReader of the same format returned
	// it.
	WriteRow(row []byte) error
	// Close ends the stream (the binary trailer) and flushes it. It does
	// not close the underlying writer.
	Close() error
}

// NewRowReader returns a reader of COPY data in format f read from src.
func NewRowReader(f Format, src io.Reader, opts Options) (RowReader, error) {
	switch f {
	case FormatBinary:
		return NewBinaryReader(src, opts)
	case FormatText:
		return NewTextReader(src, opts)
	}
	return nil, fmt.Errorf("sharding: invalid copy format %v", f)
}

// NewRowWriter returns a writer of COPY data in format f to dst.
func NewRowWriter(f Format, dst io.Writer, opts Options) (RowWriter, error) {
	switch f {
	case FormatBinary:
		return NewBinaryWriter(dst, opts)
	case FormatText:
		return NewTextWriter(dst, opts)
	}
	return nil, fmt.Errorf("sharding: invalid copy format %v", f)
}

// streamBuf is a growable read buffer over an io.Reader: buf[r:w] holds
// the bytes read and not yet consumed.
type streamBuf struct {
	src  io.Reader
	buf  []byte
	size int
	r, w int
	read int64 // bytes read from src
	err  error // deferred read error
}

func (b *streamBuf) data() []byte { return b.buf[b.r:b.w] }

// more reads at least one more byte into the buffer, first making room:
// moving the unconsumed bytes to the front, and doubling the buffer when
// they fill it. It returns io.EOF at the end of the source.
func (b *streamBuf) more() error {
	if b.buf == nil {
		b.buf = make([]byte, b.size)
	}
	if b.r == b.w {
		b.r, b.w = 0, 0
	}
	if b.w == len(b.buf) || (b.r > 0 && len(b.buf)-b.w < len(b.buf)/4) {
		if b.r > 0 {
			n := copy(b.buf, b.buf[b.r:b.w])
			b.r, b.w = 0, n
		}
		if b.w == len(b.buf) {
			nb := make([]byte, 2*len(b.buf))
			copy(nb, b.buf[:b.w])
			b.buf = nb
		}
	}
	if b.err != nil {
		return b.err
	}
	for range 100 {
		n, err := b.src.Read(b.buf[b.w:])
		if n < 0 || n > len(b.buf)-b.w {
			return errors.New("sharding: source reader returned an invalid count")
		}
		b.w += n
		b.read += int64(n)
		if err != nil {
			b.err = err
		}
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}
