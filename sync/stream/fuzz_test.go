package stream

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pglogrepl"
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// relationMsg encodes a pgoutput Relation message (protocol 2, outside a
// streamed transaction); key marks replica-identity columns.
func relationMsg(id uint32, schema, name string, identity byte, cols []string, key map[int]bool) []byte {
	var b bytes.Buffer
	b.WriteByte('R')
	binary.Write(&b, binary.BigEndian, id)
	b.WriteString(schema + "\x00" + name + "\x00")
	b.WriteByte(identity)
	binary.Write(&b, binary.BigEndian, uint16(len(cols)))
	for i, c := range cols {
		flags := byte(0)
		if key[i] {
			flags = 1
		}
		b.WriteByte(flags)
		b.WriteString(c + "\x00")
		binary.Write(&b, binary.BigEndian, uint32(25)) // text
		binary.Write(&b, binary.BigEndian, int32(-1))
	}
	return b.Bytes()
}

// walStream frames messages as FuzzDecodeMessage reads them: a 2-byte
// length before each.
func walStream(msgs ...[]byte) []byte {
	var b bytes.Buffer
	for _, m := range msgs {
		binary.Write(&b, binary.BigEndian, uint16(len(m)))
		b.Write(m)
	}
	return b.Bytes()
}

// FuzzDecodeMessage decodes a sequence of pgoutput messages the way the
// stream does (row messages by decodeRow, the rest by pglogrepl), keeping
// the relations seen: no input panics, a row is applied only when it has
// one value per column of its relation, and the statements built for it
// parse as one statement on the relation they name, whatever the names.
func FuzzDecodeMessage(f *testing.F) {
	rel := relationMsg(7, `Sch "é";x`, "Tab.le ;", 'd', []string{`Kéy "ID";.`, `Col "q"`, "x"}, map[int]bool{0: true})
	full := relationMsg(8, "public", "t", 'f', []string{"a", "b"}, nil)
	f.Add(walStream(rel, msg('I', 0, false, 7, []byte{'N'}, tupleBytes([]byte("1"), nil, []byte("v")))), false)
	f.Add(walStream(rel, msg('U', 0, false, 7, []byte{'K'}, tupleBytes([]byte("1"), nil, nil), []byte{'N'}, tupleBytes([]byte("2"), []byte("\x00u"), nil))), false)
	f.Add(walStream(full, msg('D', 0, false, 8, []byte{'O'}, tupleBytes([]byte("1"), nil))), false)
	f.Add(walStream(rel, msg('I', 0, false, 7, []byte{'N'}, tupleBytes([]byte("1")))), false) // too few values
	f.Add(walStream(rel, msg('I', 3, true, 7, []byte{'N'}, tupleBytes([]byte("1"), nil, nil))), true)
	f.Add(walStream([]byte{'B', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5}, []byte{'C', 0}), false)
	f.Add(walStream([]byte{'R', 0, 0, 0, 1, 0, 0, 'f', 0xff, 0xff}), false)
	f.Add(walStream([]byte{'T', 0, 0, 0, 2, 1}, []byte{'Y', 0, 0, 0, 1, 'p', 0, 0}, []byte{'S', 0, 0, 0, 1, 1}), true)
	f.Fuzz(func(t *testing.T, data []byte, inStream bool) {
		relations := map[uint32]*relation{}
		for len(data) >= 2 {
			n := int(binary.BigEndian.Uint16(data))
			data = data[2:]
			if n > len(data) {
				n = len(data)
			}
			m := data[:n]
			data = data[n:]
			if len(m) == 0 {
				continue
			}
			if m[0] == 'I' || m[0] == 'U' || m[0] == 'D' {
				rm, err := decodeRow(m, inStream)
				if err != nil {
					continue
				}
				r, ok := relations[rm.relation]
				if !ok || rm.checkShape(len(r.columns)) != nil {
					continue
				}
				if rm.newRow != nil {
					cols := make([]int, len(rm.newRow))
					for i := range cols {
						cols[i] = i
					}
					checkSQL(t, r, insertSQL(r, cols))
				}
				if keys := r.key; len(keys) > 0 {
					checkSQL(t, r, "DELETE FROM "+r.qualified+" WHERE "+whereKey(r, rowKey{cols: keys, vals: make([][]byte, len(keys))}, 1))
				}
				continue
			}
			lm, err := parseV2(m, inStream)
			if err != nil {
				continue
			}
			if rm, ok := lm.(*pglogrepl.RelationMessageV2); ok {
				relations[rm.RelationID] = describe(rm)
			}
		}
	})
}

