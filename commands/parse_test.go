package commands

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	r := Route{"prod", "prod_sharded", "all_tables"}
	cases := []struct {
		in   string
		want []Command
	}{
		{"SCHEMA_SYNC PRE prod prod_sharded all_tables;", []Command{SchemaSync{Phase: PhasePre, Route: r}}},
		{"schema_sync post PROD Prod_Sharded ALL_TABLES", []Command{SchemaSync{Phase: PhasePost, Route: r}}},
		{"SCHEMA_SYNC cutover prod prod_sharded all_tables", []Command{SchemaSync{Phase: PhaseCutover, Route: r}}},
		{"SCHEMA_SYNC POST_CUTOVER prod prod_sharded all_tables", []Command{SchemaSync{Phase: PhasePostCutover, Route: r}}},
		{`SCHEMA_SYNC PRE "Prod" "my ""db""" "all tables"`, []Command{SchemaSync{Phase: PhasePre, Route: Route{"Prod", `my "db"`, "all tables"}}}},
		{"COPY_DATA prod prod_sharded all_tables", []Command{CopyData{Route: r}}},
		{"COPY_DATA prod prod_sharded all_tables my_slot;", []Command{CopyData{Route: r, Slot: "my_slot"}}},
		{"REPLICATE prod prod_sharded all_tables my_slot", []Command{Replicate{Route: r, Slot: "my_slot"}}},
		{"RESHARD prod prod_sharded all_tables", []Command{Reshard{r}}},
		{"VERIFY prod prod_sharded all_tables", []Command{Verify{Route: r}}},
		{"CUTOVER 7", []Command{Cutover{"7"}}},
		{"STOP_TASK 12;", []Command{StopTask{"12"}}},
		{"stop_task abc", []Command{StopTask{"abc"}}},
		{"ABORT_TASK 3", []Command{AbortTask{Task: "3"}}},
		{"abort_task 3 with data;", []Command{AbortTask{Task: "3", WithData: true}}},
		{"SHOW TABLE_COPIES", []Command{Show{"table_copies"}}},
		{"show version; SHOW DATABASES;", []Command{Show{"version"}, Show{"databases"}}},
		{"-- comment only", []Command{Empty{}}},
		{"  /* c */ ; ; ", []Command{Empty{}}},
		{"/* lead */ SHOW /* mid */ TASKS -- trail", []Command{Show{"tasks"}}},
		{"SET extra_float_digits = 3", []Command{Set{"SET", "SET extra_float_digits = 3"}}},
		{"SET application_name = 'x;y'; SHOW CONFIG", []Command{Set{"SET", "SET application_name = 'x;y'"}, Show{"config"}}},
		{"BEGIN; COMMIT; ROLLBACK; START TRANSACTION; END; ABORT", []Command{Transaction{"BEGIN"}, Transaction{"COMMIT"}, Transaction{"ROLLBACK"}, Transaction{"START TRANSACTION"}, Transaction{"COMMIT"}, Transaction{"ROLLBACK"}}},
		{"SHOW server_version", []Command{Show{"server_version"}}},
		{"SHOW TRANSACTION ISOLATION LEVEL", []Command{Show{"transaction_isolation"}}},
		{"show time zone", []Command{Show{"timezone"}}},
	}
	for _, c := range cases {
		got, err := Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("Parse(%q) = %#v, want %#v", c.in, got, c.want)
		}
	}
}

