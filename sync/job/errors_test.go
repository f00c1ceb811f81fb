package job

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestErrorMessageListsProblems(t *testing.T) {
	e := Refused("55000", "cannot copy", []string{"wal_level is replica", "no free slot"})
	if got := e.Error(); got != "cannot copy: wal_level is replica; no free slot" {
		t.Fatalf("Error() = %q", got)
	}
	if e.SQLState() != "55000" {
		t.Fatalf("SQLState() = %q", e.SQLState())
	}
	if got := Errorf("3D000", "database %q is not configured", "x").Error(); got != `database "x" is not configured` {
		t.Fatalf("Errorf: %q", got)
	}
}

func TestErrorUnwrapsAndCodeFindsTheSQLState(t *testing.T) {
	cause := &pgconn.PgError{Code: "28P01", Message: "password authentication failed"}
	e := Wrap("08006", cause, "cannot connect").WithHint("check %s", "users.toml")
	wrapped := fmt.Errorf("copy: %w", e)
	var pe *pgconn.PgError
	if !errors.As(wrapped, &pe) || pe.Code != "28P01" {
		t.Fatal("the cause is not reachable through the Error")
	}
	var je *Error
	if !errors.As(wrapped, &je) || je.Hint != "check users.toml" {
		t.Fatalf("errors.As: %v", je)
	}
	// The outermost SQLSTATE wins: the engine's, not the cause's.
	if Code(wrapped) != "08006" {
		t.Fatalf("Code = %q", Code(wrapped))
	}
	if Code(fmt.Errorf("plain")) != "" {
		t.Fatal("a plain error has no SQLSTATE")
	}
	if Code(fmt.Errorf("x: %w", cause)) != "28P01" {
		t.Fatal("a PgError's SQLSTATE is found")
	}
}
