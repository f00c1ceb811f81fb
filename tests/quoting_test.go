package tests

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/commands"
)

// Hostile identifiers: quotes, spaces, semicolons, dots, upper case and
// unicode. Written here as SQL (quoted) identifiers.
const (
	qSchema = `"Sch ""é"";x"`
	qTable  = qSchema + `."Tab.le ;"`
	qChild  = qSchema + `."Child ""T"" ü"`
	qOmni   = qSchema + `."Omni; DROP TABLE x"`
	qKey    = `"Kéy ""ID"";."`
	qCol    = `"Col ""q"""`
)

// quotingSchema is the source schema of TestHostileIdentifiers: a sharded
// table with a sharding column named like the others, a child sharded by the
// same column with a foreign key and a serial, an omni table, and the
// countries table waitCaughtUp writes its markers to.
const quotingSchema = `
CREATE SCHEMA ` + qSchema + `;
CREATE TABLE ` + qTable + ` (` + qKey + ` bigint PRIMARY KEY, ` + qCol + ` text, "UPPER Ünï" int NOT NULL DEFAULT 0);
CREATE INDEX "Idx ""c"";" ON ` + qTable + ` (` + qCol + `);
CREATE TABLE ` + qChild + ` ("I d" bigserial PRIMARY KEY, ` + qKey + ` bigint REFERENCES ` + qTable + `, "v;al" text);
CREATE TABLE ` + qOmni + ` ("c.ode" text PRIMARY KEY, ` + qCol + ` text);
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
ALTER TABLE ` + qTable + ` REPLICA IDENTITY FULL;
ALTER TABLE ` + qChild + ` REPLICA IDENTITY FULL;
INSERT INTO ` + qTable + ` SELECT g, 'row "' || g || '"; ''x''', g % 7 FROM generate_series(1, 2000) g;
INSERT INTO ` + qChild + ` (` + qKey + `, "v;al") SELECT 1 + g % 2000, 'child ' || g FROM generate_series(1, 3000) g;
INSERT INTO ` + qOmni + ` VALUES ('a.b', 'omni "1"'), ('c;d', 'omni 2'), ('é', NULL);
INSERT INTO countries VALUES ('NL', 'Netherlands');
CREATE PUBLICATION "Pub ""é""; x'y" FOR ALL TABLES;
`

// quotingSharding replaces newCopyEnv's sharding rules: the table named
// with its schema, and every table with the hostile sharding column.
const quotingSharding = `[[sharded_tables]]
database = "dst"
schema = "Sch \"é\";x"
name = "Tab.le ;"
column = "Kéy \"ID\";."

[[sharded_tables]]
database = "dst"
column = "Kéy \"ID\";."
`

