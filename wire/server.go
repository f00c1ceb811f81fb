// Package wire is reshard's admin server: it speaks the PostgreSQL wire
// protocol (through psql-wire), authenticates operators, parses what they send
// with the commands grammar and answers with real result sets and
// ErrorResponses carrying SQLSTATEs, so psql and every driver work unchanged.
package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	wire "github.com/jeroenrinzema/psql-wire"
	"github.com/jeroenrinzema/psql-wire/codes"
	psqlerr "github.com/jeroenrinzema/psql-wire/errors"
	"github.com/jeroenrinzema/psql-wire/pkg/types"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/commands"
)

// Server is the admin server.
type Server struct {
	cat    *catalog.Catalog
	exec   *commands.Executor
	log    hclog.Logger
	srv    *wire.Server
	keys   *cancelKeys
	addr   string
	listen net.Listener
}

// New builds the admin server for the catalog's [general] and [admin]
// settings. Commands run through exec.
func New(cat *catalog.Catalog, exec *commands.Executor, logger hclog.Logger) (*Server, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	log := logger.Named("wire")
	s := &Server{cat: cat, exec: exec, log: log, keys: newCancelKeys(log.Named("cancel"))}
	cfg := cat.Config
	creds, err := newCredentials(cfg.Admin.Name, cfg.Admin.User, cfg.Admin.Password)
	if err != nil {
		return nil, fmt.Errorf("admin server: %w", err)
	}
	auth := authStrategy(creds, cfg.General.AuthType, cfg.General.TLSClientRequired, func(user, database, reason string) {
		log.Warn("admin login refused", "user", user, "database", database, "reason", reason)
	})
	opts := []wire.OptionFn{
		wire.Logger(newSlogLogger(log.Named("psql-wire"))),
		wire.SessionAuthStrategy(keepWriter(s.keys.wrapAuth(auth))),
		wire.SessionMiddleware(announceServerVersion),
		wire.BackendKeyData(s.keys.backendKeyData),
		wire.CancelRequest(s.keys.cancelRequest),
		wire.CloseConn(s.keys.closeConn),
		wire.TxStatus(txStatus),
		wire.GlobalParameters(wire.Parameters{
			"standard_conforming_strings": "on",
			"DateStyle":                   "ISO, MDY",
			"IntervalStyle":               "postgres",
			"TimeZone":                    "UTC",
			"integer_datetimes":           "on",
		}),
		wire.WithShutdownTimeout(5 * time.Second),
		wire.ExtendTypes(registerTypes),
	}
	if cfg.General.TLSCertificate != "" {
		cert, err := tls.LoadX509KeyPair(cfg.General.TLSCertificate, cfg.General.TLSPrivateKey)
		if err != nil {
			return nil, fmt.Errorf("load TLS certificate %s: %w", cfg.General.TLSCertificate, err)
		}
		opts = append(opts, wire.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	}
	srv, err := wire.NewServer(s.parse, opts...)
	if err != nil {
		return nil, fmt.Errorf("admin server: %w", err)
	}
	s.srv = srv
	s.addr = net.JoinHostPort(cfg.General.Host, strconv.Itoa(cfg.General.Port))
	return s, nil
}

// Listen opens the listening socket on [general] host:port. Call Serve next.
func (s *Server) Listen() error {
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("admin server: listen on %s: %w", s.addr, err)
	}
	s.listen = tlsListener{l}
	return nil
}

// Addr is the address the server listens on (after Listen).
func (s *Server) Addr() net.Addr {
	if s.listen == nil {
		return nil
	}
	return s.listen.Addr()
}

// Serve accepts connections until ctx is cancelled, then shuts down
// gracefully: no new connections, running commands get a few seconds.
func (s *Server) Serve(ctx context.Context) error {
	if s.listen == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.log.Info("admin server listening", "addr", s.listen.Addr().String(), "database", s.cat.Config.Admin.Name,
		"auth_type", s.cat.Config.General.AuthType, "tls", s.cat.Config.General.TLSCertificate != "", "tls_required", s.cat.Config.General.TLSClientRequired)
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.listen) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("admin server shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("shutdown", "error", err)
	}
	_ = s.srv.Close()
	<-errc
	return nil
}

