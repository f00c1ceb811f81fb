package commands

import "fmt"

// SQLSTATE codes reshard answers with.
const (
	CodeSyntaxError            = "42601"
	CodeUndefinedDatabase      = "3D000" // invalid_catalog_name
	CodeFeatureNotSupported    = "0A000"
	CodeUndefinedObject        = "42704"
	CodeInvalidParameterValue  = "22023"
	CodeObjectInUse            = "55006"
	CodeInvalidPassword        = "28P01"
	CodeProgramLimitExceeded   = "54000"
	CodeInternalError          = "XX000"
	CodeInvalidTransactionTerm = "2D000"
	CodeObjectNotInState       = "55000"
	CodeConnectionFailure      = "08006"
	CodeInvalidName            = "42602"
	CodeNameTooLong            = "42622"
)

// Error is an admin-command failure with a SQLSTATE, sent to the client as
// an ErrorResponse.
type Error struct {
	// Code is the SQLSTATE.
	Code string
	// Message is the primary message.
	Message string
	// Detail is optional supporting detail.
	Detail string
	// Hint is optional advice, such as the expected form of a command.
	Hint string
	// Position is the 1-based character position in the query, or 0.
	Position int
	// Err is the underlying cause, if any.
	Err error
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an Error with a SQLSTATE and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
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
