package sharding

import "testing"

func TestAccepts(t *testing.T) {
	for _, c := range []struct {
		data, column string
		want         bool
	}{
		{"bigint", "int8", true}, {"bigint", "int4", true}, {"bigint", "int2", true},
		{"smallint", "int8", true}, {"integer", "int2", true},
		{"varchar", "varchar", true}, {"varchar", "text", true}, {"text", "varchar", true},
		{"uuid", "uuid", true},
		// A varchar column under the default data_type: its bytes would be
		// read as an integer.
		{"bigint", "varchar", false}, {"bigint", "text", false}, {"integer", "uuid", false},
		// An integer column hashed as text would hash its binary bytes.
		{"text", "int8", false}, {"varchar", "uuid", false}, {"uuid", "text", false},
		// character(n) hashes as its text (the router drops its blanks),
		// never as an integer; numeric, a domain's own name and arrays are
		// no sharding keys.
		{"varchar", "bpchar", true}, {"text", "bpchar", true}, {"bigint", "bpchar", false}, {"uuid", "bpchar", false},
		{"bigint", "numeric", false}, {"bigint", "_int8", false}, {"text", "citext", false},
	} {
		dt, err := ParseDataType(c.data)
		if err != nil {
			t.Fatal(err)
		}
		if got := dt.Accepts(c.column); got != c.want {
			t.Errorf("data_type %s, column type %s: Accepts = %v, want %v", c.data, c.column, got, c.want)
		}
	}
	if dt, ok := ForColumn("int4"); !ok || dt != Integer {
		t.Errorf("ForColumn(int4) = %v, %v", dt, ok)
	}
	if dt, ok := ForColumn("bpchar"); !ok || dt != Varchar {
		t.Errorf("ForColumn(bpchar) = %v, %v, want varchar", dt, ok)
	}
}
