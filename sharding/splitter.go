package sharding

import (
	"errors"
	"fmt"
	"io"
)

// Splitter routes the rows of one COPY ... TO STDOUT stream to the
// COPY ... FROM STDIN streams of their shards: for every row it decodes the
// sharding key, asks the Router for the shard, and writes the row (widened
// if Options.Widen says so) to that shard's writer, or to every writer for
// an omni table.
//
// The source is either pushed with Write, in chunks of any size (so a
// Splitter can be given to pgconn's CopyTo as its io.Writer), or pulled with
// ReadFrom. Memory is bounded by the buffers: one read buffer (ReadFrom) or
// one partial row (Write), and one write buffer per shard.
//
// Close ends the destination streams. After any error the Splitter keeps
// failing, and Close neither writes the binary trailers nor flushes, so
// that destinations see an incomplete stream; the caller must still abort
// the destination COPYs (for example with io.PipeWriter.CloseWithError),
// since PostgreSQL accepts a stream that simply stops at a row boundary.
//
// A Splitter is not safe for concurrent use.
type Splitter struct {
	format  Format
	router  *Router
	column  int
	bin     binaryDecoder
	txt     textDecoder
	binOut  []*BinaryWriter
	txtOut  []*TextWriter
	pending []byte // the start of a row Write received only part of
	opts    Options
	stats   Stats
	err     error
	closed  bool
}

// Stats count what a Splitter has routed.
type Stats struct {
	// Rows is the number of source rows routed.
	Rows int64
	// Bytes is the number of source bytes consumed.
	Bytes int64
	// ShardRows is the number of rows written to each shard (an omni row
	// counts on every shard).
	ShardRows []int64
}

// NewSplitter returns a Splitter of a COPY stream in format f, routed by
// router to dst, one writer per shard (len(dst) == router.Shards()).
func NewSplitter(f Format, router *Router, dst []io.Writer, opts Options) (*Splitter, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if router == nil {
		return nil, errors.New("sharding: nil router")
	}
	if len(dst) != router.Shards() {
		return nil, fmt.Errorf("sharding: %d destination streams for %d shards", len(dst), router.Shards())
	}
	s := &Splitter{
		format: f,
		router: router,
		column: router.Column(),
		opts:   opts,
		stats:  Stats{ShardRows: make([]int64, len(dst))},
	}
	switch f {
	case FormatBinary:
		s.bin = newBinaryDecoder(&opts)
		s.binOut = make([]*BinaryWriter, len(dst))
		for i, w := range dst {
			bw, err := NewBinaryWriter(w, opts)
			if err != nil {
				return nil, err
			}
			s.binOut[i] = bw
		}
	case FormatText:
		s.txt = newTextDecoder(&opts)
		s.txtOut = make([]*TextWriter, len(dst))
		for i, w := range dst {
			tw, err := NewTextWriter(w, opts)
			if err != nil {
				return nil, err
			}
			s.txtOut[i] = tw
		}
	default:
		return nil, fmt.Errorf("sharding: invalid copy format %v", f)
	}
	return s, nil
}

// Split routes the whole COPY stream src in format f to dst by router, and
// closes the Splitter: the convenience form of NewSplitter, ReadFrom and
// Close.
func Split(f Format, router *Router, src io.Reader, dst []io.Writer, opts Options) (Stats, error) {
	s, err := NewSplitter(f, router, dst, opts)
	if err != nil {
		return Stats{}, err
	}
	if _, err := s.ReadFrom(src); err != nil {
		return s.Stats(), err
	}
	err = s.Close()
	return s.Stats(), err
}

// Stats returns the counts so far.
func (s *Splitter) Stats() Stats {
	st := s.stats
	st.ShardRows = append([]int64(nil), s.stats.ShardRows...)
	return st
}

func (s *Splitter) fail(err error) error {
	if s.err == nil {
		s.err = err
	}
	return s.err
}

// Write routes the complete rows of p, keeping an incomplete last row until
// the next Write. It always consumes all of p unless it fails.
func (s *Splitter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.closed {
		return 0, errors.New("sharding: write to a closed splitter")
	}
	if len(s.pending) == 0 {
		n, err := s.consume(p)
		if err != nil {
			return n, s.fail(err)
		}
		s.pending = append(s.pending, p[n:]...)
		return len(p), nil
	}
	s.pending = append(s.pending, p...)
	n, err := s.consume(s.pending)
	if n > 0 {
		s.pending = s.pending[:copy(s.pending, s.pending[n:])]
	}
	if err != nil {
		return 0, s.fail(err)
	}
	return len(p), nil
}