// TestHostileIdentifiers carries schema, table, column, index and sequence
// names with quotes, spaces, semicolons, dots, upper case and unicode
// through RESHARD (schema sync, copy, stream of inserts, updates — moving
// rows between shards — and deletes), VERIFY and CUTOVER, and compares the
// shards with the source row by row.
func TestHostileIdentifiers(t *testing.T) {
	e := newCopyEnv(t, "quot", 1, 2, "")
	cfg, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(cfg), "[[sharded_tables]]")
	if err := os.WriteFile(e.cfgPath, []byte(string(cfg[:i])+quotingSharding), 0o600); err != nil {
		t.Fatal(err)
	}
	e.load(t)
	e.publication = `Pub "é"; x'y`
	src := e.src[0]
	src.exec(t, quotingSchema)

	id := e.reshardStreaming(t)
	// Changes after the copy: inserts, updates of plain columns and of the
	// sharding key (the row moves to the other shard), deletes.
	src.exec(t, `INSERT INTO `+qTable+` SELECT g, 'late "'||g||'"', 1 FROM generate_series(3001, 3100) g;
		UPDATE `+qTable+` SET `+qCol+` = 'upd; "'||`+qKey+`||'"' WHERE `+qKey+` % 10 = 3;
		UPDATE `+qTable+` SET `+qKey+` = `+qKey+` + 10000 WHERE `+qKey+` BETWEEN 3051 AND 3100;
		DELETE FROM `+qChild+` WHERE `+qKey+` % 10 = 4;
		DELETE FROM `+qTable+` WHERE `+qKey+` % 10 = 4;
		INSERT INTO `+qChild+` (`+qKey+`, "v;al") SELECT g, 'late child' FROM generate_series(3001, 3050) g WHERE g % 10 <> 4;
		UPDATE `+qChild+` SET "v;al" = 'moved', `+qKey+` = 3001 WHERE "I d" % 50 = 1;
		UPDATE `+qOmni+` SET `+qCol+` = 'changed "x"' WHERE "c.ode" = 'a.b';
		DELETE FROM `+qOmni+` WHERE "c.ode" = 'c;d';`)
	e.waitCaughtUp(t, 2*time.Minute)
	e.compareQuoted(t, map[string]bool{qTable: true, qChild: true, qOmni: false})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := e.exec.Execute(ctx, commands.Verify{Route: e.route(), Foreground: true})
	if err != nil {
		t.Fatalf("VERIFY: %v", err)
	}
	seen := map[string]bool{}
	for _, r := range res.Rows {
		seen[r[2].(string)] = true
		if r[3] != "match" || !verifyRowsAgree(r) {
			t.Fatalf("VERIFY %s.%s: %v", r[1], r[2], r)
		}
	}
	for _, table := range []string{"Tab.le ;", `Child "T" ü`, "Omni; DROP TABLE x"} {
		if !seen[table] {
			t.Fatalf("VERIFY did not check %q: %v", table, res.Rows)
		}
	}

	// CUTOVER: sequences interleaved, a write on a shard reaches the source.
	res, err = e.exec.Execute(ctx, commands.Cutover{Task: id})
	if err != nil {
		t.Fatalf("CUTOVER: %v", err)
	}
	if res.Rows[0][1] != "reverse_streaming" {
		t.Fatalf("CUTOVER answered %v", res.Rows)
	}
	for k, d := range e.dst {
		if inc := d.one(t, `SELECT increment_by FROM pg_sequences WHERE sequencename = 'Child "T" ü_I d_seq'`); inc != "2" {
			t.Fatalf("shard %d: the child's sequence increments by %s after CUTOVER, want 2", k, inc)
		}
	}
	e.dst[1].exec(t, `INSERT INTO `+qChild+` (`+qKey+`, "v;al") VALUES (3002, 'from shard 1')`)
	e.dst[0].exec(t, `UPDATE `+qOmni+` SET `+qCol+` = 'from shard 0' WHERE "c.ode" = 'é'`)
	deadline := time.Now().Add(time.Minute)
	for src.one(t, `SELECT count(*) FROM `+qChild+` WHERE "v;al" = 'from shard 1'`) != "1" ||
		src.one(t, `SELECT `+qCol+` FROM `+qOmni+` WHERE "c.ode" = 'é'`) != "from shard 0" {
		if time.Now().After(deadline) {
			state, msg := e.taskState(t)
			t.Fatalf("shard writes did not reach the source (task %s: %s)", state, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := e.exec.Execute(ctx, commands.StopTask{Task: id}); err != nil {
		t.Fatalf("STOP_TASK (finish): %v", err)
	}
}

// compareQuoted checks that the shards hold exactly the source's rows:
// sharded tables split (their union equals the source), omni tables whole
// on every shard.
func (e *copyEnv) compareQuoted(t *testing.T, tables map[string]bool) {
	t.Helper()
	for table, sharded := range tables {
		q := fmt.Sprintf("SELECT x::text FROM ONLY %s x", table)
		want := query(t, e.src[0].inst, e.src[0].db, q)
		if len(want) == 0 {
			t.Fatalf("%s: no rows on the source", table)
		}
		var union []string
		for k, d := range e.dst {
			got := query(t, d.inst, d.db, q)
			if !sharded {
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Fatalf("omni %s on shard %d differs:\n%s", table, k, firstLines(diff(want, got), 10))
				}
				continue
			}
			if len(got) == 0 || len(got) == len(want) {
				t.Fatalf("%s: shard %d holds %d of %d rows: not split", table, k, len(got), len(want))
			}
			union = append(union, got...)
		}
		if sharded {
			sortStrings(union)
			if strings.Join(union, "\n") != strings.Join(want, "\n") {
				t.Fatalf("%s: shards differ from the source:\n%s", table, firstLines(diff(want, union), 10))
			}
		}
	}
}
