// Command record writes the pgoutput fixtures of the assembler's unit
// tests: it starts a throwaway PostgreSQL 15 (tests/pgtest), runs each
// scenario on it, reads what pgoutput sends for it through a replication
// slot (protocol 2, streaming on, as the stream asks), and writes the
// messages to testdata/pgoutput/<scenario>.bin. Run it from sync/stream:
//
//	go generate ./sync/stream   (go run ./testdata/record)
//
// File format: per message, its WAL start (8 bytes, big endian), its length
// (4 bytes) and its bytes.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/reshard/reshard/tests/pgtest"
)

// scenario is SQL run on the source while a slot records it: steps[i]
// runs on connection i%2, in turn, so that two transactions interleave,
// and what it produced is read before the next step.
type scenario struct {
	name  string
	setup string
	steps []string
}

var scenarios = []scenario{
	{
		name:  "begin_commit",
		setup: `CREATE TABLE t (id int PRIMARY KEY, v text, big text)`,
		steps: []string{`
			BEGIN;
			INSERT INTO t VALUES (1, 'one', NULL), (2, 'two', repeat('x', 3000));
			UPDATE t SET v = 'uno' WHERE id = 1;
			DELETE FROM t WHERE id = 2;
			COMMIT;
			INSERT INTO t VALUES (3, 'three', NULL);`},
	},
	{
		// A large transaction streamed while in progress, with a small one
		// committed between two of its stream blocks.
		name:  "streamed_commit",
		setup: `CREATE TABLE t (id int PRIMARY KEY, v text)`,
		steps: []string{
			`BEGIN; INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1200) g;`,
			`INSERT INTO t VALUES (100000, 'small, committed first')`,
			`INSERT INTO t SELECT g, 'second block' FROM generate_series(1201, 1800) g; COMMIT;`,
		},
	},
	{
		// A large transaction streamed while in progress, then rolled back;
		// a small one committed meanwhile.
		name:  "streamed_abort",
		setup: `CREATE TABLE t (id int PRIMARY KEY, v text)`,
		steps: []string{
			`BEGIN; INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1200) g;`,
			`INSERT INTO t VALUES (100000, 'kept')`,
			`ROLLBACK`,
		},
	},
	{
		// Subtransactions of a streamed transaction: one rolled back, one
		// released.
		name:  "streamed_subabort",
		setup: `CREATE TABLE t (id int PRIMARY KEY, v text)`,
		steps: []string{`
			BEGIN;
			INSERT INTO t SELECT g, 'before' FROM generate_series(1, 800) g;
			SAVEPOINT a;
			INSERT INTO t SELECT g, 'rolled back' FROM generate_series(801, 1600) g;
			ROLLBACK TO a;
			SAVEPOINT b;
			INSERT INTO t SELECT g, 'released' FROM generate_series(1601, 2400) g;
			RELEASE b;
			COMMIT;`},
	},
	{
		// A table changing between transactions (a second Relation
		// message, with a new column), then a TRUNCATE of two tables with
		// RESTART IDENTITY and CASCADE.
		name: "relation_change",
		setup: `CREATE TABLE t (id int PRIMARY KEY, v text);
			CREATE TABLE u (id serial PRIMARY KEY, t_id int REFERENCES t(id));
			ALTER TABLE u REPLICA IDENTITY FULL`,
		steps: []string{
			`INSERT INTO t VALUES (1, 'a'); INSERT INTO u (t_id) VALUES (1)`,
			`ALTER TABLE t ADD COLUMN w int`,
			`INSERT INTO t VALUES (2, 'b', 7)`,
			`UPDATE u SET t_id = 2`,
			`TRUNCATE t, u RESTART IDENTITY CASCADE`,
		},
	},
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "record:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cl, err := pgtest.Start(ctx, 1, pgtest.Options{Settings: map[string]string{"logical_decoding_work_mem": "64kB"}})
	if err != nil {
		return err
	}
	defer cl.Stop()
	inst := cl.Instances[0]
	out := filepath.Join("testdata", "pgoutput")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, sc := range scenarios {
		msgs, err := record(ctx, inst, sc)
		if err != nil {
			return fmt.Errorf("%s: %w", sc.name, err)
		}
		var b bytes.Buffer
		for _, m := range msgs {
			binary.Write(&b, binary.BigEndian, uint64(m.start))
			binary.Write(&b, binary.BigEndian, uint32(len(m.data)))
			b.Write(m.data)
		}
		path := filepath.Join(out, sc.name+".bin")
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			return err
		}
		fmt.Printf("%s: %d messages (%d bytes)\n", path, len(msgs), b.Len())
	}
	return nil
}

