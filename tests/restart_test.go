package tests

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reshard/reshard/sync/cutover"
)

// TestRestartInEveryState runs one RESHARD through a real `reshard serve`
// and restarts serve in every state of a migration — copying, streaming,
// mid-cutover before and after its commit point, reverse_streaming,
// mid-rollback before and after its commit point, after a rollback — once
// with SIGTERM and once with SIGKILL. After each restart the task keeps its
// id and continues by itself; writes made on the side that takes them
// reach the other, and the two sides are compared exactly (counts, row
// hashes, every row, placement); no slot is left inactive on any server.
func TestRestartInEveryState(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(strings.ToLower(strings.TrimPrefix(sig.String(), "SIG")), func(t *testing.T) {
			name := fmt.Sprintf("rs%d", int(sig))
			e := newCopyEnv(t, name, 1, 2, "cutover_timeout = 30000")
			e.src[0].exec(t, copySchema)
			loadData(t, e.src[0], 0, 1, 6000)
			e.src[0].exec(t, `SELECT setval('customers_id_seq', 6000); SELECT setval('orders_id_seq', 18000)`)
			restartScenario(t, newServeEnv(t, e), sig)
		})
	}
}

func restartScenario(t *testing.T, s *serveEnv, sig syscall.Signal) {
	src := s.src[0]
	logf := func(format string, args ...any) {
		t.Logf("%s: "+format, append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
	// continued checks what every restart must give: the same task, in
	// state want by itself, both sides equal, no inactive slot.
	continued := func(what, want string) {
		t.Helper()
		s.waitState(t, want, 2*time.Minute)
		s.waitSame(t, 2*time.Minute)
		slots := s.waitNoInactiveSlot(t, time.Minute)
		logf("after a restart %s: task %s %s, sides equal, slots %v", what, s.id, want, slots)
	}
	writeSource := func(tag string) {
		src.exec(t, fmt.Sprintf(`INSERT INTO customers (name, region) SELECT '%[1]s' || g, 'eu' FROM generate_series(1, 40) g;
			UPDATE orders SET total = total + 1, note = '%[1]s' WHERE id %% 11 = 0;
			DELETE FROM notes WHERE customer_id = (SELECT min(customer_id) FROM notes);
			UPDATE countries SET name = name || '.' WHERE code = 'NL'`, tag))
	}
	writeShards := func(tag string) {
		for k, d := range s.dst {
			d.exec(t, fmt.Sprintf(`INSERT INTO customers (name, region) SELECT '%[1]s-%[2]d-' || g, 'us' FROM generate_series(1, 40) g;
				UPDATE orders SET note = '%[1]s' WHERE id %% 13 = %[2]d`, tag, k))
		}
	}

	// The copy is slowed down on the shards so that a restart lands in it.
	for _, d := range s.dst {
		d.exec(t, `CREATE FUNCTION slow_copy() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN IF NEW.id % 2 = 0 THEN PERFORM pg_sleep(0.001); END IF; RETURN NEW; END $$`)
	}
	s.start(t, "")
	// PRE first (RESHARD's own PRE then finds everything there), so that
	// the trigger is in place before the copy starts.
	s.run(t, "SCHEMA_SYNC PRE src dst all_tables")
	for _, d := range s.dst {
		d.exec(t, `CREATE TRIGGER slow_copy BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION slow_copy();
			ALTER TABLE orders ENABLE ALWAYS TRIGGER slow_copy`)
	}
	s.id = s.run(t, "RESHARD src dst all_tables")[0][0]
	s.waitState(t, "copying", time.Minute)
	for deadline := time.Now().Add(time.Minute); ; {
		copying := false
		for _, r := range s.run(t, "SHOW TABLE_COPIES") {
			if r[1] == "orders" && r[2] == "copying" && r[3] != "0" {
				copying = true
			}
		}
		if copying {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the copy copies no orders: %v", s.run(t, "SHOW TABLE_COPIES"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if state, _ := s.task(t); state != "copying" {
		t.Fatalf("the copy ended before the restart (%s): make it slower", state)
	}
	s.restart(t, sig, "")
	if st, _ := s.task(t); st == "stopped" || st == "failed" {
		t.Fatalf("after a restart in copying the task is %s", st)
	}
	s.waitState(t, "streaming", 3*time.Minute)
	for _, d := range s.dst {
		d.exec(t, `DROP TRIGGER slow_copy ON orders`)
	}
	continued("in copying", "streaming")

	// Streaming.
	writeSource("s1")
	s.restart(t, sig, cutover.StepReverseSlots)
	writeSource("s2")
	continued("while streaming", "streaming")

	// Mid-cutover, before its commit point: undone, the source keeps the
	// writes, the reverse slots are gone.
	pending := s.cutoverAsync(t)
	s.waitStep(t, cutover.StepReverseSlots)
	s.restart(t, sig, cutover.StepSourceClosed)
	<-pending
	writeSource("c1")
	continued("mid-cutover before the source was closed", "streaming")
	if _, msg := s.task(t); sig == syscall.SIGKILL && !strings.Contains(msg, "undone") {
		t.Fatalf("SHOW TASKS does not say the interrupted cutover was undone: %q", msg)
	}

	// Mid-cutover, past its commit point: completed.
	pending = s.cutoverAsync(t)
	s.waitStep(t, cutover.StepSourceClosed)
	s.restart(t, sig, "")
	<-pending
	s.waitState(t, "reverse_streaming", 2*time.Minute)
	if err := src.inst.Exec(t.Context(), src.db, `INSERT INTO countries VALUES ('QQ', 'on the old database')`); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("the old database takes writes after the cutover: %v", err)
	}
	writeShards("r1")
	continued("mid-cutover after the source was closed", "reverse_streaming")

	// Reverse streaming.
	s.restart(t, sig, cutover.RollbackForwardSlots)
	writeShards("r2")
	continued("while reverse streaming", "reverse_streaming")

	// Mid-rollback, before its commit point: undone, the shards keep the
	// writes.
	pending = s.cutoverAsync(t)
	s.waitStep(t, cutover.RollbackForwardSlots)
	s.restart(t, sig, cutover.RollbackShardsClosed)
	<-pending
	writeShards("r3")
	continued("mid-rollback before the shards were closed", "reverse_streaming")

	// Mid-rollback, past its commit point: completed.
	pending = s.cutoverAsync(t)
	s.waitStep(t, cutover.RollbackShardsClosed)
	s.restart(t, sig, "")
	<-pending
	s.waitState(t, "streaming", 2*time.Minute)
	if err := s.dst[1].inst.Exec(t.Context(), s.dst[1].db, `INSERT INTO countries VALUES ('QQ', 'on a shard')`); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("a shard takes writes after the rollback: %v", err)
	}
	writeSource("f1")
	continued("mid-rollback after the shards were closed", "streaming")

	// After a rollback: the second round's forward stream.
	s.restart(t, sig, "")
	writeSource("f2")
	continued("after a rollback", "streaming")

	// A cutover after all that works, and the migration finishes cleanly.
	if state := s.cutover(t); state != "reverse_streaming" {
		t.Fatalf("CUTOVER answered %s", state)
	}
	writeShards("r4")
	s.waitSame(t, 2*time.Minute)
	rows := s.run(t, "STOP_TASK "+s.id)
	if len(rows) != 1 || rows[0][1] != "done" {
		t.Fatalf("STOP_TASK after the cutover answered %v", rows)
	}
	if left := s.slots(t); len(left) != 0 {
		t.Fatalf("slots left after the migration finished: %v", left)
	}
	for _, n := range s.nodes() {
		if c := n.one(t, `SELECT count(*) FROM pg_namespace WHERE nspname = 'reshard'`); c != "0" {
			t.Fatalf("%s keeps reshard's state", n.db)
		}
	}
	checkNoOrigins(t, s.copyEnv, s.reshardSlotStem(t))
}

// reshardSlotStem is the slot name RESHARD uses for the env's route.
func (e *copyEnv) reshardSlotStem(t *testing.T) string {
	t.Helper()
	return e.exec.ReshardSlot(e.route())
}

// checkNoOrigins fails if a replication origin named after stem is left on
// any server of the env.
func checkNoOrigins(t *testing.T, e *copyEnv, stem string) {
	t.Helper()
	for _, n := range e.nodes() {
		if c := n.one(t, fmt.Sprintf(`SELECT count(*) FROM pg_replication_origin WHERE strpos(roname, '%s') > 0`, stem)); c != "0" {
			t.Fatalf("%s keeps %s replication origins of the migration: %v", n.db, c, query(t, n.inst, n.db, "SELECT roname FROM pg_replication_origin"))
		}
	}
}

// TestStoppedAfterRollbackContinues is the case operators reported: a
// migration rolled back, stopped, and serve restarted. SHOW TASKS keeps
// the task's id and names the command that continues it; that command
// continues the same task in its phase (the PRE phase is never run again,
// against shards the rollback made read-only), from the round's slot; the
// stopped migration's slot is named as inactive (SHOW TASKS, SHOW
// REPLICATION_SLOTS, /metrics) while nothing reads it. STOP_TASK on a failed
// task says it stopped nothing; `reshard abort` from the CLI removes
// everything.
func TestStoppedAfterRollbackContinues(t *testing.T) {
	metricsPort := freePort(t)
	e := newCopyEnv(t, "rbstop", 1, 2, fmt.Sprintf("openmetrics_port = %d", metricsPort))
	src := e.src[0]
	src.exec(t, copySchema)
	loadData(t, src, 0, 1, 500)
	s := newServeEnv(t, e)
	s.start(t, "")
	s.id = s.run(t, "RESHARD src dst all_tables")[0][0]
	s.waitState(t, "streaming", 2*time.Minute)
	if st := s.cutover(t); st != "reverse_streaming" {
		t.Fatalf("CUTOVER answered %s", st)
	}
	if st := s.cutover(t); st != "streaming" {
		t.Fatalf("rollback answered %s", st)
	}
	stem := s.reshardSlotStem(t)
	rows := s.run(t, "STOP_TASK "+s.id)
	if len(rows) != 1 || rows[0][1] != "stopped" || !strings.Contains(rows[0][2], "RESHARD src dst all_tables continues it") || !strings.Contains(rows[0][2], stem+"_f1") {
		t.Fatalf("STOP_TASK answered %v", rows)
	}
	// Nothing reads the round's slot now: named, counted, listed.
	for deadline := time.Now().Add(time.Minute); ; {
		_, msg := s.task(t)
		if strings.Contains(msg, "slot "+stem+"_f1 on ") && strings.Contains(msg, "is inactive and retains") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SHOW TASKS does not name the inactive slot: %q", msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
	found := false
	for _, r := range s.run(t, "SHOW REPLICATION_SLOTS") {
		if r[3] == stem+"_f1" && r[12] == "false" && r[11] != "" {
			found = true
		}
	}
	if !found {
		t.Fatalf("SHOW REPLICATION_SLOTS does not list the inactive slot: %v", s.run(t, "SHOW REPLICATION_SLOTS"))
	}
	if _, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort), "text/plain;version=0.0.4"); !strings.Contains(body, "reshard_inactive_slots 1") || !strings.Contains(body, `slot="`+stem+`_f1"`) {
		t.Fatalf("/metrics does not count the inactive slot:\n%s", grepLines(body, "inactive"))
	}
	if !strings.Contains(s.proc.Output(), "a replication slot of reshard's is inactive") {
		t.Fatal("the inactive slot was not logged")
	}

	s.restart(t, syscall.SIGTERM, "")
	state, msg := s.task(t)
	if state != "stopped" || !strings.Contains(msg, "RESHARD src dst all_tables continues it") {
		t.Fatalf("after a restart SHOW TASKS lists %s %q", state, msg)
	}
	// The command SHOW TASKS names continues the same task, streaming.
	if again := s.run(t, "RESHARD src dst all_tables")[0][0]; again != s.id {
		t.Fatalf("RESHARD answered task %s, want the stopped task %s continued", again, s.id)
	}
	s.waitState(t, "streaming", time.Minute)
	if strings.Contains(s.proc.Output(), "SCHEMA_SYNC PRE") || strings.Contains(s.proc.Output(), "25006") {
		t.Fatalf("continuing ran PRE or hit a read-only shard:\n%s", lastOutput(s.proc.Output(), 40))
	}
	src.exec(t, `INSERT INTO customers (id, name) SELECT 9000 + g, 'continued' FROM generate_series(1, 30) g`)
	s.waitSame(t, time.Minute)
	if slots := s.waitNoInactiveSlot(t, time.Minute); len(slots) != 1 || !strings.HasSuffix(slots[0], stem+"_f1") {
		t.Fatalf("slots after continuing: %v", slots)
	}
	// A RESHARD of the running migration is refused, not run twice.
	if _, err := s.admin.Exec(t.Context(), "RESHARD src dst all_tables"); err == nil || !strings.Contains(err.Error(), "55006") {
		t.Fatalf("a second RESHARD of a running migration: %v", err)
	}

	// A failed task: STOP_TASK says it stopped nothing and what is kept.
	// (The shard is read-only for the application since the rollback.)
	e.dst[1].exec(t, `BEGIN READ WRITE; ALTER TABLE countries ADD CONSTRAINT short_names CHECK (length(name) < 20); COMMIT`)
	src.exec(t, `UPDATE countries SET name = repeat('x', 30) WHERE code = 'NL'`)
	s.waitState(t, "failed", time.Minute)
	rows = s.run(t, "STOP_TASK "+s.id)
	if len(rows) != 1 || rows[0][1] != "failed" || !strings.Contains(rows[0][2], "had already failed") || !strings.Contains(rows[0][2], "nothing was stopped") ||
		!strings.Contains(rows[0][2], "ABORT_TASK "+s.id) {
		t.Fatalf("STOP_TASK on a failed task answered %v", rows)
	}

	// The CLI's abort ends it for good.
	out, err := exec.Command(s.bin, "--config", e.cfgPath, "--users", e.usersPath, "abort", "--task", s.id).CombinedOutput()
	if err != nil || !strings.Contains(string(out), stem+"_f1") || !strings.Contains(string(out), "schema") {
		t.Fatalf("reshard abort: %v\n%s", err, out)
	}
	if state, msg := s.task(t); state != "aborted" {
		t.Fatalf("after reshard abort: %s %s", state, msg)
	}
	if left := s.slots(t); len(left) != 0 {
		t.Fatalf("slots left after abort: %v", left)
	}
	checkNoOrigins(t, e, stem)
	for _, n := range e.nodes() {
		if c := n.one(t, `SELECT count(*) FROM pg_namespace WHERE nspname = 'reshard'`); c != "0" {
			t.Fatalf("%s keeps reshard's state after abort", n.db)
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
