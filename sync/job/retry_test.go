package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// stateErr is an engine error that carries a SQLSTATE of its own.
type stateErr struct{ code string }

func (e stateErr) Error() string    { return "engine error " + e.code }
func (e stateErr) SQLState() string { return e.code }

func TestRetryable(t *testing.T) {
	pg := func(code string) error { return &pgconn.PgError{Severity: "ERROR", Code: code, Message: "m"} }
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connection failure 08006", pg("08006"), true},
		{"protocol violation 08P01", pg("08P01"), true},
		{"serialization failure", pg("40001"), true},
		{"deadlock", pg("40P01"), true},
		{"object in use (slot, origin)", pg("55006"), true},
		{"admin shutdown", pg("57P01"), true},
		{"crash shutdown", pg("57P02"), true},
		{"cannot connect now", pg("57P03"), true},
		{"statement timeout (cancelled) is not a lost connection", pg("57014"), false},
		{"unique violation", pg("23505"), false},
		{"undefined function", pg("42883"), false},
		{"wrapped server error keeps its SQLSTATE", fmt.Errorf("shard 1: apply: %w", pg("23505")), false},
		{"wrapped transient server error", fmt.Errorf("shard 1: %w", pg("57P01")), true},
		{"EOF", io.EOF, true},
		{"unexpected EOF, wrapped", fmt.Errorf("receive: %w", io.ErrUnexpectedEOF), true},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, true},
		{"deadline", fmt.Errorf("apply: %w", context.DeadlineExceeded), true},
		{"socket deadline", fmt.Errorf("read: %w", os.ErrDeadlineExceeded), true},
		{"closed connection", fmt.Errorf("exec: %w", pgconn.ErrConnClosed), true},
		{"cancelled: the work is being stopped", fmt.Errorf("x: %w", context.Canceled), false},
		{"a plain error is a bug or bad input", errors.New("decode pgoutput message: 3 trailing bytes"), false},
		{"engine error with a transient SQLSTATE", stateErr{"55006"}, true},
		{"engine error with a final SQLSTATE", stateErr{"42P01"}, false},
		{"engine error wrapping a network failure keeps its own SQLSTATE", fmt.Errorf("x: %w", errors.Join(stateErr{"XX000"}, io.EOF)), false},
	} {
		if got := Retryable(c.err); got != c.want {
			t.Errorf("%s: Retryable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// A failed connection attempt is retried unless the server refused it with
// an error of its own (a wrong password does not fix itself).
func TestRetryableConnect(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	_, err = pgconn.Connect(ctx, "postgres://u:p@"+addr+"/db?sslmode=disable&connect_timeout=5")
	if err == nil {
		t.Fatal("connected to a closed port")
	}
	if !Retryable(err) {
		t.Fatalf("connection refused is not retryable: %v", err)
	}
}