type message struct {
	start pglogrepl.LSN
	data  []byte
}

func record(ctx context.Context, inst *pgtest.Instance, sc scenario) ([]message, error) {
	db := sc.name
	if err := inst.CreateDatabase(ctx, db); err != nil {
		return nil, err
	}
	if err := inst.Exec(ctx, db, sc.setup+"; CREATE PUBLICATION pub FOR ALL TABLES"); err != nil {
		return nil, err
	}
	repl, err := pgconn.Connect(ctx, inst.DSN(db)+"&replication=database")
	if err != nil {
		return nil, err
	}
	defer repl.Close(context.Background())
	if _, err := pglogrepl.CreateReplicationSlot(ctx, repl, "rec_"+sc.name, "pgoutput", pglogrepl.CreateReplicationSlotOptions{}); err != nil {
		return nil, err
	}
	args := []string{"proto_version '2'", "publication_names 'pub'", "streaming 'true'"}
	if err := pglogrepl.StartReplication(ctx, repl, "rec_"+sc.name, 0, pglogrepl.StartReplicationOptions{PluginArgs: args}); err != nil {
		return nil, err
	}
	// conns[0] and [1] run the steps; conns[2] flushes the WAL after each.
	var conns [3]*pgconn.PgConn
	for i := range conns {
		c, err := pgconn.Connect(ctx, inst.DSN(db))
		if err != nil {
			return nil, err
		}
		defer c.Close(context.Background())
		conns[i] = c
	}
	var msgs []message
	open := 0 // transactions begun and stream blocks started, not ended
	for i, step := range sc.steps {
		if _, err := conns[i%2].Exec(ctx, step).ReadAll(); err != nil {
			return nil, fmt.Errorf("step %d: %w", i, err)
		}
		// A transaction whose commit flushes the WAL written so far, an
		// open transaction's too (pgoutput does not send it: logical
		// messages are off, and it is empty).
		other := conns[2]
		if _, err := other.Exec(ctx, "SET synchronous_commit = on").ReadAll(); err != nil {
			return nil, err
		}
		if _, err := other.Exec(ctx, "SELECT pg_logical_emit_message(true, 'record', 'flush')").ReadAll(); err != nil {
			return nil, err
		}
		res, err := other.Exec(ctx, "SELECT pg_current_wal_insert_lsn()::text").ReadAll()
		if err != nil {
			return nil, err
		}
		end, err := pglogrepl.ParseLSN(string(res[0].Rows[0][0]))
		if err != nil {
			return nil, err
		}
		// Read what the step produced (until the source has decoded past
		// it and sent it), so that a transaction still open is streamed
		// before the next step ends it.
		last := i == len(sc.steps)-1
		if msgs, err = drain(ctx, repl, end, msgs, &open, last); err != nil {
			return nil, fmt.Errorf("step %d: %w", i, err)
		}
	}
	return msgs, nil
}

// drain reads messages until a keepalive reports the source decoded past
// end (and, with closed, no transaction or stream block is open).
func drain(ctx context.Context, repl *pgconn.PgConn, end pglogrepl.LSN, msgs []message, open *int, closed bool) ([]message, error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		m, err := repl.ReceiveMessage(rctx)
		cancel()
		if pgconn.Timeout(err) {
			if err := pglogrepl.SendStandbyStatusUpdate(ctx, repl, pglogrepl.StandbyStatusUpdate{ReplyRequested: true}); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		cd, ok := m.(*pgproto3.CopyData)
		if !ok {
			if e, ok := m.(*pgproto3.ErrorResponse); ok {
				return nil, fmt.Errorf("%s", e.Message)
			}
			continue
		}
		switch cd.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
			if err != nil {
				return nil, err
			}
			if ka.ServerWALEnd >= end && (!closed || *open == 0) {
				return msgs, nil
			}
			if err := pglogrepl.SendStandbyStatusUpdate(ctx, repl, pglogrepl.StandbyStatusUpdate{ReplyRequested: !ka.ReplyRequested}); err != nil {
				return nil, err
			}
		case pglogrepl.XLogDataByteID:
			x, err := pglogrepl.ParseXLogData(cd.Data[1:])
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, message{start: x.WALStart, data: bytes.Clone(x.WALData)})
			switch x.WALData[0] {
			case 'B', 'S': // begin, stream start
				*open++
			case 'C', 'E': // commit, stream stop
				*open--
			}
		}
	}
}