// TestParseRoundTrip checks that String renders a command that parses back
// to the same value.
func TestParseRoundTrip(t *testing.T) {
	for _, in := range []string{
		`SCHEMA_SYNC PRE "Prod" "a b" x1`,
		`COPY_DATA a b c "Slot"`,
		`REPLICATE a b c d`,
		`RESHARD "select" b c`,
		`CUTOVER "Task 1"`,
		`ABORT_TASK 4 WITH DATA`,
		`ABORT_TASK "x y"`,
	} {
		cmds, err := Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(cmds[0].String())
		if err != nil {
			t.Fatalf("reparse %q: %v", cmds[0].String(), err)
		}
		if !reflect.DeepEqual(cmds, again) {
			t.Errorf("%q -> %q -> %#v", in, cmds[0].String(), again)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		in, code, msg, hint string
	}{
		{"SCHEMA_SYNC", "42601", "missing the phase", "SCHEMA_SYNC PRE|POST"},
		{"SCHEMA_SYNC PRE", "42601", "missing <source>", "SCHEMA_SYNC PRE|POST"},
		{"SCHEMA_SYNC PRE a", "42601", "missing <destination>", ""},
		{"SCHEMA_SYNC PRE a b", "42601", "missing <publication>", ""},
		{"SCHEMA_SYNC MIDDLE a b c", "42601", `unknown schema sync phase "MIDDLE"`, "PRE|POST|CUTOVER|POST_CUTOVER"},
		{"SCHEMA_SYNC 'PRE' a b c", "42601", "unknown schema sync phase", ""},
		{"SCHEMA_SYNC PRE a b c d", "42601", `at or near "d"`, ""},
		{"SCHEMA_SYNC PRE 'a' b c", "42601", "not a string constant", "double quotes"},
		{"SCHEMA_SYNC PRE a b 3", "42601", `expected <publication>`, ""},
		{"SCHEMA_SYNC PRE a.b c d", "42601", `at or near "."`, ""},
		{"COPY_DATA", "42601", "missing <source>", "COPY_DATA <source>"},
		{"COPY_DATA a b", "42601", "missing <publication>", ""},
		{"COPY_DATA a b c d e", "42601", `at or near "e"`, "[<replication slot>]"},
		{"COPY_DATA a b c $1", "42601", `at or near "$1"`, ""},
		{"REPLICATE a b c", "42601", "missing <replication slot>", "REPLICATE"},
		{"REPLICATE a b c d e", "42601", `at or near "e"`, ""},
		{"RESHARD a b", "42601", "missing <publication>", "RESHARD"},
		{"RESHARD a b c d", "42601", `at or near "d"`, ""},
		{"VERIFY a", "42601", "missing <destination>", "VERIFY"},
		{"VERIFY a b c, d", "42601", `at or near ","`, ""},
		{"CUTOVER", "42601", "missing the task id", "CUTOVER <task id>"},
		{"CUTOVER 1 2", "42601", `at or near "2"`, ""},
		{"CUTOVER 'x'", "42601", "expected a task id", ""},
		{"STOP_TASK", "42601", "missing the task id", "STOP_TASK"},
		{"STOP_TASK 1.5", "42601", `expected a task id`, ""},
		{"ABORT_TASK", "42601", "missing the task id", "ABORT_TASK <task id> [WITH DATA]"},
		{"ABORT_TASK 1 WITH", "42601", `at or near "WITH"`, "[WITH DATA]"},
		{"ABORT_TASK 1 WITH ROWS", "42601", `at or near "WITH"`, ""},
		{"ABORT_TASK 1 WITH DATA NOW", "42601", `at or near "NOW"`, ""},
		{"SHOW", "42601", "missing what to show", "SHOW SCHEMA_SYNC"},
		{"SHOW TASKS extra", "42601", `at or near "extra"`, ""},
		{"SHOW 'tasks'", "42601", "expected a view or setting name", ""},
		{"SELECT * FROM users", "42P01", `relation "users" does not exist`, "the admin database has no tables"},
		{"SELECT * FROM tasks", "42P01", `relation "tasks" does not exist`, "SHOW TASKS"},
		{"SELECT count(*) FROM pg_settings", "0A000", "pg_catalog.pg_settings", "SHOW CONFIG"},
		{"SELECT foo(1)", "42883", "function foo(integer) is not supported", "version()"},
		{"SELECT id", "42703", `column "id" does not exist`, "SHOW"},
		{"SELECT 1.5", "0A000", "numeric values are not supported", "cast to float8"},
		{"SELECT * FROM generate_series(1, 3)", "0A000", "subquery or a function", ""},
		{"SELECT 'a' + 1", "42883", "operator does not exist: text + integer", ""},
		{"SELECT 1 WHERE 1", "42804", "WHERE must be type boolean", ""},
		{"DROP TABLE users", "42601", `unknown admin command "DROP"`, ""},
		{"COPYDATA a b c", "42601", `unknown admin command "COPYDATA"`, ""},
		{"'SHOW' TASKS", "42601", "starts with a keyword", ""},
		{"42", "42601", "starts with a keyword", ""},
		{`SHOW "unterminated`, "42601", "unterminated", ""},
		{"SHOW TASKS; 'oops", "42601", "unterminated", ""},
		{"SHOW VERSION; BOGUS", "42601", `unknown admin command "BOGUS"`, ""},
		{`RESHARD "" b c`, "42601", "zero-length", ""},
		{"SHOW TASKS\x00", "22021", "0x00", ""},
		{"SHOW \xff\xfe", "22021", "invalid byte sequence", ""},
		{"SHOW " + strings.Repeat("x", MaxQueryBytes), "54000", "longer than", ""},
		{"/* unterminated comment", "42601", "unterminated", ""},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d malformed cases", len(cases))
	}
	for _, c := range cases {
		_, err := Parse(c.in)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("Parse(%.40q): want *Error, got %v", c.in, err)
			continue
		}
		if e.Code != c.code || !strings.Contains(e.Message, c.msg) || !strings.Contains(e.Hint, c.hint) {
			t.Errorf("Parse(%.40q) = [%s] %q hint %q; want [%s] containing %q, hint containing %q", c.in, e.Code, e.Message, e.Hint, c.code, c.msg, c.hint)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"SCHEMA_SYNC PRE prod prod_sharded all_tables;",
		"COPY_DATA a b c d", "REPLICATE a b c d", "RESHARD a b c", "VERIFY a b c",
		"CUTOVER 1", "STOP_TASK 1", "SHOW TASKS; SHOW VERSION", "-- ping", "SET x = 1",
		`SHOW "a""b"`, "SHOW 'x", "/* x */", "$$ x $$", "E'\\x00'", "U&\"a\"", "\"\"",
		"SHOW TASKS\x00", "\xff", ";;;", "BEGIN; COMMIT",
	} {
		f.Add(s)
	}
	f.Add(gdescQuery)
	f.Fuzz(func(t *testing.T, s string) {
		cmds, err := Parse(s)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code == "" || e.Message == "" {
				t.Fatalf("Parse(%q): error without SQLSTATE: %v", s, err)
			}
			return
		}
		if len(cmds) == 0 {
			t.Fatalf("Parse(%q): no command and no error", s)
		}
		for _, c := range cmds {
			// Every admin command renders to text that parses back to itself.
			switch c.(type) {
			case Set, Empty, Transaction:
				continue
			}
			again, err := Parse(c.String())
			if err != nil || len(again) != 1 || !reflect.DeepEqual(again[0], c) {
				t.Fatalf("Parse(%q) gave %#v; its String %q parses to %#v, %v", s, c, c.String(), again, err)
			}
		}
	})
}
