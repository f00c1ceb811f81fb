package stream

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/jackc/pglogrepl"
)

// tupleBytes encodes a pgoutput tuple: nil is NULL, "\x00u" unchanged TOAST.
func tupleBytes(cols ...[]byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, uint16(len(cols)))
	for _, c := range cols {
		switch {
		case c == nil:
			b.WriteByte('n')
		case string(c) == "\x00u":
			b.WriteByte('u')
		default:
			b.WriteByte('t')
			binary.Write(&b, binary.BigEndian, uint32(len(c)))
			b.Write(c)
		}
	}
	return b.Bytes()
}

func msg(kind byte, xid uint32, inStream bool, rel uint32, parts ...[]byte) []byte {
	var b bytes.Buffer
	b.WriteByte(kind)
	if inStream {
		binary.Write(&b, binary.BigEndian, xid)
	}
	binary.Write(&b, binary.BigEndian, rel)
	for _, p := range parts {
		b.Write(p)
	}
	return b.Bytes()
}

func TestDecodeRowMatchesPglogrepl(t *testing.T) {
	cases := [][]byte{
		msg('I', 0, false, 7, []byte{'N'}, tupleBytes([]byte("42"), nil, []byte("héllo\tworld"))),
		msg('U', 0, false, 7, []byte{'N'}, tupleBytes([]byte("1"), []byte("\x00u"), []byte("x"))),
		msg('U', 0, false, 7, []byte{'K'}, tupleBytes([]byte("1"), nil, nil), []byte{'N'}, tupleBytes([]byte("2"), []byte("a"), nil)),
		msg('U', 0, false, 7, []byte{'O'}, tupleBytes([]byte("1"), []byte("b"), []byte("c")), []byte{'N'}, tupleBytes([]byte("1"), []byte("d"), []byte(""))),
		msg('D', 0, false, 9, []byte{'K'}, tupleBytes([]byte("5"))),
		msg('D', 0, false, 9, []byte{'O'}, tupleBytes([]byte("5"), []byte("z"))),
		msg('I', 77, true, 7, []byte{'N'}, tupleBytes([]byte("1"))),
	}
	for i, c := range cases {
		inStream := i == len(cases)-1
		got, err := decodeRow(c, inStream)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		want, err := pglogrepl.ParseV2(c, inStream)
		if err != nil {
			t.Fatalf("case %d: pglogrepl: %v", i, err)
		}
		var wantNew, wantOld []value
		var rel, xid uint32
		var oldType byte
		switch w := want.(type) {
		case *pglogrepl.InsertMessageV2:
			wantNew, rel, xid = tupleValues(w.Tuple), w.RelationID, w.Xid
		case *pglogrepl.UpdateMessageV2:
			wantNew, wantOld, rel, oldType, xid = tupleValues(w.NewTuple), tupleValues(w.OldTuple), w.RelationID, w.OldTupleType, w.Xid
		case *pglogrepl.DeleteMessageV2:
			wantOld, rel, oldType, xid = tupleValues(w.OldTuple), w.RelationID, w.OldTupleType, w.Xid
		}
		if got.relation != rel || got.oldType != oldType || got.xid != xid || !sameValues(got.newRow, wantNew) || !sameValues(got.oldRow, wantOld) {
			t.Fatalf("case %d: got %+v, want rel %d old %q %v new %v", i, got, rel, oldType, wantOld, wantNew)
		}
	}
}

func sameValues(a, b []value) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].null != b[i].null || a[i].toasted != b[i].toasted || !bytes.Equal(a[i].data, b[i].data) {
			return false
		}
	}
	return true
}

func FuzzDecodeRow(f *testing.F) {
	f.Add(msg('I', 0, false, 7, []byte{'N'}, tupleBytes([]byte("42"), nil)), false)
	f.Add(msg('U', 0, false, 7, []byte{'K'}, tupleBytes([]byte("1")), []byte{'N'}, tupleBytes([]byte("2"))), false)
	f.Add(msg('D', 3, true, 9, []byte{'O'}, tupleBytes([]byte("5"))), true)
	f.Add([]byte{'I'}, false)
	f.Add([]byte{'U', 0, 0, 0, 1, 'N', 0xff, 0xff}, false)
	f.Fuzz(func(t *testing.T, data []byte, inStream bool) {
		if len(data) == 0 || (data[0] != 'I' && data[0] != 'U' && data[0] != 'D') {
			return
		}
		m, err := decodeRow(data, inStream)
		if err == nil && m == nil {
			t.Fatal("no message and no error")
		}
	})
}

// tupleValues copies a pglogrepl tuple into values, for comparison.
func tupleValues(t *pglogrepl.TupleData) []value {
	if t == nil {
		return nil
	}
	out := make([]value, len(t.Columns))
	for i, c := range t.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			out[i].null = true
		case pglogrepl.TupleDataTypeToast:
			out[i].toasted = true
		default:
			out[i].data = c.Data
		}
	}
	return out
}
