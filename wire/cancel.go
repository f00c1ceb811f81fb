package wire

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	wire "github.com/jeroenrinzema/psql-wire"
	"github.com/jeroenrinzema/psql-wire/codes"
	psqlerr "github.com/jeroenrinzema/psql-wire/errors"
	"github.com/jeroenrinzema/psql-wire/pkg/buffer"
)

// errUserCancel is the cause of a command's context cancelled by a
// client's CancelRequest (psql's Ctrl-C, pgjdbc's Statement.cancel, ...).
var errUserCancel = errors.New("canceled by a cancel request")

// cancelKeys lets clients cancel a running command as they cancel a
// PostgreSQL query: every connection gets a process id and a secret key
// (BackendKeyData); a CancelRequest carrying both cancels the command that
// connection is running, and is ignored otherwise, as PostgreSQL does.
type cancelKeys struct {
	log   hclog.Logger
	mu    sync.Mutex
	next  int32
	conns map[int32]*connKey
}

// connKey is one connection's key and its running command.
type connKey struct {
	pid, secret int32
	mu          sync.Mutex
	cancel      context.CancelCauseFunc
	// inTransaction is set by BEGIN and cleared by COMMIT or ROLLBACK: the
	// status ReadyForQuery reports (see txStatus).
	inTransaction atomic.Bool
}

type connKeyCtx struct{}

func newCancelKeys(log hclog.Logger) *cancelKeys {
	return &cancelKeys{log: log, conns: map[int32]*connKey{}}
}

// wrapAuth gives every connection that logs in its key.
func (k *cancelKeys) wrapAuth(auth wire.AuthStrategy) wire.AuthStrategy {
	return func(ctx context.Context, w *buffer.Writer, r *buffer.Reader) (context.Context, error) {
		ctx, err := auth(ctx, w, r)
		if err != nil {
			return ctx, err
		}
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return ctx, err
		}
		k.mu.Lock()
		k.next++
		c := &connKey{pid: k.next, secret: int32(binary.BigEndian.Uint32(b[:]))}
		k.conns[c.pid] = c
		k.mu.Unlock()
		return context.WithValue(ctx, connKeyCtx{}, c), nil
	}
}

func keyOf(ctx context.Context) *connKey {
	c, _ := ctx.Value(connKeyCtx{}).(*connKey)
	return c
}

// backendKeyData is psql-wire's BackendKeyDataFunc.
func (k *cancelKeys) backendKeyData(ctx context.Context) (int32, int32) {
	if c := keyOf(ctx); c != nil {
		return c.pid, c.secret
	}
	return 0, 0
}

// closeConn forgets a closed connection's key.
func (k *cancelKeys) closeConn(ctx context.Context) error {
	if c := keyOf(ctx); c != nil {
		k.mu.Lock()
		delete(k.conns, c.pid)
		k.mu.Unlock()
	}
	return nil
}

// cancelRequest is psql-wire's CancelRequestFn.
func (k *cancelKeys) cancelRequest(_ context.Context, pid, secret int32) error {
	k.mu.Lock()
	c := k.conns[pid]
	k.mu.Unlock()
	if c == nil || subtle.ConstantTimeEq(c.secret, secret) != 1 {
		k.log.Warn("cancel request with an unknown key ignored", "pid", pid)
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancel != nil {
		k.log.Info("cancel request", "pid", pid)
		c.cancel(errUserCancel)
	}
	return nil
}

// start returns the context for one command of ctx's connection, which
// a CancelRequest with the connection's key cancels, and the function to
// call when the command ends.
func (k *cancelKeys) start(ctx context.Context) (context.Context, func()) {
	c := keyOf(ctx)
	cctx, cancel := context.WithCancelCause(ctx)
	if c == nil {
		return cctx, func() { cancel(nil) }
	}
	c.mu.Lock()
	c.cancel = cancel
	c.mu.Unlock()
	return cctx, func() {
		c.mu.Lock()
		c.cancel = nil
		c.mu.Unlock()
		cancel(nil)
	}
}

// canceled is the ErrorResponse for a command a client cancelled, with
// PostgreSQL's SQLSTATE and message.
func canceled() error {
	return psqlerr.WithSeverity(psqlerr.WithCode(errors.New("canceling statement due to user request"), codes.QueryCanceled), psqlerr.LevelError)
}
