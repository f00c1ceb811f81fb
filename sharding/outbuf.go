package sharding

import (
	"fmt"
	"io"
)

// outBuf buffers the bytes of one COPY FROM STDIN stream: writes are
// appended to buf, which goes to dst whenever the next write would not
// fit. A write error sticks. It is leaner than a bufio.Writer on the
// per-row path.
type outBuf struct {
	dst  io.Writer
	buf  []byte
	size int
	err  error
}

func (o *outBuf) write(p []byte) error {
	if o.err == nil && len(p) <= cap(o.buf)-len(o.buf) {
		o.buf = append(o.buf, p...)
		return nil
	}
	return o.writeSlow(p)
}

func (o *outBuf) writeSlow(p []byte) error {
	if o.buf == nil {
		o.buf = make([]byte, 0, o.size)
	}
	if err := o.flush(); err != nil {
		return err
	}
	if len(p) >= cap(o.buf) {
		return o.writeOut(p)
	}
	o.buf = append(o.buf, p...)
	return nil
}

func (o *outBuf) flush() error {
	if o.err != nil {
		return o.err
	}
	if len(o.buf) == 0 {
		return nil
	}
	err := o.writeOut(o.buf)
	o.buf = o.buf[:0]
	return err
}

func (o *outBuf) writeOut(p []byte) error {
	n, err := o.dst.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		o.err = fmt.Errorf("sharding: writing a COPY stream: %w", err)
	}
	return o.err
}
