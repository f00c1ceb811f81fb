package wire

import (
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// registerTypes makes the admin server's text encodings match PostgreSQL's
// own, so that drivers parsing text results (psycopg2, node-postgres in
// simple mode, psql's readers) read them as they would PostgreSQL's.
func registerTypes(m *pgtype.Map) {
	m.RegisterType(&pgtype.Type{Name: "timestamptz", OID: pgtype.TimestamptzOID, Codec: &timestamptzCodec{}})
}

// timestamptzCodec is pgtype's timestamptz codec whose text form is
// PostgreSQL's under DateStyle ISO and TimeZone UTC (the values the server
// announces): "2026-01-02 15:04:05.123456+00". pgtype writes "Z" for the
// zone, which psycopg2 fails to parse.
type timestamptzCodec struct {
	pgtype.TimestamptzCodec
}

// PlanEncode encodes time.Time values in PostgreSQL's text form and
// everything else as pgtype does.
func (c *timestamptzCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if _, ok := value.(time.Time); ok && format == pgtype.TextFormatCode {
		return timestamptzText{}
	}
	return c.TimestamptzCodec.PlanEncode(m, oid, format, value)
}

type timestamptzText struct{}

// Encode writes t in UTC with microseconds, trailing zeros trimmed, as
// PostgreSQL does.
func (timestamptzText) Encode(value any, buf []byte) ([]byte, error) {
	t := value.(time.Time).UTC().Truncate(time.Microsecond)
	return append(t.AppendFormat(buf, "2006-01-02 15:04:05.999999"), "+00"...), nil
}
