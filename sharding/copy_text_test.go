package sharding

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestUnescapeText(t *testing.T) {
	cases := map[string]string{
		`plain`:          "plain",
		`a\tb`:           "a\tb",
		`a\nb\rc`:        "a\nb\rc",
		`\b\f\v`:         "\b\f\v",
		`back\\slash`:    `back\slash`,
		`\101\60\0`:      "A0\x00",
		`\1012`:          "A2", // at most three octal digits
		`\777`:           "\xff",
		`\08`:            "\x008",
		`\x41\x4A\x4a`:   "AJJ",
		`\x4g`:           "\x04g",
		`\xg`:            "xg", // \x without a hex digit is x
		`\x414`:          "A4",
		`\q\.\N\"`:       `q.N"`,
		`\u00e9`:         "u00e9",
		`ünï\tcode`:      "ünï\tcode",
		`\342\202\254`:   "€",
		`\xe2\x82\xac!`:  "€!",
		`\\N`:            `\N`,
		`trailing \\\\x`: `trailing \\x`,
	}
	for in, want := range cases {
		got, err := unescapeText(nil, []byte(in))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := unescapeText(nil, []byte(`ends in \`)); !errors.Is(err, ErrMalformed) {
		t.Errorf("trailing backslash: %v", err)
	}
}

func TestTextReader(t *testing.T) {
	stream := "1\tplain\t\\N\n" +
		"-2\ttab\\there\\nnewline\t\n" +
		"\\N\tback\\\\slash\t\\x41\n" +
		"4\t\\\\N\tlast\n"
	want := []struct {
		fields []string
		nulls  []bool
	}{
		{[]string{"1", "plain", ""}, []bool{false, false, true}},
		{[]string{"-2", "tab\there\nnewline", ""}, []bool{false, false, false}},
		{[]string{"", `back\slash`, "A"}, []bool{true, false, false}},
		{[]string{"4", `\N`, "last"}, []bool{false, false, false}},
	}
	lines := strings.SplitAfter(stream, "\n")
	for _, mk := range []func() io.Reader{
		func() io.Reader { return strings.NewReader(stream) },
		func() io.Reader { return iotest.OneByteReader(strings.NewReader(stream)) },
	} {
		r, err := NewTextReader(mk(), Options{ReadBufferSize: 4})
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range want {
			row, err := r.Next()
			if err != nil {
				t.Fatalf("row %d: %v", i, err)
			}
			if string(row) != lines[i] {
				t.Fatalf("row %d: %q, want %q", i, row, lines[i])
			}
			// Fields in any order, repeatedly.
			for _, j := range []int{2, 0, 1, 2} {
				got, isNull, err := r.Field(j)
				if err != nil || isNull != w.nulls[j] || string(got) != w.fields[j] {
					t.Fatalf("row %d field %d: %q null=%v err=%v", i, j, got, isNull, err)
				}
			}
			if _, _, err := r.Field(3); !errors.Is(err, ErrMalformed) {
				t.Fatalf("row %d field 3: %v", i, err)
			}
		}
		if _, err := r.Next(); err != io.EOF {
			t.Fatalf("end: %v", err)
		}
		if r.Columns() != 3 {
			t.Fatalf("columns %d", r.Columns())
		}
	}
}

func TestTextReaderEnds(t *testing.T) {
	// An empty stream is an empty table.
	r, _ := NewTextReader(strings.NewReader(""), Options{})
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("empty: %v", err)
	}
	// The end-of-data marker ends the rows.
	r, _ = NewTextReader(strings.NewReader("1\n\\.\n"), Options{})
	rows, err := readAll(t, r)
	if err != nil || len(rows) != 1 {
		t.Fatalf("marker: %q, %v", rows, err)
	}
	// Rows of a table without columns, or of one empty text column.
	r, _ = NewTextReader(strings.NewReader("\n\n\n"), Options{})
	rows, err = readAll(t, r)
	if err != nil || len(rows) != 3 {
		t.Fatalf("empty rows: %q, %v", rows, err)
	}
	if f, isNull, err := r.Field(0); err != nil || isNull || len(f) != 0 {
		t.Fatalf("empty field: %q %v %v", f, isNull, err)
	}
}

func TestTextReaderMalformed(t *testing.T) {
	cases := map[string]string{
		"no final newline":       "1\ta\n2\tb",
		"field count":            "1\ta\n2\tb\tc\n",
		"fewer fields":           "1\ta\n2\n",
		"data after marker":      "1\ta\n\\.\n2\tb\n",
		"unescaped backslash":    "1\ta\\\n",
		"three backslashes":      "1\ta\\\\\\\n",
		"only a partial row":     "abc",
		"marker without newline": "1\n\\.",
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			r, _ := NewTextReader(strings.NewReader(data), Options{})
			if _, err := readAll(t, r); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
	// An even run of backslashes before the newline is an escaped
	// backslash: fine.
	r, _ := NewTextReader(strings.NewReader("1\ta\\\\\n"), Options{})
	if _, err := readAll(t, r); err != nil {
		t.Fatal(err)
	}
	if f, _, _ := r.Field(1); string(f) != `a\` {
		t.Fatalf("field %q", f)
	}
	// An escaped tab is not PostgreSQL output; reading a field after it
	// fails instead of splitting there.
	r, _ = NewTextReader(strings.NewReader("a\\\tb\tc\n"), Options{})
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Field(1); !errors.Is(err, ErrMalformed) {
		t.Fatalf("escaped delimiter: %v", err)
	}
	// Options.Columns and MaxRowSize.
	r, _ = NewTextReader(strings.NewReader("1\t2\n"), Options{Columns: 3})
	if _, err := readAll(t, r); !errors.Is(err, ErrMalformed) {
		t.Fatalf("columns: %v", err)
	}
	r, _ = NewTextReader(strings.NewReader(strings.Repeat("x", 200)+"\n"), Options{MaxRowSize: 100})
	if _, err := readAll(t, r); !errors.Is(err, ErrMalformed) {
		t.Fatalf("max row size: %v", err)
	}
	r, _ = NewTextReader(strings.NewReader(strings.Repeat("x", 200)), Options{MaxRowSize: 100, ReadBufferSize: 16})
	if _, err := readAll(t, r); !errors.Is(err, ErrMalformed) {
		t.Fatalf("max row size without newline: %v", err)
	}
}

func TestTextWriter(t *testing.T) {
	var out bytes.Buffer
	w, err := NewTextWriter(&out, Options{WriteBufferSize: 8, Widen: []int{0}})
	if err != nil {
		t.Fatal(err)
	}
	rows := []string{"1\ta\\tb\n", "\\N\t\\\\\n", "32767\t" + strings.Repeat("z", 40) + "\n"}
	for _, r := range rows {
		if err := w.WriteRow([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if out.String() != strings.Join(rows, "") {
		t.Fatalf("got %q", out.String())
	}
	if err := w.WriteRow([]byte("x\n")); err == nil {
		t.Fatal("write after Close accepted")
	}
}

func TestNewRowReaderWriter(t *testing.T) {
	for _, f := range []Format{FormatText, FormatBinary} {
		if _, err := NewRowReader(f, strings.NewReader(""), Options{}); err != nil {
			t.Fatal(err)
		}
		if _, err := NewRowWriter(f, io.Discard, Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := NewRowReader(Format(7), strings.NewReader(""), Options{}); err == nil {
		t.Fatal("bad format accepted")
	}
	if _, err := NewRowWriter(Format(7), io.Discard, Options{}); err == nil {
		t.Fatal("bad format accepted")
	}
	if _, err := NewTextReader(strings.NewReader(""), Options{Columns: -1}); err == nil {
		t.Fatal("negative Columns accepted")
	}
}

// TestReadersDoNotAllocatePerRow reads a long stream and checks that the
// allocations do not grow with the number of rows.
func TestReadersDoNotAllocatePerRow(t *testing.T) {
	var bin, txt []byte
	for i := range 2000 {
		bin = append(bin, binRow(i8(int64(i)), []byte("some text"), null)...)
		txt = append(txt, []byte("123\tsome\\ttext\t\\N\n")...)
	}
	binData := binStream(bin)
	for name, mk := range map[string]func() RowReader{
		"binary": func() RowReader { r, _ := NewBinaryReader(bytes.NewReader(binData), Options{}); return r },
		"text":   func() RowReader { r, _ := NewTextReader(bytes.NewReader(txt), Options{}); return r },
	} {
		allocs := testing.AllocsPerRun(5, func() {
			r := mk()
			for {
				if _, err := r.Next(); err != nil {
					break
				}
				for j := range 3 {
					_, _, _ = r.Field(j)
				}
			}
		})
		if allocs > 10 {
			t.Errorf("%s: %v allocations for 2000 rows", name, allocs)
		}
	}
}
