package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/reshard/reshard/catalog"

	"github.com/reshard/reshard/sync/job"
)

// receiver is the replication connection to one source shard: it starts
// streaming from the slot, reads pgoutput messages and keepalives, and
// sends the position to confirm.
type receiver struct {
	conn *pgconn.PgConn
	node *catalog.Node
	slot string
	// deadline is the read deadline set on the socket.
	deadline time.Time
	// stopWake ends the cancellation watch.
	stopWake func() bool
	// woken: wake moved the socket's deadline (a Hold changed, hold.go);
	// confirmed is the position last sent.
	woken     atomic.Bool
	confirmed pglogrepl.LSN
}

// received is one message from the source: pgoutput data, a keepalive,
// or nothing before the deadline.
type received struct {
	// data is a pgoutput message starting at walStart; it is only valid
	// until the next receive.
	data     []byte
	walStart pglogrepl.LSN
	// keepalive: the source's WAL end and whether it asks for a reply.
	keepalive      bool
	serverEnd      pglogrepl.LSN
	replyRequested bool
	// timeout: nothing arrived before the deadline.
	timeout bool
}

// dialReceiver opens a replication connection to node. Cancelling ctx
// later interrupts a pending receive.
func dialReceiver(ctx context.Context, cat *catalog.Catalog, node *catalog.Node, slot string) (*receiver, error) {
	// The source writes values in text forms that any server reads back
	// the same (as PostgreSQL's own subscriber asks).
	dsn, err := cat.ConnString(node, map[string]string{"replication": "database",
		"DateStyle": "ISO", "IntervalStyle": "postgres", "extra_float_digits": "3"})
	if err != nil {
		return nil, err
	}
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("replication connection to %s: %w", node, err)
	}
	r := &receiver{conn: conn, node: node, slot: slot}
	r.stopWake = context.AfterFunc(ctx, func() { _ = conn.Conn().SetReadDeadline(time.Now()) })
	return r, nil
}

func (r *receiver) close() {
	r.stopWake()
	r.conn.Close(context.Background())
}

// slotPosition reads the slot's confirmed position from the source.
func slotPosition(ctx context.Context, dsn, slot string, node *catalog.Node) (pglogrepl.LSN, error) {
	plain, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer plain.Close(context.Background())
	var lsn *string
	err = plain.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lsn)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, job.Errorf("42704", "replication slot %q does not exist on %s", slot, node)
	}
	if err != nil || lsn == nil {
		return 0, err
	}
	return pglogrepl.ParseLSN(*lsn)
}

// PluginOptions are pgoutput's options for a source of major version
// major (the one place that chooses them), as name/value pairs:
//   - proto_version: the highest the source supports, 4 on PostgreSQL 16
//     and later, 3 on 15 (with streaming 'true' the messages are those of
//     protocol 2: 3 adds two-phase commits, which the slots do not enable,
//     and 4 parallel streaming, which streaming 'true' does not ask for);
//   - streaming 'true': transactions are sent while in progress once they
//     outgrow logical_decoding_work_mem;
//   - origin 'none' on 16 and later: only changes that no replication
//     origin applied, so a stream never carries changes reshard itself
//     applied (its appliers tag every change with their origin): the loop
//     guard of reverse replication, besides each direction's own slots.
//     Not when the database is itself a subscriber (subscribed): the rows
//     its subscriptions apply carry their origin too, and must be streamed.
func PluginOptions(publication string, major int, subscribed bool) [][2]string {
	proto := "3"
	if major >= 16 {
		proto = "4"
	}
	opts := [][2]string{
		{"proto_version", proto},
		{"publication_names", pgx.Identifier{publication}.Sanitize()},
		{"streaming", "true"},
	}
	if major >= 16 && !subscribed {
		opts = append(opts, [2]string{"origin", "none"})
	}
	return opts
}

// pluginArgs renders PluginOptions for START_REPLICATION.
func pluginArgs(opts [][2]string) []string {
	var args []string
	for _, o := range opts {
		args = append(args, fmt.Sprintf("%s '%s'", o[0], strings.ReplaceAll(o[1], "'", "''")))
	}
	return args
}

// subscribed tells whether the database at dsn has subscriptions of its
// own (logical replication into it from elsewhere).
func subscribed(ctx context.Context, dsn string) (bool, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n)
	return n > 0, err
}

// serverMajor is the major version the server announced at connect
// (server_version "17.10", "15.18 (Debian 15.18-0+deb12u1)"); 0 when it
// cannot be read.
func serverMajor(conn *pgconn.PgConn) int {
	v := conn.ParameterStatus("server_version")
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// start begins streaming the slot's changes for the publication, with the
// options PluginOptions chooses for the source (dsn: a plain connection
// string to it), and returns them.
func (r *receiver) start(ctx context.Context, publication, dsn string) ([]string, error) {
	sub, err := subscribed(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("read the subscriptions of %s: %w", r.node, err)
	}
	args := pluginArgs(PluginOptions(publication, serverMajor(r.conn), sub))
	if err := pglogrepl.StartReplication(ctx, r.conn, r.slot, 0, pglogrepl.StartReplicationOptions{PluginArgs: args}); err != nil {
		return nil, fmt.Errorf("start replication from slot %q on %s: %w", r.slot, r.node, err)
	}
	return args, nil
}

// receive waits until due for the next message. The deadline is set on the
// socket (not a context: pgconn would watch a context on every call).
func (r *receiver) receive(ctx context.Context, due time.Time) (received, error) {
	if r.woken.Swap(false) {
		r.deadline = time.Time{}
		return received{timeout: true}, nil
	}
	if !due.Equal(r.deadline) {
		_ = r.conn.Conn().SetReadDeadline(due)
		r.deadline = due
		if r.woken.Load() { // woken before this deadline replaced its own
			return received{timeout: true}, nil
		}
	}
	for {
		msg, err := r.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return received{}, ctx.Err()
			}
			if pgconn.Timeout(err) {
				return received{timeout: true}, nil
			}
			return received{}, fmt.Errorf("receive from %s: %w", r.node, err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			return received{}, fmt.Errorf("replication error from %s: %w", r.node, pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return received{}, fmt.Errorf("keepalive from %s: %w", r.node, err)
				}
				return received{keepalive: true, serverEnd: ka.ServerWALEnd, replyRequested: ka.ReplyRequested}, nil
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return received{}, fmt.Errorf("WAL data from %s: %w", r.node, err)
				}
				return received{data: xld.WALData, walStart: xld.WALStart}, nil
			}
		}
	}
}

// sendStatus confirms lsn to the source: written, flushed and applied.
func (r *receiver) sendStatus(ctx context.Context, lsn pglogrepl.LSN) error {
	r.confirmed = lsn
	return pglogrepl.SendStandbyStatusUpdate(ctx, r.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn, WALFlushPosition: lsn, WALApplyPosition: lsn, ClientTime: time.Now()})
}