// ReadFrom routes the rows read from src until io.EOF. Rows pushed earlier
// with Write are taken into account. It does not close the Splitter.
func (s *Splitter) ReadFrom(src io.Reader) (int64, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.closed {
		return 0, errors.New("sharding: read into a closed splitter")
	}
	b := streamBuf{src: src, size: max(s.opts.readBufferSize(), 2*len(s.pending))}
	b.buf = make([]byte, b.size)
	b.w = copy(b.buf, s.pending)
	s.pending = s.pending[:0]
	for {
		n, err := s.consume(b.data())
		b.r += n
		if err != nil {
			return b.read, s.fail(err)
		}
		if err := b.more(); err == io.EOF {
			break
		} else if err != nil {
			return b.read, s.fail(fmt.Errorf("sharding: reading the copy stream: %w", err))
		}
	}
	s.pending = append(s.pending, b.data()...)
	return b.read, nil
}

// consume routes the rows at the start of data and returns how many bytes
// it used; what is left is the start of an incomplete row.
func (s *Splitter) consume(data []byte) (int, error) {
	var n int
	var err error
	if s.format == FormatBinary {
		n, err = s.consumeBinary(data)
	} else {
		n, err = s.consumeText(data)
	}
	s.stats.Bytes += int64(n)
	return n, err
}

func (s *Splitter) consumeBinary(data []byte) (int, error) {
	off := 0
	for {
		n, row, err := s.bin.split(data[off:])
		if err != nil {
			return off, s.rowError(err)
		}
		if n == 0 {
			return off, nil
		}
		off += n
		if row == nil {
			continue
		}
		shard := AllShards
		if s.column >= 0 {
			key, null, err := s.bin.field(s.column)
			if err != nil {
				return off, s.rowError(err)
			}
			if shard, err = s.router.Shard(FormatBinary, key, null); err != nil {
				return off, s.rowError(err)
			}
		}
		if shard >= 0 {
			if err := s.binOut[shard].WriteRow(row); err != nil {
				return off, s.shardError(shard, err)
			}
			s.stats.ShardRows[shard]++
			s.stats.Rows++
			continue
		}
		for i, w := range s.binOut {
			if err := w.WriteRow(row); err != nil {
				return off, s.shardError(i, err)
			}
			s.stats.ShardRows[i]++
		}
		s.stats.Rows++
	}
}

func (s *Splitter) consumeText(data []byte) (int, error) {
	off := 0
	for {
		n, row, err := s.txt.split(data[off:])
		if err != nil {
			return off, s.rowError(err)
		}
		if n == 0 {
			return off, nil
		}
		off += n
		if row == nil {
			continue
		}
		shard := AllShards
		if s.column >= 0 {
			key, null, err := s.txt.field(s.column)
			if err != nil {
				return off, s.rowError(err)
			}
			if shard, err = s.router.Shard(FormatText, key, null); err != nil {
				return off, s.rowError(err)
			}
		}
		if shard >= 0 {
			if err := s.txtOut[shard].WriteRow(row); err != nil {
				return off, s.shardError(shard, err)
			}
			s.stats.ShardRows[shard]++
			s.stats.Rows++
			continue
		}
		for i, w := range s.txtOut {
			if err := w.WriteRow(row); err != nil {
				return off, s.shardError(i, err)
			}
			s.stats.ShardRows[i]++
		}
		s.stats.Rows++
	}
}

func (s *Splitter) rowError(err error) error {
	return fmt.Errorf("sharding: %v row %d: %w", s.format, s.stats.Rows+1, err)
}

func (s *Splitter) shardError(shard int, err error) error {
	return fmt.Errorf("sharding: row %d: shard %d: %w", s.stats.Rows+1, shard, err)
}

// Close checks that the source stream ended where it may (after the binary
// trailer; at a line end in text), then ends and flushes every destination
// stream. It does not close the underlying writers. After an error it
// returns that error and writes nothing more.
func (s *Splitter) Close() error {
	if s.closed {
		return s.err
	}
	s.closed = true
	if s.err != nil {
		return s.err
	}
	var err error
	if s.format == FormatBinary {
		err = s.bin.finish(s.pending)
	} else {
		err = s.txt.finish(s.pending)
	}
	if err != nil {
		return s.fail(err)
	}
	var errs []error
	for i := range s.stats.ShardRows {
		var w RowWriter
		if s.format == FormatBinary {
			w = s.binOut[i]
		} else {
			w = s.txtOut[i]
		}
		if err := w.Close(); err != nil {
			errs = append(errs, fmt.Errorf("sharding: shard %d: %w", i, err))
		}
	}
	return s.fail(errors.Join(errs...))
}
