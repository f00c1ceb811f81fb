package stream

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// rowMessage is a decoded pgoutput INSERT, UPDATE or DELETE.
type rowMessage struct {
	kind           changeKind
	xid            uint32 // (sub)transaction, for streamed changes
	relation       uint32
	oldType        byte // 'K', 'O' or 0
	oldRow, newRow []value
}

var errShort = errors.New("message too short")

// decodeRow decodes an INSERT ('I'), UPDATE ('U') or DELETE ('D') message
// of pgoutput protocol 2. The message is copied once and the column values
// point into that copy: no allocation per column (pglogrepl allocates and
// copies every value byte by byte). Malformed input is an error, never a
// panic.
func decodeRow(msg []byte, inStream bool) (*rowMessage, error) {
	buf := append([]byte(nil), msg...)
	m := &rowMessage{}
	switch buf[0] {
	case 'I':
		m.kind = opInsert
	case 'U':
		m.kind = opUpdate
	case 'D':
		m.kind = opDelete
	default:
		return nil, fmt.Errorf("not a row message: %q", buf[0])
	}
	p := 1
	u32 := func() (uint32, error) {
		if p+4 > len(buf) {
			return 0, errShort
		}
		v := binary.BigEndian.Uint32(buf[p:])
		p += 4
		return v, nil
	}
	var err error
	if inStream {
		if m.xid, err = u32(); err != nil {
			return nil, err
		}
	}
	if m.relation, err = u32(); err != nil {
		return nil, err
	}
	tuple := func() ([]value, error) {
		if p+2 > len(buf) {
			return nil, errShort
		}
		n := int(binary.BigEndian.Uint16(buf[p:]))
		p += 2
		if n > len(buf) { // each column needs at least one byte
			return nil, fmt.Errorf("tuple of %d columns in %d bytes", n, len(buf))
		}
		row := make([]value, n)
		for i := 0; i < n; i++ {
			if p >= len(buf) {
				return nil, errShort
			}
			kind := buf[p]
			p++
			switch kind {
			case 'n':
				row[i].null = true
			case 'u':
				row[i].toasted = true
			case 't', 'b':
				l, err := u32()
				if err != nil {
					return nil, err
				}
				if int64(l) > int64(len(buf)-p) {
					return nil, fmt.Errorf("column %d of %d bytes exceeds the message", i, l)
				}
				row[i].data = buf[p : p+int(l) : p+int(l)]
				p += int(l)
			default:
				return nil, fmt.Errorf("unknown tuple column kind %q", kind)
			}
		}
		return row, nil
	}
	if p >= len(buf) {
		return nil, errShort
	}
	switch m.kind {
	case opInsert:
		if buf[p] != 'N' {
			return nil, fmt.Errorf("insert: expected N, got %q", buf[p])
		}
		p++
		if m.newRow, err = tuple(); err != nil {
			return nil, err
		}
	case opUpdate:
		if buf[p] == 'K' || buf[p] == 'O' {
			m.oldType = buf[p]
			p++
			if m.oldRow, err = tuple(); err != nil {
				return nil, err
			}
			if p >= len(buf) {
				return nil, errShort
			}
		}
		if buf[p] != 'N' {
			return nil, fmt.Errorf("update: expected N, got %q", buf[p])
		}
		p++
		if m.newRow, err = tuple(); err != nil {
			return nil, err
		}
	case opDelete:
		if buf[p] != 'K' && buf[p] != 'O' {
			return nil, fmt.Errorf("delete: expected K or O, got %q", buf[p])
		}
		m.oldType = buf[p]
		p++
		if m.oldRow, err = tuple(); err != nil {
			return nil, err
		}
	}
	if p != len(buf) {
		return nil, fmt.Errorf("%d trailing bytes", len(buf)-p)
	}
	return m, nil
}

// checkShape reports a row message whose tuples do not carry one value per
// column of its relation (ncols columns): the apply path indexes values by
// column position, so a malformed message must stop the stream instead.
func (m *rowMessage) checkShape(ncols int) error {
	for _, row := range [][]value{m.newRow, m.oldRow} {
		if row != nil && len(row) != ncols {
			return fmt.Errorf("a row of %d values for a relation of %d columns", len(row), ncols)
		}
	}
	return nil
}

// checkTruncate rejects a TRUNCATE message ('T': [xid,] relation count,
// options, relation ids) whose relation count exceeds what it carries.
func checkTruncate(msg []byte, inStream bool) error {
	if len(msg) == 0 || msg[0] != 'T' {
		return nil
	}
	p := 1
	if inStream {
		p += 4
	}
	if len(msg) < p+5 {
		return errShort
	}
	n := int64(binary.BigEndian.Uint32(msg[p:]))
	if have := int64(len(msg) - p - 5); n*4 > have {
		return fmt.Errorf("truncate of %d relations in a message of %d bytes", n, len(msg))
	}
	return nil
}

// parseV2 decodes a pgoutput message, turning a decoder panic on malformed
// input into an error. A TRUNCATE's relation count is checked against the
// message first: pglogrepl allocates it before reading, so a corrupt count
// would ask for gigabytes (found by FuzzDecodeMessage).
func parseV2(data []byte, inStream bool) (m pglogrepl.Message, err error) {
	if err := checkTruncate(data, inStream); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed message: %v", r)
		}
	}()
	return pglogrepl.ParseV2(data, inStream)
}
