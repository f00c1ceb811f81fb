package job

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// transientStates are the SQLSTATEs that say "try again later" rather than
// "this cannot work": a serialization failure or deadlock (40001, 40P01),
// an object in use (55006: a replication slot or origin still held by a
// session that is going away), and a server shutting down, crashing or
// starting up (57P01, 57P02, 57P03).
var transientStates = map[string]bool{
	"40001": true,
	"40P01": true,
	"55006": true,
	"57P01": true,
	"57P02": true,
	"57P03": true,
}

// Retryable is the engine's one retry rule. It reports whether err is a
// failure that doing the same work again later can overcome: a lost or
// refused connection (SQLSTATE class 08, EOF, a net.Error, a connection
// pgx has closed), a timeout (a deadline set on an exchange with a server,
// which is how a silent network is noticed), or one of the transient
// SQLSTATEs 40001, 40P01, 55006 and 57P01–57P03. Anything else (a
// constraint violation, a cancelled statement, a missing table, a bug) is
// not: retrying cannot help, and the task must fail with the error.
//
// The first SQLSTATE found in err's chain decides; a server error is never
// taken for a network failure. context.Canceled is not retryable: it is how
// work is stopped.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if code := Code(err); code != "" {
		return strings.HasPrefix(code, "08") || transientStates[code]
	}
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, pgconn.ErrConnClosed) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	// A connection attempt that failed without a server error (refused,
	// unreachable, reset during the handshake) is a network failure.
	var ce *pgconn.ConnectError
	return errors.As(err, &ce)
}
