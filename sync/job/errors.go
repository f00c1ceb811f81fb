package job

import (
	"errors"
	"fmt"
	"strings"
)

// Error is the engine's one error type: a failure with the SQLSTATE the
// admin server answers with, the message, optional detail and hint (as a
// PostgreSQL ErrorResponse has them), and, for checks made before anything
// is changed, every problem found, each naming what to fix.
type Error struct {
	// Code is the SQLSTATE.
	Code string
	// Message is the primary message.
	Message string
	// Detail is optional supporting detail.
	Detail string
	// Hint is optional advice on what to do.
	Hint string
	// Problems are the findings of a check (preflight), one per problem.
	Problems []string
	// Err is the underlying cause, if any.
	Err error
}

// Errorf returns an Error with a SQLSTATE and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an Error with a SQLSTATE and a formatted message whose
// cause is err (errors.Is and errors.As see through it).
func Wrap(code string, err error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// Refused returns an Error listing every problem a check found.
func Refused(code, message string, problems []string) *Error {
	return &Error{Code: code, Message: message, Problems: problems}
}

// WithHint sets the hint and returns e.
func (e *Error) WithHint(format string, args ...any) *Error {
	e.Hint = fmt.Sprintf(format, args...)
	return e
}

// WithDetail sets the detail and returns e.
func (e *Error) WithDetail(format string, args ...any) *Error {
	e.Detail = fmt.Sprintf(format, args...)
	return e
}

// Error is the message, followed by the problems when there are any.
func (e *Error) Error() string {
	if len(e.Problems) == 0 {
		return e.Message
	}
	return e.Message + ": " + strings.Join(e.Problems, "; ")
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// SQLState is the SQLSTATE to answer with.
func (e *Error) SQLState() string { return e.Code }

// sqlStater is an error that knows its SQLSTATE (an Error, a
// *pgconn.PgError).
type sqlStater interface{ SQLState() string }

// Code returns the SQLSTATE of the first error in err's chain that carries
// one, or "" when none does.
func Code(err error) string {
	var s sqlStater
	if errors.As(err, &s) {
		return s.SQLState()
	}
	return ""
}
