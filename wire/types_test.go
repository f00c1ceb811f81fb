package wire

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

func TestTimestamptzText(t *testing.T) {
	m := pgtype.NewMap()
	registerTypes(m)
	cet := time.FixedZone("CET", 3600)
	for _, c := range []struct {
		in   time.Time
		want string
	}{
		{time.Date(2026, 1, 2, 16, 4, 5, 123456789, cet), "2026-01-02 15:04:05.123456+00"},
		{time.Date(2026, 1, 2, 15, 4, 5, 500000000, time.UTC), "2026-01-02 15:04:05.5+00"},
		{time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC), "2026-01-02 15:04:05+00"},
	} {
		got, err := m.Encode(pgtype.TimestamptzOID, pgtype.TextFormatCode, c.in, nil)
		if err != nil || string(got) != c.want {
			t.Errorf("text of %v = %q, %v; want %q", c.in, got, err, c.want)
		}
		bin, err := m.Encode(pgtype.TimestamptzOID, pgtype.BinaryFormatCode, c.in, nil)
		if err != nil || len(bin) != 8 {
			t.Errorf("binary of %v = %x, %v", c.in, bin, err)
		}
	}
}
