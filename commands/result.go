package commands

// Type is the PostgreSQL type OID of a result column. Numbers and times are
// typed (int8, float8, timestamptz) so that drivers and BI tools get values
// they can chart, not text.
type Type uint32

// Column types used by reshard's views.
const (
	TypeBool        Type = 16
	TypeName        Type = 19 // identifiers: current_database(), catalog names
	TypeInt8        Type = 20
	TypeInt2        Type = 21
	TypeInt4        Type = 23
	TypeText        Type = 25
	TypeOid         Type = 26
	TypeFloat8      Type = 701
	TypeTimestamptz Type = 1184
)

// Column is one column of a result set.
type Column struct {
	// Name is the column name.
	Name string
	// Type is the column's type OID.
	Type Type
}

// Result is what executing a command yields: typed columns, rows whose
// values match the column types (int64 for int8, int32 for int4, int16 for
// int2, uint32 for oid, float64, string for text and name, bool, time.Time,
// or nil), and the command tag.
type Result struct {
	Columns []Column
	Rows    [][]any
	Tag     string
	// Notices are sent before the rows as NOTICE messages: findings that
	// did not stop the command (preflight warnings).
	Notices []string
}

func cols(spec ...any) []Column {
	out := make([]Column, 0, len(spec)/2)
	for i := 0; i+1 < len(spec); i += 2 {
		out = append(out, Column{Name: spec[i].(string), Type: spec[i+1].(Type)})
	}
	return out
}
