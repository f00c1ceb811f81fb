// Package adminclient runs commands on a running reshard admin server. The
// CLI uses it for what lives in the `reshard serve` process: CUTOVER of a
// task started there, with the server's SHOW REPLICATION_SLOTS mirrored into
// a local progress registry so that the same display shows the lag.
package adminclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/sync/progress"
)

// URL is the admin server's address as the configuration gives it: the
// listen host ("0.0.0.0" and "::" reached on loopback), port, admin user,
// password and database; TLS is used when the server offers it.
func URL(cfg *catalog.Config) string {
	host := cfg.General.Host
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	u := url.URL{Scheme: "postgres", Host: net.JoinHostPort(host, strconv.Itoa(cfg.General.Port)),
		User: url.UserPassword(cfg.Admin.User, cfg.Admin.Password), Path: "/" + cfg.Admin.Name}
	q := url.Values{}
	q.Set("sslmode", "prefer")
	q.Set("application_name", "reshard-cli")
	u.RawQuery = q.Encode()
	return u.String()
}

// Client is one connection to the admin server.
type Client struct {
	cfg  *pgx.ConnConfig
	conn *pgx.Conn
}

// Dial connects to the admin server at dsn.
func Dial(ctx context.Context, dsn string) (*Client, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("admin server address: %w", err)
	}
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, &commands.Error{Code: commands.CodeConnectionFailure,
			Message: fmt.Sprintf("cannot reach the admin server at %s: %v", addr, unwrapPg(err)),
			Hint:    "is `reshard serve` running with this configuration? CUTOVER acts on a task of that server", Err: err}
	}
	return &Client{cfg: cfg, conn: conn}, nil
}

// Close ends the connection.
func (c *Client) Close() { _ = c.conn.Close(context.Background()) }

// Run sends one command and returns its result set. A server error comes
// back as a *commands.Error with its SQLSTATE, message, detail and hint.
func (c *Client) Run(ctx context.Context, cmd commands.Command) (*commands.Result, error) {
	rows, err := c.conn.Query(ctx, cmd.String())
	if err != nil {
		return nil, serverError(err)
	}
	defer rows.Close()
	res := &commands.Result{}
	for _, f := range rows.FieldDescriptions() {
		res.Columns = append(res.Columns, commands.Column{Name: f.Name, Type: commands.Type(f.DataTypeOID)})
	}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cmd.Keyword(), err)
		}
		res.Rows = append(res.Rows, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, serverError(err)
	}
	res.Tag = rows.CommandTag().String()
	return res, nil
}

func serverError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return &commands.Error{Code: pe.Code, Message: pe.Message, Detail: pe.Detail, Hint: pe.Hint, Err: err}
	}
	return err
}

func unwrapPg(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe
	}
	return err
}

// Mirror copies the admin server's SHOW REPLICATION_SLOTS into reg every
// interval, on a second connection (Run holds the first), until stop is
// called or ctx ends, so that a progress display of reg shows the server's
// streams. The first copy is made before Mirror returns.
func (c *Client) Mirror(ctx context.Context, reg *progress.Registry, every time.Duration) (stop func(), err error) {
	conn, err := pgx.ConnectConfig(ctx, c.cfg.Copy())
	if err != nil {
		return nil, fmt.Errorf("admin server: %w", unwrapPg(err))
	}
	m := &mirror{reg: reg, slots: map[string]*progress.Slot{}}
	ctx, cancel := context.WithCancel(ctx)
	m.poll(ctx, conn)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				m.poll(ctx, conn)
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
		_ = conn.Close(context.Background())
	}, nil
}

type mirror struct {
	reg   *progress.Registry
	slots map[string]*progress.Slot
}

// poll reads SHOW REPLICATION_SLOTS once. A failed read leaves the mirror
// as it was: the command's own result reports real trouble.
func (m *mirror) poll(ctx context.Context, conn *pgx.Conn) {
	rows, err := conn.Query(ctx, "SHOW REPLICATION_SLOTS")
	if err != nil {
		return
	}
	type row struct {
		host, db, name, lsn string
		port, lag, retained int64
		copyData            bool
		last                *time.Time
	}
	var got []row
	for rows.Next() {
		var r row
		var lag, retained string
		var lastMS *int64
		var active bool
		if err := rows.Scan(&r.host, &r.port, &r.db, &r.name, &r.lsn, &lag, &r.lag, &r.copyData, &r.last, &lastMS, &retained, &r.retained, &active); err != nil {
			rows.Close()
			return
		}
		if active { // the streams, not the slots nothing reads
			got = append(got, r)
		}
	}
	rows.Close()
	if rows.Err() != nil {
		return
	}
	seen := map[string]bool{}
	for _, r := range got {
		key := fmt.Sprintf("%s/%s:%d", r.name, r.host, r.port)
		seen[key] = true
		s, ok := m.slots[key]
		if !ok {
			s = &progress.Slot{Task: "server", Host: r.host, Port: int(r.port), Database: r.db, Name: r.name, CopyData: r.copyData}
			m.slots[key] = s
			m.reg.AddSlot(s)
		}
		s.Lag(r.lag)
		s.Retained(r.retained)
		if lsn, err := pglogrepl.ParseLSN(r.lsn); err == nil {
			s.Confirmed(lsn)
		}
		if r.last != nil {
			s.Transaction(*r.last)
		}
	}
	for key, s := range m.slots {
		if !seen[key] {
			m.reg.RemoveSlot(s)
			delete(m.slots, key)
		}
	}
}