// checkSQL parses a statement built for r: it is one statement, on r.
func checkSQL(t *testing.T, r *relation, sql string) {
	t.Helper()
	names := append([]string{r.schema, r.name}, r.columns...)
	for _, n := range names {
		// PostgreSQL names are non-empty valid UTF-8 of at most 63 bytes;
		// they never reach a statement otherwise.
		if n == "" || len(n) > 63 || !utf8.ValidString(n) {
			return
		}
	}
	res, err := pg_query.Parse(sql)
	if err != nil {
		t.Fatalf("%q does not parse: %v", sql, err)
	}
	if len(res.Stmts) != 1 {
		t.Fatalf("%q is %d statements", sql, len(res.Stmts))
	}
	var rv *pg_query.RangeVar
	switch s := res.Stmts[0].Stmt; {
	case s.GetInsertStmt() != nil:
		rv = s.GetInsertStmt().GetRelation()
	case s.GetDeleteStmt() != nil:
		rv = s.GetDeleteStmt().GetRelation()
	}
	if rv == nil || rv.Schemaname != r.schema || rv.Relname != r.name {
		t.Fatalf("%q targets %v, want %s", sql, rv, r.qualified)
	}
}

func TestCheckShape(t *testing.T) {
	three := tupleBytes([]byte("1"), nil, []byte("\x00u"))
	for _, c := range []struct {
		msg  []byte
		cols int
		ok   bool
	}{
		{msg('I', 0, false, 7, []byte{'N'}, three), 3, true},
		{msg('I', 0, false, 7, []byte{'N'}, three), 2, false},
		{msg('I', 0, false, 7, []byte{'N'}, three), 4, false},
		{msg('U', 0, false, 7, []byte{'K'}, tupleBytes([]byte("1")), []byte{'N'}, three), 3, false},
		{msg('D', 0, false, 7, []byte{'O'}, three), 3, true},
	} {
		rm, err := decodeRow(c.msg, false)
		if err != nil {
			t.Fatal(err)
		}
		if err := rm.checkShape(c.cols); (err == nil) != c.ok {
			t.Fatalf("%q against %d columns: %v", c.msg, c.cols, err)
		}
	}
}

func TestCheckTruncate(t *testing.T) {
	for _, c := range []struct {
		msg      []byte
		inStream bool
		ok       bool
	}{
		{[]byte{'T', 0, 0, 0, 2, 0, 0, 0, 0, 7, 0, 0, 0, 8}, false, true},
		{[]byte{'T', 0, 0, 0, 9, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1}, true, true},
		{[]byte{'T', 0, 0, 0, 3, 0, 0, 0, 0, 7, 0, 0, 0, 8}, false, false},
		{[]byte{'T', 0x61, 0x62, 0x2e, 0x6c, 0}, false, false}, // 1.6 billion relations
		{[]byte{'T', 0, 0, 0}, false, false},
		{[]byte{'B'}, false, true},
	} {
		err := checkTruncate(c.msg, c.inStream)
		if (err == nil) != c.ok {
			t.Fatalf("% x (in stream %v): %v", c.msg, c.inStream, err)
		}
		if c.ok && c.msg[0] == 'T' {
			if _, err := parseV2(c.msg, c.inStream); err != nil {
				t.Fatalf("% x: pglogrepl: %v", c.msg, err)
			}
		}
	}
}
