package wire

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"

	wire "github.com/jeroenrinzema/psql-wire"
	"github.com/jeroenrinzema/psql-wire/codes"
	psqlerr "github.com/jeroenrinzema/psql-wire/errors"
	"github.com/jeroenrinzema/psql-wire/pkg/buffer"
	"github.com/jeroenrinzema/psql-wire/pkg/types"
	"github.com/xdg-go/scram"

	"github.com/reshard/reshard/catalog"
)

// PostgreSQL authentication request codes (protocol, section 55.7).
const (
	authOK                = 0
	authClearTextPassword = 3
	authMD5Password       = 5
	authSASL              = 10
	authSASLContinue      = 11
	authSASLFinal         = 12
)

// scramMechanism is the one SASL mechanism offered. SCRAM-SHA-256-PLUS
// (channel binding) is not: the server would need the TLS certificate's
// hash in every conversation, and clients fall back to the plain mechanism.
const scramMechanism = "SCRAM-SHA-256"

// scramIterations is PostgreSQL's default scram_iterations.
const scramIterations = 4096

// credentials are the admin login. Nothing here is the password in clear:
// its SHA-256 (for constant-time comparison of a clear-text password),
// PostgreSQL's md5 hash of it, and SCRAM's stored and server keys.
type credentials struct {
	database string
	userName string
	user     [32]byte
	password [32]byte
	// md5 is hex(md5(password + user)), what PostgreSQL stores for md5.
	md5 string
	// scram verifies SCRAM-SHA-256 conversations against the password.
	scram *scram.Server
}

func newCredentials(database, user, password string) (credentials, error) {
	c := credentials{database: database, userName: user,
		user: sha256.Sum256([]byte(user)), password: sha256.Sum256([]byte(password))}
	sum := md5.Sum([]byte(password + user))
	c.md5 = hex.EncodeToString(sum[:])
	// As PostgreSQL: the password is SASLprep-normalized, or used as it is
	// when it is not a valid SASLprep string (libpq does the same).
	client, err := scram.SHA256.NewClient("", password, "")
	if err != nil {
		client, _ = scram.SHA256.NewClientUnprepped("", password, "")
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return c, fmt.Errorf("SCRAM salt: %w", err)
	}
	stored, err := client.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: scramIterations})
	if err != nil {
		return c, fmt.Errorf("SCRAM keys: %w", err)
	}
	// Every client gets the admin's salt and iterations, whatever user it
	// names: the exchange fails only at its end, so a wrong user name looks
	// like a wrong password.
	c.scram, err = scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return stored, nil })
	if err != nil {
		return c, fmt.Errorf("SCRAM server: %w", err)
	}
	return c, nil
}

// checkUser compares the user in constant time.
func (c credentials) checkUser(user string) bool {
	u := sha256.Sum256([]byte(user))
	return subtle.ConstantTimeCompare(u[:], c.user[:]) == 1
}

// check compares user and clear-text password in constant time (both
// always compared, over fixed-length digests, so timing reveals neither
// length nor prefix).
func (c credentials) check(user, password string) bool {
	p := sha256.Sum256([]byte(password))
	okPass := subtle.ConstantTimeCompare(p[:], c.password[:])
	return c.checkUser(user) && okPass == 1
}

// checkMD5 compares an md5 password response ("md5" + hex(md5(hex(md5(
// password + user)) + salt))) with the admin's, in constant time.
func (c credentials) checkMD5(user, response string, salt [4]byte) bool {
	want := md5.Sum(append([]byte(c.md5), salt[:]...))
	expected := "md5" + hex.EncodeToString(want[:])
	okPass := subtle.ConstantTimeCompare([]byte(response), []byte(expected))
	return c.checkUser(user) && okPass == 1
}

// errLogin is a failed proof of the password: the client is told only that
// (as PostgreSQL does), the log says why.
var errLogin = errors.New("password authentication failed")

// protocolViolation is a malformed authentication message (08P01).
func protocolViolation(format string, args ...any) error {
	return psqlerr.WithCode(fmt.Errorf(format, args...), codes.ProtocolViolation)
}

