package wire

import (
	"context"

	wire "github.com/jeroenrinzema/psql-wire"
	"github.com/jeroenrinzema/psql-wire/pkg/buffer"
	"github.com/jeroenrinzema/psql-wire/pkg/types"

	"github.com/reshard/reshard/commands"
)

// psql-wire v0.20.0 always announces server_version "150000" at startup
// (whatever its Version option says), which libpq reads as major version
// 150000: interactive psql warns "psql major version 15, server major
// version 150000", psycopg2's server_version is 1500000000. A client keeps
// the last ParameterStatus of a name, so the admin server announces the
// value SHOW server_version answers once more, after psql-wire's startup
// parameters and before the first ReadyForQuery.

type writerCtx struct{}

// keepWriter stores the connection's writer in the context for
// announceServerVersion.
func keepWriter(auth wire.AuthStrategy) wire.AuthStrategy {
	return func(ctx context.Context, w *buffer.Writer, r *buffer.Reader) (context.Context, error) {
		ctx, err := auth(ctx, w, r)
		if err != nil {
			return ctx, err
		}
		return context.WithValue(ctx, writerCtx{}, w), nil
	}
}

// announceServerVersion is a session middleware that sends the
// server_version ParameterStatus.
func announceServerVersion(ctx context.Context) (context.Context, error) {
	w, _ := ctx.Value(writerCtx{}).(*buffer.Writer)
	version, ok := commands.Setting("server_version")
	if w == nil || !ok {
		return ctx, nil
	}
	w.Start(types.ServerParameterStatus)
	w.AddString("server_version")
	w.AddNullTerminate()
	w.AddString(version)
	w.AddNullTerminate()
	return ctx, w.End()
}
