package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/sync/stream"
)

// TestPluginOptions: the pgoutput options the stream asks for are
// accepted by the source (protocol 3 on 15, 4 on 16+), and on 16+ a
// change applied under a replication origin (as reshard's appliers apply
// every change) is not sent, while the application's own changes are; on
// 15, which has no such option, both are.
func TestPluginOptions(t *testing.T) {
	for _, v := range []int{15, 17} {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			inst := cluster.Instances[0]
			if v != 15 {
				inst = startVersion(t, v, 1, nil).Instances[0]
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db := fmt.Sprintf("plugopt%d", v)
			if err := inst.CreateDatabase(ctx, db); err != nil {
				t.Fatal(err)
			}
			n := node{inst, db}
			n.exec(t, `CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION "pub ""x""" FOR TABLE t`)
			n.exec(t, `SELECT pg_create_logical_replication_slot('plugopt', 'pgoutput')`)
			defer n.exec(t, `SELECT pg_drop_replication_slot('plugopt')`)
			// A change applied as reshard's appliers do: under an origin.
			// (synchronous_commit on: the peek reads flushed WAL only.)
			n.exec(t, `SET synchronous_commit = on; SELECT pg_replication_origin_create('reshard_plugopt');
				SELECT pg_replication_origin_session_setup('reshard_plugopt');
				INSERT INTO t VALUES (1);
				SELECT pg_replication_origin_session_reset()`)
			n.exec(t, `SET synchronous_commit = on; INSERT INTO t VALUES (2)`) // the application's
			opts := stream.PluginOptions(`pub "x"`, v, false)
			var flat []string
			for _, o := range opts {
				flat = append(flat, o[0], o[1])
			}
			want := map[int]string{15: "3", 17: "4"}[v]
			if opts[0] != [2]string{"proto_version", want} {
				t.Fatalf("PostgreSQL %d: %v, want proto_version %s first", v, opts, want)
			}
			conn, err := inst.Connect(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			// pgoutput's insert messages ('I') and the id each carries.
			rows, err := conn.Query(ctx, `SELECT encode(data, 'escape')
				FROM pg_logical_slot_peek_binary_changes('plugopt', NULL, NULL, VARIADIC $1::text[])`, flat)
			if err != nil {
				t.Fatalf("PostgreSQL %d refuses the options %v: %v", v, opts, err)
			}
			var got []string
			for rows.Next() {
				var last string
				if err := rows.Scan(&last); err != nil {
					t.Fatal(err)
				}
				if strings.HasPrefix(last, "I") { // an insert: its last byte is the id
					got = append(got, last[len(last)-1:])
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			wantIDs := map[int][]string{15: {"1", "2"}, 17: {"2"}}[v]
			if fmt.Sprint(got) != fmt.Sprint(wantIDs) {
				t.Fatalf("PostgreSQL %d sent inserts of ids %v, want %v (origin-applied changes left out on 16+)", v, got, wantIDs)
			}
		})
	}
}
