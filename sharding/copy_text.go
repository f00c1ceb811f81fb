package sharding

import (
	"bytes"
	"fmt"
	"io"
)

// textDecoder splits a text COPY stream into lines (rows) ended by a
// newline, fields separated by tabs. It reads what PostgreSQL writes: the
// default delimiter and NULL string (\N), newline line ends, and raw tabs
// and newlines only as separators (in data they are escaped as \t and \n).
// A line holding only \. ends the data, as in COPY FROM STDIN.
type textDecoder struct {
	columns int // fields per row, -1 until the first non-empty row
	maxRow  int
	done    bool   // the end-of-data marker \. has been consumed
	line    []byte // the last row, without its newline
	scratch []byte // unescaped field text
	scanned int    // bytes of an incomplete row known to hold no newline
}

func newTextDecoder(opts *Options) textDecoder {
	return textDecoder{columns: opts.columns(), maxRow: opts.maxRowSize()}
}

// split consumes the line at the start of data and returns it with its
// newline; it returns 0 if data does not hold a whole line yet, and the
// next call must pass the same bytes again, possibly followed by more.
func (d *textDecoder) split(data []byte) (int, []byte, error) {
	if d.done {
		if len(data) > 0 {
			return 0, nil, malformed("%d bytes after the end-of-data marker", len(data))
		}
		return 0, nil, nil
	}
	if len(data) == 0 {
		return 0, nil, nil
	}
	i := bytes.IndexByte(data[d.scanned:], '\n')
	if i < 0 {
		if len(data) > d.maxRow {
			return 0, nil, malformed("row longer than %d bytes", d.maxRow)
		}
		d.scanned = len(data)
		return 0, nil, nil
	}
	i += d.scanned
	d.scanned = 0
	if i > d.maxRow {
		return 0, nil, malformed("row of %d bytes, longer than %d", i, d.maxRow)
	}
	line := data[:i]
	if i == 2 && line[0] == '\\' && line[1] == '.' {
		d.done = true
		return i + 1, nil, nil
	}
	if i > 0 && line[i-1] == '\\' && oddBackslashes(line) {
		return 0, nil, malformed("row ends in an unescaped backslash")
	}
	// An empty line is the row of a table without columns as well as a row
	// holding one empty string: it fits either count.
	if i > 0 || (d.columns != 0 && d.columns != 1) {
		n := bytes.Count(line, []byte{'\t'}) + 1
		if n != d.columns {
			if d.columns >= 0 {
				return 0, nil, malformed("row has %d fields, want %d", n, d.columns)
			}
			d.columns = n
		}
	}
	d.line = line
	return i + 1, data[: i+1 : i+1], nil
}

// oddBackslashes reports whether b ends in an odd number of backslashes,
// that is, whether its last byte is an unescaped backslash.
func oddBackslashes(b []byte) bool {
	n := 0
	for n < len(b) && b[len(b)-1-n] == '\\' {
		n++
	}
	return n%2 == 1
}

// finish checks that the stream may end with rest unconsumed.
func (d *textDecoder) finish(rest []byte) error {
	if len(rest) > 0 {
		return malformed("stream ends in a row without its newline (%d bytes)", len(rest))
	}
	return nil
}

// field returns field i of the last row, unescaped.
func (d *textDecoder) field(i int) ([]byte, bool, error) {
	if i < 0 {
		return nil, false, malformed("no field %d", i)
	}
	line := d.line
	for k := 0; k < i; k++ {
		j := bytes.IndexByte(line, '\t')
		if j < 0 {
			return nil, false, malformed("no field %d in a row of %d fields", i, k+1)
		}
		if oddBackslashes(line[:j]) {
			return nil, false, malformed("escaped delimiter in field %d", k)
		}
		line = line[j+1:]
	}
	// Keys are short: one pass finds the field's end and any escape.
	escaped := false
	for j, c := range line {
		if c == '\t' {
			line = line[:j]
			break
		}
		if c == '\\' {
			escaped = true
		}
	}
	if len(line) == 2 && line[0] == '\\' && line[1] == 'N' {
		return nil, true, nil
	}
	if !escaped {
		return line[:len(line):len(line)], false, nil
	}
	var err error
	d.scratch, err = unescapeText(d.scratch[:0], line)
	if err != nil {
		return nil, false, err
	}
	return d.scratch, false, nil
}

