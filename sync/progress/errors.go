package progress

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
)

// Components that count errors.
const (
	ComponentCopy   = "copy"
	ComponentSchema = "schema"
	ComponentStream = "stream"
)

// Error kinds besides a SQLSTATE.
const (
	KindTimeout    = "timeout"
	KindConnection = "connection"
	KindOther      = "other"
)

// ErrorCount is a group of errors of one component and kind, and (in
// ErrorCounts) how many there were.
type ErrorCount struct {
	// Component is copy, schema or stream.
	Component string
	// Kind is the SQLSTATE of an error PostgreSQL reported, else timeout,
	// connection or other.
	Kind string
	// Count is how many errors (zero in map keys).
	Count int64
}

// ErrorKind classifies an error: its SQLSTATE when PostgreSQL reported it,
// else timeout, connection or other.
func ErrorKind(err error) string {
	var pg *pgconn.PgError
	var ne net.Error
	var ce *pgconn.ConnectError
	switch {
	case errors.As(err, &pg):
		return pg.Code
	case errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	case errors.As(err, &ce), errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return KindConnection
	}
	return KindOther
}

// CountError counts an error of a component. Cancellation (a task
// stopped on purpose) is not an error and is not counted.
func (r *Registry) CountError(component string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.countError(component, err)
}

// countError is CountError with r.mu held.
func (r *Registry) countError(component string, err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	r.errs[ErrorCount{Component: component, Kind: ErrorKind(err)}]++
}

// ErrorCounts returns how many errors each component had, by kind, since
// the registry was made.
func (r *Registry) ErrorCounts() []ErrorCount {
	return counted(r, r.errs, func(k ErrorCount, n int64) ErrorCount { k.Count = n; return k })
}

// counted returns the keys of a count map of r, each with its count set.
func counted[K comparable](r *Registry, m map[K]int64, with func(K, int64) K) []K {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]K, 0, len(m))
	for k, n := range m {
		out = append(out, with(k, n))
	}
	return out
}
