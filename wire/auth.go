package wire

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"

	wire "github.com/jeroenrinzema/psql-wire"
	"github.com/jeroenrinzema/psql-wire/codes"
	psqlerr "github.com/jeroenrinzema/psql-wire/errors"
	"github.com/jeroenrinzema/psql-wire/pkg/buffer"
	"github.com/jeroenrinzema/psql-wire/pkg/types"
)

// PostgreSQL authentication request codes.
const (
	authOK                = 0
	authClearTextPassword = 3
)

// credentials are the admin login, compared in constant time.
type credentials struct {
	database string
	user     [32]byte
	password [32]byte
}

func newCredentials(database, user, password string) credentials {
	return credentials{database: database, user: sha256.Sum256([]byte(user)), password: sha256.Sum256([]byte(password))}
}

// check compares user and password in constant time (both always compared,
// over fixed-length digests, so timing reveals neither length nor prefix).
func (c credentials) check(user, password string) bool {
	u := sha256.Sum256([]byte(user))
	p := sha256.Sum256([]byte(password))
	okUser := subtle.ConstantTimeCompare(u[:], c.user[:])
	okPass := subtle.ConstantTimeCompare(p[:], c.password[:])
	return okUser&okPass == 1
}

// authStrategy refuses a client without TLS when requireTLS is set (FATAL
// 28000, before it sends its password), then asks for a clear-text password (use TLS when it crosses a
// network), then checks user and password (28P01) and the database name
// (3D000). Failures are FATAL, as in PostgreSQL.
func authStrategy(creds credentials, requireTLS bool, onFail func(user, database, reason string)) wire.AuthStrategy {
	return func(ctx context.Context, writer *buffer.Writer, reader *buffer.Reader) (context.Context, error) {
		params := wire.ClientParameters(ctx)
		if requireTLS && !usesTLS(wire.RemoteAddress(ctx)) {
			onFail(params[wire.ParamUsername], params[wire.ParamDatabase], "connection without TLS")
			fail := psqlerr.WithSeverity(psqlerr.WithHint(psqlerr.WithCode(
				errors.New("connection without TLS refused: this admin server requires TLS (tls_client_required)"),
				codes.InvalidAuthorizationSpecification), "connect with sslmode=require"), psqlerr.LevelFatal)
			if err := wire.WriteUnterminatedError(writer, fail); err != nil {
				return ctx, err
			}
			return ctx, fail
		}
		writer.Start(types.ServerAuth)
		writer.AddInt32(authClearTextPassword)
		if err := writer.End(); err != nil {
			return ctx, err
		}
		t, _, err := reader.ReadTypedMsg()
		if err != nil {
			return ctx, err
		}
		if t != types.ClientPassword {
			return ctx, errors.New("expected a password message")
		}
		password, err := reader.GetString()
		if err != nil {
			return ctx, err
		}
		user, database := params[wire.ParamUsername], params[wire.ParamDatabase]
		if database == "" {
			database = user
		}
		var fail error
		switch {
		case !creds.check(user, password):
			fail = psqlerr.WithCode(fmt.Errorf("password authentication failed for user %q", user), codes.InvalidPassword)
			onFail(user, database, "wrong user or password")
		case database != creds.database:
			fail = psqlerr.WithHint(psqlerr.WithCode(fmt.Errorf("database %q does not exist", database), codes.InvalidCatalogName),
				fmt.Sprintf("the admin database is %q", creds.database))
			onFail(user, database, "unknown database")
		}
		if fail != nil {
			fail = psqlerr.WithSeverity(fail, psqlerr.LevelFatal)
			if err := wire.WriteUnterminatedError(writer, fail); err != nil {
				return ctx, err
			}
			return ctx, fail
		}
		writer.Start(types.ServerAuth)
		writer.AddInt32(authOK)
		return ctx, writer.End()
	}
}
