package copier

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// unreadableValue picks the failures a copy in text format fixes: a value
// the destination's binary input refused while COPY read it.
func TestUnreadableValue(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("destination shard 1: %w", &pgconn.PgError{Code: "XX000", Message: "malformed tsquery: operand not found", Where: "COPY searches, line 3, column q"}), true},
		{&pgconn.PgError{Code: "22P03", Message: "incorrect binary data format", Where: "COPY t, line 1, column c"}, true},
		{&pgconn.PgError{Code: "23505", Message: "duplicate key value", Where: "COPY t, line 9"}, false},
		{&pgconn.PgError{Code: "XX000", Message: "could not read block"}, false},
		{&pgconn.PgError{Code: "08006", Message: "connection lost"}, false},
		{fmt.Errorf("plain"), false},
		// A type with no binary I/O at all, on either side (the source's
		// error arrives inside the destination's COPY failure).
		{fmt.Errorf("destination shard 1: %w", &pgconn.PgError{Code: "42883", Message: "no binary input function available for type isbn"}), true},
		{fmt.Errorf("destination shard 0: %w", &pgconn.PgError{Code: "57014", Message: "COPY from stdin failed: source shard 0: ERROR: no binary output function available for type extensions.isbn (SQLSTATE 42883)"}), true},
		{&pgconn.PgError{Code: "42883", Message: "function f(integer) does not exist"}, false},
	} {
		if got := unreadableValue(c.err); got != c.want {
			t.Errorf("unreadableValue(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