// parse turns one query into prepared statements, one per command.
func (s *Server) parse(ctx context.Context, q wire.Query) (wire.PreparedStatements, error) {
	cmds, err := commands.Parse(q.Query)
	if err != nil {
		s.log.Debug("parse error", "query", truncate(q.Query), "error", err)
		return nil, toWireError(err)
	}
	if !q.SimpleQuery && len(cmds) > 1 {
		return nil, psqlerr.WithCode(errors.New("cannot insert multiple commands into a prepared statement"), codes.Code(commands.CodeSyntaxError))
	}
	stmts := make(wire.PreparedStatements, 0, len(cmds))
	for _, cmd := range cmds {
		cmd := cmd
		columns, err := s.exec.Columns(cmd)
		if err != nil {
			return nil, toWireError(err)
		}
		simple := q.SimpleQuery
		fn := func(ctx context.Context, w wire.DataWriter, _ []wire.Parameter) error {
			return s.run(ctx, w, cmd, simple)
		}
		stmts = append(stmts, wire.NewStatement(fn, wire.WithColumns(toWireColumns(columns))))
	}
	return stmts, nil
}

func (s *Server) run(ctx context.Context, w wire.DataWriter, cmd commands.Command, simple bool) error {
	if tx, ok := cmd.(commands.Transaction); ok {
		if k := keyOf(ctx); k != nil {
			k.inTransaction.Store(tx.Tag == "BEGIN" || tx.Tag == "START TRANSACTION")
		}
	}
	if _, ok := cmd.(commands.Empty); ok {
		if simple {
			return w.Empty()
		}
		return w.Complete("")
	}
	start := time.Now()
	ctx, done := s.keys.start(ctx)
	defer done()
	res, err := s.exec.Execute(commands.WithSession(ctx, session(ctx)), cmd)
	if err != nil && errors.Is(context.Cause(ctx), errUserCancel) {
		s.log.Info("command canceled by the client", "command", cmd.String(), "error", err)
		return canceled()
	}
	if err != nil {
		s.log.Debug("command failed", "command", cmd.String(), "error", err)
		return toWireError(err)
	}
	for _, n := range res.Notices {
		if err := sendNotice(ctx, n); err != nil {
			return fmt.Errorf("%s: write notice: %w", cmd.Keyword(), err)
		}
	}
	for _, row := range res.Rows {
		if err := w.Row(row); err != nil {
			return fmt.Errorf("%s: write row: %w", cmd.Keyword(), err)
		}
	}
	s.log.Debug("command done", "command", cmd.String(), "rows", len(res.Rows), "elapsed", time.Since(start))
	return w.Complete(res.Tag)
}

// txStatus is the transaction status ReadyForQuery reports: in a
// transaction block between BEGIN and COMMIT or ROLLBACK, as the client
// expects (admin commands are not transactional). psql-wire closes the
// portals at an idle ReadyForQuery, as PostgreSQL does at the end of a
// transaction: a client that fetches a result in batches inside a
// transaction (pgjdbc with a fetch size, as Metabase runs) keeps its portal.
func txStatus(ctx context.Context) types.ServerStatus {
	if k := keyOf(ctx); k != nil && k.inTransaction.Load() {
		return types.ServerTransactionBlock
	}
	return types.ServerIdle
}

// session is what a statement may ask about the connection in ctx: the
// login's user and database, the client's application_name, the process id
// given in BackendKeyData.
func session(ctx context.Context) commands.Session {
	params := wire.ClientParameters(ctx)
	s := commands.Session{User: params[wire.ParamUsername], Database: params[wire.ParamDatabase],
		ApplicationName: params[wire.ParamApplicationName]}
	if s.Database == "" {
		s.Database = s.User
	}
	if k := keyOf(ctx); k != nil {
		s.BackendPID = k.pid
	}
	return s
}

func toWireColumns(cols []commands.Column) wire.Columns {
	out := make(wire.Columns, len(cols))
	for i, c := range cols {
		out[i] = wire.Column{Name: c.Name, Oid: uint32(c.Type), Width: typeWidth(c.Type)}
	}
	return out
}

func typeWidth(t commands.Type) int16 {
	switch t {
	case commands.TypeBool:
		return 1
	case commands.TypeInt2:
		return 2
	case commands.TypeInt4, commands.TypeOid:
		return 4
	case commands.TypeName:
		return 64
	case commands.TypeInt8, commands.TypeFloat8, commands.TypeTimestamptz:
		return 8
	}
	return -1
}

// toWireError turns an error into one psql-wire sends as an ErrorResponse
// with the right SQLSTATE, detail and hint.
func toWireError(err error) error {
	var ce *commands.Error
	if errors.As(err, &ce) {
		out := psqlerr.WithCode(errors.New(ce.Message), codes.Code(ce.Code))
		if ce.Detail != "" {
			out = psqlerr.WithDetail(out, ce.Detail)
		}
		if ce.Hint != "" {
			out = psqlerr.WithHint(out, ce.Hint)
		}
		return psqlerr.WithSeverity(out, psqlerr.LevelError)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return psqlerr.WithCode(fmt.Errorf("canceling statement: %w", err), codes.QueryCanceled)
	}
	return psqlerr.WithCode(err, codes.Internal)
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
