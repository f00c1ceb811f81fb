package clients

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/lib/pq"
)

// runLibPQ runs the plan through lib/pq and database/sql, as Grafana's
// PostgreSQL data source does: Ping (lib/pq sends ";") first, then every
// query without arguments (lib/pq's simple protocol), on one connection.
func runLibPQ(t *testing.T, ctx context.Context, e *env, qs []planQuery, errs []planError) report {
	t.Helper()
	db, err := sql.Open("postgres", e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatalf("lib/pq: connect: %v", err)
	}
	defer func() { conn.Close() }()
	if err := conn.PingContext(ctx); err != nil {
		t.Fatalf("lib/pq: ping: %v", err)
	}
	m := modeReport{Mode: "simple"}
	for _, q := range qs {
		for run := 0; run < q.repeat; run++ {
			r, err := libpqQuery(ctx, conn, q.sql)
			if err != nil {
				t.Fatalf("lib/pq: %s (run %d): %v", q.sql, run, err)
			}
			r.Run = run
			m.Results = append(m.Results, r)
		}
	}
	for _, pe := range errs {
		var err error
		if pe.cancel {
			err = libpqCanceled(ctx, e, conn, pe.sql)
		} else {
			_, err = libpqQuery(ctx, conn, pe.sql)
		}
		er := errResult{SQL: pe.sql, Message: fmt.Sprint(err)}
		var pqErr *pq.Error
		if errors.As(err, &pqErr) {
			er.Code, er.Message = string(pqErr.Code), pqErr.Message
		}
		if pe.cancel {
			// lib/pq gives up a connection whose context was cancelled (with
			// PostgreSQL too: it cannot tell whether the cancel request
			// landed): database/sql opens the next one.
			conn.Close()
			if conn, err = db.Conn(ctx); err != nil {
				t.Fatalf("lib/pq: reconnect: %v", err)
			}
		}
		if err := conn.QueryRowContext(ctx, "SHOW VERSION").Scan(&er.After); err != nil {
			er.After = ""
		}
		m.Errors = append(m.Errors, er)
	}
	return report{Driver: "lib/pq (database/sql)", Modes: []modeReport{m}}
}

func libpqQuery(ctx context.Context, conn *sql.Conn, query string) (result, error) {
	r := result{SQL: query}
	rows, err := conn.QueryContext(ctx, query)
	if err != nil {
		return r, err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return r, err
	}
	for _, ct := range types {
		r.Columns = append(r.Columns, column{Name: ct.Name(), Type: strings.ToLower(ct.DatabaseTypeName())})
	}
	for rows.Next() {
		vals := make([]any, len(types))
		ptrs := make([]any, len(types))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return r, err
		}
		row := make([]value, len(vals))
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				// lib/pq hands types it does not convert (name) as bytes.
				v = string(b)
			}
			row[i] = goValue(v)
		}
		r.Rows = append(r.Rows, row)
	}
	return r, rows.Err()
}

// libpqCanceled runs query and, once SHOW SCHEMA_SYNC lists its statements
// (a cancel request that comes sooner finds nothing to cancel), cancels its
// context: lib/pq sends a cancel request then.
func libpqCanceled(ctx context.Context, e *env, conn *sql.Conn, query string) error {
	admin, err := pgx.Connect(ctx, e.dsn())
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	before := schemaSyncRows(ctx, admin)
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := libpqQuery(qctx, conn, query); done <- err }()
	for {
		select {
		case err := <-done:
			return err
		case <-time.After(100 * time.Millisecond):
			if schemaSyncRows(ctx, admin) > before {
				cancel()
			}
		}
	}
}

// schemaSyncRows counts SHOW SCHEMA_SYNC's rows.
func schemaSyncRows(ctx context.Context, admin *pgx.Conn) int {
	rows, err := admin.Query(ctx, "SHOW SCHEMA_SYNC")
	if err != nil {
		return 0
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
	}
	return n
}
