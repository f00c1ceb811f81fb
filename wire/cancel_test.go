package wire

import (
	"context"
	"errors"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/jeroenrinzema/psql-wire/pkg/buffer"
)

func TestCancelKeys(t *testing.T) {
	k := newCancelKeys(hclog.NewNullLogger())
	login := k.wrapAuth(func(ctx context.Context, _ *buffer.Writer, _ *buffer.Reader) (context.Context, error) {
		return ctx, nil
	})
	a, err := login(context.Background(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := login(context.Background(), nil, nil)
	pidA, secretA := k.backendKeyData(a)
	pidB, _ := k.backendKeyData(b)
	if pidA == pidB || pidA == 0 {
		t.Fatalf("process ids %d and %d", pidA, pidB)
	}

	// Nothing running: a cancel request is ignored.
	_ = k.cancelRequest(context.Background(), pidA, secretA)
	cmd, done := k.start(a)
	if cmd.Err() != nil {
		t.Fatal("a cancel request sent before the command ran cancelled it")
	}
	// A wrong secret or another connection's id cancels nothing.
	_ = k.cancelRequest(context.Background(), pidA, secretA+1)
	_ = k.cancelRequest(context.Background(), pidB, secretA)
	if cmd.Err() != nil {
		t.Fatal("cancelled with a wrong key")
	}
	_ = k.cancelRequest(context.Background(), pidA, secretA)
	if !errors.Is(context.Cause(cmd), errUserCancel) {
		t.Fatalf("cause %v", context.Cause(cmd))
	}
	done()

	// The next command of the connection starts uncancelled.
	next, done := k.start(a)
	if next.Err() != nil {
		t.Fatal("next command starts cancelled")
	}
	done()
	// A closed connection's key is forgotten.
	_ = k.closeConn(a)
	if len(k.conns) != 1 {
		t.Fatalf("%d keys after close", len(k.conns))
	}
}
