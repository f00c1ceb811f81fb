package tests

import (
	"context"
	"strings"
	"testing"
	"time"
)

// dbState lists what a command could create or drop on a database:
// replication slots, publications, schemas, tables and replication origins.
func dbState(t *testing.T, n node) string {
	t.Helper()
	return strings.Join(query(t, n.inst, n.db, `
SELECT 'slot ' || slot_name FROM pg_replication_slots
UNION ALL SELECT 'pub ' || pubname FROM pg_publication
UNION ALL SELECT 'schema ' || nspname FROM pg_namespace
UNION ALL SELECT 'table ' || oid::regclass::text FROM pg_class WHERE relkind IN ('r', 'p') AND relnamespace <> 'pg_catalog'::regnamespace
UNION ALL SELECT 'origin ' || roname FROM pg_replication_origin`), "\n")
}

// TestAdminHostileInput: very long names, unicode, odd bytes, commands with
// statements appended and unterminated quotes each get an ErrorResponse with
// a SQLSTATE and a bounded message; no task starts and nothing changes on
// the databases (the publication named in the commands exists, so a
// command that slipped through would start real work).
func TestAdminHostileInput(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := []node{{cluster.Instances[0], "postgres"}, {cluster.Instances[1], "postgres"}, {cluster.Instances[2], "postgres"}}
	nodes[0].exec(t, `CREATE TABLE x (user_id bigint PRIMARY KEY); CREATE PUBLICATION hostile_pub FOR TABLE x`)
	t.Cleanup(func() { nodes[0].exec(t, `DROP PUBLICATION hostile_pub; DROP TABLE x`) })
	before := make([]string, len(nodes))
	for i, n := range nodes {
		before[i] = dbState(t, n)
	}
	a := startAdmin(t, "")
	conn := connect(t, ctx, a.dsn(""))
	tasks := func() int {
		res, err := conn.PgConn().Exec(ctx, "SHOW TASKS").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		return len(res[0].Rows)
	}
	tasksBefore := tasks()

	long := strings.Repeat("x", 100000)
	const route = "prod prod_sharded hostile_pub"
	expectAdminErrors(t, ctx, conn, []adminErrorCase{
		// Very long names and queries.
		{"RESHARD " + long + " prod_sharded hostile_pub", "3D000", `"xxxxxxxx`},
		{`COPY_DATA prod prod_sharded "` + long + `"`, "42622", "100000 bytes, at most 63"},
		{"COPY_DATA " + route + " " + long, "42622", "at most 63"},
		{"REPLICATE " + route + ` "` + long + `"`, "42622", "at most 63"},
		{`CUTOVER "` + long + `"`, "42704", "does not exist"},
		{"SHOW " + long, "42704", "unrecognized"},
		{"SHOW TASKS " + long, "42601", "SHOW takes one name"},
		{"VERIFY " + route + " " + long, "42601", "at most 3 arguments"},
		{"SHOW '" + long, "42601", "unterminated quoted string"},
		{`COPY_DATA prod prod_sharded "` + long, "42601", "unterminated quoted identifier"},
		{strings.Repeat("SHOW TASKS; ", 20000) + "DROP TABLE x", "42601", `unknown admin command "DROP"`},
		// Unicode.
		{"RESHARD prød prod_sharded hostile_pub", "3D000", `"prød"`},
		{"RESHARD prod\u200b prod_sharded hostile_pub", "3D000", `"prod\u200b"`},
		{"ＲＥＳＨＡＲＤ " + route, "42601", "unknown admin command"},
		{"COPY_DATA " + route + ` "слот"`, "42602", `invalid replication slot name "слот"`},
		{"COPY_DATA " + route + ` "Slot_Upper"`, "42602", `"Slot_Upper"`},
		{"SHOW TASKS\u202e", "42704", `"tasks\u202e"`},
		{`COPY_DATA prod prod_sharded "` + strings.Repeat("é", 40) + `"`, "42622", "80 bytes"},
		// Odd bytes.
		{"SHOW TASKS\x01", "42601", "SHOW takes one name"},
		{"RESHARD prod\x7f prod_sharded hostile_pub", "42601", "syntax error"},
		{"SHOW \xff\xfe", "22021", "invalid byte sequence"},
		{"RESHARD " + route + " \xc3", "22021", "invalid byte sequence"},
		{"RESHARD prod prod_sharded E'\\x00'", "42601", ""},
		{"COPY_DATA " + route + " \t\r\n\f 'slot'", "42601", "not a string constant"},
		// Statements appended.
		{"COPY_DATA " + route + "; DROP TABLE x", "42601", `unknown admin command "DROP"`},
		{"COPY_DATA " + route + " my_slot; DROP TABLE x; --", "42601", `"DROP"`},
		{"RESHARD " + route + "; SELECT pg_sleep(1)", "42883", "function pg_sleep(integer) is not supported"},
		{"SELECT 1; DROP TABLE x", "42601", `unknown admin command "DROP"`},
		// SELECTs reach no PostgreSQL: catalogs reshard does not model are
		// refused, never read from a server.
		{"SELECT slot_name FROM pg_replication_slots", "0A000", "pg_catalog.pg_replication_slots"},
		{"SELECT usename, passwd FROM pg_catalog.pg_shadow", "0A000", "pg_catalog.pg_shadow"},
		{"SELECT current_setting('admin.password')", "42704", `unrecognized configuration parameter "admin.password"`},
		{"SELECT lo_import('/etc/passwd')", "42883", "lo_import(text)"},
		{"RESHARD " + route + " -- fine\n; DROP TABLE x", "42601", `"DROP"`},
		{"COPY_DATA " + route + "; COPY_DATA " + route + " s extra", "42601", `"extra"`},
		{"COPY_DATA " + route + " \"s\"; DROP TABLE x", "42601", `"DROP"`},
		{"COPY_DATA " + route + " s DROP TABLE x", "42601", "at most 4 arguments"},
		{"COPY_DATA " + route + " s\\; DROP TABLE x", "42601", ""},
		{"REPLICATE " + route + ` "s LOGICAL pgoutput"`, "42602", "invalid replication slot name"},
		{"COPY_DATA " + route + `'; DROP TABLE x; --'`, "42601", "not a string constant"},
		// Unterminated quotes and comments.
		{"COPY_DATA prod prod_sharded \"hostile_pub", "42601", "unterminated quoted identifier"},
		{"COPY_DATA " + route + " 'slot", "42601", "unterminated quoted string"},
		{"RESHARD " + route + " /* ", "42601", "unterminated /* comment"},
		{"VERIFY prod prod_sharded $$hostile_pub", "42601", "unterminated dollar-quoted string"},
		{"RESHARD " + route + `; SHOW "`, "42601", "unterminated"},
	})
	// A NUL ends the query string (the protocol's strings are NUL-terminated):
	// what follows it never runs. The simple protocol runs what precedes it;
	// the extended protocol's message is malformed then and the server
	// drops the connection.
	res, err := conn.PgConn().Exec(ctx, "SHOW TASKS\x00; DROP TABLE x").ReadAll()
	if err != nil || len(res) != 1 || res[0].CommandTag.String() != "SHOW" {
		t.Fatalf("SHOW TASKS<NUL>; DROP TABLE x: %d results, %v", len(res), err)
	}
	ext := connect(t, ctx, a.dsn(""))
	if _, err := ext.PgConn().ExecParams(ctx, "SHOW TASKS\x00; DROP TABLE x", nil, nil, nil, nil).Close(); err == nil {
		t.Fatal("a NUL inside an extended-protocol query was accepted")
	}
	if n := tasks(); n != tasksBefore {
		t.Fatalf("SHOW TASKS lists %d tasks after hostile input, %d before", n, tasksBefore)
	}
	for i, n := range nodes {
		if after := dbState(t, n); after != before[i] {
			t.Fatalf("instance %d changed after hostile input:\nbefore:\n%s\nafter:\n%s", i, before[i], after)
		}
	}
}