// unescapeText appends to dst the field text s with COPY's backslash
// escapes undone, as PostgreSQL's COPY FROM reads them: \b \f \n \r \t \v,
// one to three octal digits, \x and one or two hex digits; a backslash
// before any other character stands for that character.
func unescapeText(dst, s []byte) ([]byte, error) {
	for len(s) > 0 {
		i := bytes.IndexByte(s, '\\')
		if i < 0 {
			return append(dst, s...), nil
		}
		dst = append(dst, s[:i]...)
		s = s[i+1:]
		if len(s) == 0 {
			return dst, malformed("field ends in an unescaped backslash")
		}
		c := s[0]
		s = s[1:]
		switch c {
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v := c - '0'
			for k := 0; k < 2 && len(s) > 0 && s[0] >= '0' && s[0] <= '7'; k++ {
				v = v<<3 + (s[0] - '0') // wraps like PostgreSQL's val & 0377
				s = s[1:]
			}
			c = v
		case 'x':
			if len(s) > 0 {
				if h, ok := unhex(s[0]); ok {
					v := h
					s = s[1:]
					if len(s) > 0 {
						if h, ok := unhex(s[0]); ok {
							v = v<<4 | h
							s = s[1:]
						}
					}
					c = v
				}
			}
		case 'b':
			c = '\b'
		case 'f':
			c = '\f'
		case 'n':
			c = '\n'
		case 'r':
			c = '\r'
		case 't':
			c = '\t'
		case 'v':
			c = '\v'
		}
		dst = append(dst, c)
	}
	return dst, nil
}

// TextReader reads the rows of a COPY ... TO STDOUT text-format stream. It
// reuses one buffer and one scratch buffer for unescaped fields: it does not
// allocate per row.
type TextReader struct {
	buf streamBuf
	dec textDecoder
	err error
}

// NewTextReader returns a reader of the text COPY stream src.
func NewTextReader(src io.Reader, opts Options) (*TextReader, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	return &TextReader{
		buf: streamBuf{src: src, size: opts.readBufferSize()},
		dec: newTextDecoder(&opts),
	}, nil
}

// Next returns the next row (the line with its newline), valid until the
// next call. It returns io.EOF at the end of the stream, and an error
// wrapping ErrMalformed if the stream ends inside a row or is otherwise not
// well formed.
func (r *TextReader) Next() ([]byte, error) {
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

// Field returns the text of field i of the current row with its escapes
// undone (nil and true for \N). The slice is valid until the next call to
// Next or Field.
func (r *TextReader) Field(i int) ([]byte, bool, error) {
	return r.dec.field(i)
}

// Columns returns the number of fields per row, or -1 before the first
// non-empty row when Options.Columns was 0.
func (r *TextReader) Columns() int { return r.dec.columns }

// TextWriter writes rows into a COPY ... FROM STDIN text-format stream,
// verbatim.
type TextWriter struct {
	w      outBuf
	closed bool
}

// NewTextWriter returns a writer of a text COPY stream to dst, buffered by
// Options.WriteBufferSize bytes. Options.Widen needs no work in text format
// and is ignored.
func NewTextWriter(dst io.Writer, opts Options) (*TextWriter, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	return &TextWriter{w: outBuf{dst: dst, size: opts.writeBufferSize()}}, nil
}

// WriteRow writes one row (a line with its newline) as TextReader.Next
// returned it.
func (w *TextWriter) WriteRow(row []byte) error {
	if w.closed {
		return fmt.Errorf("sharding: write to a closed COPY stream")
	}
	if err := w.w.write(row); err != nil {
		return err
	}
	return nil
}

// Flush writes buffered data to the underlying writer.
func (w *TextWriter) Flush() error {
	return w.w.flush()
}

// Close flushes the stream. It does not close the underlying writer.
// Closing twice is a no-op.
func (w *TextWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	return w.Flush()
}