// authStrategy refuses a client without TLS when requireTLS is set (FATAL
// 28000, before it sends its password), then has the client prove the
// password by method (SCRAM-SHA-256, md5 or clear text: use TLS when it
// crosses a network), then checks the user and the proof (28P01) and the
// database name (3D000). Failures are FATAL, as in PostgreSQL. onFail logs
// a refusal; it never sees a password or a proof.
func authStrategy(creds credentials, method string, requireTLS bool, onFail func(user, database, reason string)) wire.AuthStrategy {
	return func(ctx context.Context, writer *buffer.Writer, reader *buffer.Reader) (context.Context, error) {
		params := wire.ClientParameters(ctx)
		user, database := params[wire.ParamUsername], params[wire.ParamDatabase]
		if database == "" {
			database = user
		}
		fatal := func(err error) (context.Context, error) {
			err = psqlerr.WithSeverity(err, psqlerr.LevelFatal)
			if werr := wire.WriteUnterminatedError(writer, err); werr != nil {
				return ctx, werr
			}
			return ctx, err
		}
		if requireTLS && !usesTLS(wire.RemoteAddress(ctx)) {
			onFail(user, database, "connection without TLS")
			return fatal(psqlerr.WithHint(psqlerr.WithCode(
				errors.New("connection without TLS refused: this admin server requires TLS (tls_client_required)"),
				codes.InvalidAuthorizationSpecification), "connect with sslmode=require"))
		}
		var err error
		switch method {
		case catalog.AuthPlain:
			err = plainLogin(creds, user, writer, reader)
		case catalog.AuthMD5:
			err = md5Login(creds, user, writer, reader)
		default:
			err = scramLogin(creds, user, writer, reader)
		}
		var reason string
		switch {
		case errors.Is(err, errLogin):
			reason = "wrong user or password (" + method + ")"
			err = psqlerr.WithCode(fmt.Errorf("password authentication failed for user %q", user), codes.InvalidPassword)
		case err != nil && psqlerr.GetCode(err) == codes.ProtocolViolation:
			reason = "malformed authentication message (" + method + "): " + err.Error()
		case err != nil:
			// The connection broke (a client that asks for the method first
			// and the password from its user next, as psql, comes back).
			return ctx, err
		case database != creds.database:
			reason = "unknown database"
			err = psqlerr.WithHint(psqlerr.WithCode(fmt.Errorf("database %q does not exist", database), codes.InvalidCatalogName),
				fmt.Sprintf("the admin database is %q", creds.database))
		}
		if err != nil {
			onFail(user, database, reason)
			return fatal(err)
		}
		return ctx, writeAuth(writer, authOK, nil)
	}
}

// writeAuth sends an Authentication message: the request code, then data.
func writeAuth(writer *buffer.Writer, code int32, data []byte) error {
	writer.Start(types.ServerAuth)
	writer.AddInt32(code)
	if len(data) > 0 {
		writer.AddBytes(data)
	}
	return writer.End()
}

// readPassword reads the client's next PasswordMessage-type message
// (password, SASLInitialResponse and SASLResponse share the type byte).
func readPassword(reader *buffer.Reader) error {
	t, _, err := reader.ReadTypedMsg()
	if err != nil {
		return err
	}
	if t != types.ClientPassword {
		return protocolViolation("expected a password response, got message type %q", byte(t))
	}
	return nil
}

// readPasswordString reads a PasswordMessage: one string (a clear-text
// password or an md5 response).
func readPasswordString(reader *buffer.Reader) (string, error) {
	if err := readPassword(reader); err != nil {
		return "", err
	}
	s, err := reader.GetString()
	if err != nil {
		return "", protocolViolation("invalid password message")
	}
	return s, nil
}

// plainLogin asks for the password in clear text.
func plainLogin(creds credentials, user string, writer *buffer.Writer, reader *buffer.Reader) error {
	if err := writeAuth(writer, authClearTextPassword, nil); err != nil {
		return err
	}
	password, err := readPasswordString(reader)
	if err != nil {
		return err
	}
	if !creds.check(user, password) {
		return errLogin
	}
	return nil
}

// md5Login asks for PostgreSQL's md5 response to a random salt.
func md5Login(creds credentials, user string, writer *buffer.Writer, reader *buffer.Reader) error {
	var salt [4]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return err
	}
	if err := writeAuth(writer, authMD5Password, salt[:]); err != nil {
		return err
	}
	response, err := readPasswordString(reader)
	if err != nil {
		return err
	}
	if !creds.checkMD5(user, response, salt) {
		return errLogin
	}
	return nil
}

// scramLogin runs a SCRAM-SHA-256 exchange (RFC 5802, RFC 7677) as
// PostgreSQL does: AuthenticationSASL naming the mechanism, the client's
// SASLInitialResponse (client-first-message), AuthenticationSASLContinue
// (server-first), the client's SASLResponse (client-final, with its proof),
// then AuthenticationSASLFinal (the server's signature, proving the server
// knows the password too). The user name inside the SCRAM messages is
// ignored, as PostgreSQL ignores it: the startup message's is checked.
func scramLogin(creds credentials, user string, writer *buffer.Writer, reader *buffer.Reader) error {
	mechanisms := append([]byte(scramMechanism), 0, 0)
	if err := writeAuth(writer, authSASL, mechanisms); err != nil {
		return err
	}
	if err := readPassword(reader); err != nil {
		return err
	}
	mechanism, err := reader.GetString()
	if err != nil {
		return protocolViolation("invalid SASL initial response")
	}
	if mechanism != scramMechanism {
		return protocolViolation("client selected an invalid SASL authentication mechanism %q", mechanism)
	}
	n, err := reader.GetInt32()
	if err != nil || n < 0 || int(n) != len(reader.Msg) {
		return protocolViolation("invalid SASL initial response length")
	}
	first, _ := reader.GetBytes(int(n))
	conv := creds.scram.NewConversation()
	serverFirst, err := conv.Step(string(first))
	if err != nil {
		return protocolViolation("malformed SCRAM message: %v", err)
	}
	if err := writeAuth(writer, authSASLContinue, []byte(serverFirst)); err != nil {
		return err
	}
	if err := readPassword(reader); err != nil {
		return err
	}
	final, _ := reader.GetBytes(len(reader.Msg))
	serverFinal, err := conv.Step(string(final))
	switch {
	case err != nil && serverFinal == scram.ErrInvalidProof:
		return errLogin
	case err != nil:
		return protocolViolation("malformed SCRAM message: %v", err)
	case !conv.Valid() || !creds.checkUser(user):
		return errLogin
	}
	return writeAuth(writer, authSASLFinal, []byte(serverFinal))
}
