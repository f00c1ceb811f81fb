package testkit

import (
	"context"
	"net"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/wire"
)

// ServeAdmin runs an admin server for cat on exec, as reshard serve does,
// until the test ends or shutdown is called, and returns its address.
func ServeAdmin(t testing.TB, cat *catalog.Catalog, exec *commands.Executor, log hclog.Logger) (addr *net.TCPAddr, shutdown func()) {
	t.Helper()
	srv, err := wire.New(cat, exec, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	var stopped bool
	shutdown = func() {
		if stopped {
			return
		}
		stopped = true
		stop()
		if err := <-done; err != nil {
			t.Errorf("admin server: %v", err)
		}
	}
	t.Cleanup(shutdown)
	return srv.Addr().(*net.TCPAddr), shutdown
}
