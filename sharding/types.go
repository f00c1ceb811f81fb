package sharding

import (
	"fmt"
	"strings"
)

// DataType is the type of a sharding column, as data_type names it in the
// configuration.
type DataType uint8

// The data types a sharding column may have.
const (
	// BigInt is bigint (int8).
	BigInt DataType = iota + 1
	// Integer is integer (int4).
	Integer
	// SmallInt is smallint (int2).
	SmallInt
	// Varchar is character varying.
	Varchar
	// Text is text.
	Text
	// UUID is uuid.
	UUID
)

// ParseDataType parses a data_type of the configuration: bigint, integer,
// smallint, varchar, text or uuid (case-insensitive). PostgreSQL's other
// spellings of the same types (int8, int4, int, int2, character varying)
// are accepted too.
func ParseDataType(s string) (DataType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "bigint", "int8":
		return BigInt, nil
	case "integer", "int", "int4":
		return Integer, nil
	case "smallint", "int2":
		return SmallInt, nil
	case "varchar", "character varying":
		return Varchar, nil
	case "text":
		return Text, nil
	case "uuid":
		return UUID, nil
	}
	return 0, fmt.Errorf("sharding: unknown data type %q (want bigint, integer, smallint, varchar, text or uuid)", s)
}

// String returns the configuration name of t.
func (t DataType) String() string {
	switch t {
	case BigInt:
		return "bigint"
	case Integer:
		return "integer"
	case SmallInt:
		return "smallint"
	case Varchar:
		return "varchar"
	case Text:
		return "text"
	case UUID:
		return "uuid"
	}
	return fmt.Sprintf("DataType(%d)", uint8(t))
}

// IsInteger reports whether t is one of the integer types, which all hash
// as int8.
func (t DataType) IsInteger() bool {
	return t == BigInt || t == Integer || t == SmallInt
}

// isString reports whether t is text or varchar.
func (t DataType) isString() bool {
	return t == Text || t == Varchar
}

func (t DataType) valid() bool {
	return t >= BigInt && t <= UUID
}

// Format is the representation of values in a COPY stream or a pgoutput
// tuple.
type Format uint8

const (
	// FormatText is PostgreSQL's text representation (COPY's default format,
	// pgoutput's 't' columns).
	FormatText Format = iota
	// FormatBinary is the binary (send/recv) representation (COPY's FORMAT
	// binary, pgoutput's 'b' columns).
	FormatBinary
)

// ParseFormat parses a copy format as resharding_copy_format names it:
// "text" or "binary" (case-insensitive).
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "text":
		return FormatText, nil
	case "binary":
		return FormatBinary, nil
	}
	return 0, fmt.Errorf("sharding: unknown copy format %q (want text or binary)", s)
}

// String returns "text" or "binary".
func (f Format) String() string {
	switch f {
	case FormatText:
		return "text"
	case FormatBinary:
		return "binary"
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// ForColumn returns the data_type that hashes a column of PostgreSQL base
// type typname (pg_type.typname: int2, int4, int8, varchar, text, bpchar,
// uuid) the way PostgreSQL and a query router do; ok is false for any
// other type, which cannot be a sharding key. A character(n) (bpchar)
// column hashes as the text of it, without its trailing blanks
// (Table.BlankPadded).
func ForColumn(typname string) (t DataType, ok bool) {
	switch typname {
	case "int2":
		return SmallInt, true
	case "int4":
		return Integer, true
	case "int8":
		return BigInt, true
	case "varchar", "bpchar":
		return Varchar, true
	case "text":
		return Text, true
	case "uuid":
		return UUID, true
	}
	return 0, false
}

// Accepts reports whether a column of PostgreSQL base type typname can be
// sharded with data_type t: any integer width with any integer data_type
// (all hash as int8), text, varchar and character(n) with text or varchar,
// uuid with uuid. A
// mismatch would hash the column's bytes as another type than the one its
// values are, and place rows where neither PostgreSQL nor a router looks.
func (t DataType) Accepts(typname string) bool {
	c, ok := ForColumn(typname)
	switch {
	case !ok:
		return false
	case c.IsInteger():
		return t.IsInteger()
	case c.isString():
		return t.isString()
	}
	return t == c
}
