package fault

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sync/cutover"
	"github.com/reshard/reshard/sync/migrate"
	"github.com/reshard/reshard/tests/testkit"
)

// serve is `reshard serve` for an env, driven through its admin server, so
// that it can be killed and started again in the middle of a cutover.
type serve struct {
	e *env
	p *testkit.Process
	// id is the migration's task id.
	id string
	// release is the file whose creation ends a pause (PauseUntilEnv).
	release string
	// cutOver is set once the migration has cut over: a rollback since
	// closes the shards.
	cutOver bool
}

// startServe starts `reshard serve`, pausing a cutover or rollback at step
// pause (when not ""), until s.release is created.
func (s *serve) start(t *testing.T, pause string) {
	t.Helper()
	_ = os.Remove(s.release)
	env := []string{migrate.PauseUntilEnv + "=" + s.release}
	if pause != "" {
		env = append(env, migrate.PauseEnv+"="+pause)
	}
	args := []string{"--config", s.e.cfgPath, "--users", s.e.usersPath, "--log-level", "info", "serve"}
	p := testkit.StartEnv(t, binary(t), env, args...)
	t.Cleanup(func() {
		if done, _ := p.Exited(); !done {
			_ = p.Stop(30 * time.Second)
		}
		noRace(t, p.Output())
		if t.Failed() && p == s.p {
			t.Logf("reshard serve output:\n%s", lastLines(p.Output(), 80))
		}
	})
	s.p = p
}

func newServe(t *testing.T, e *env) *serve {
	return &serve{e: e, release: filepath.Join(t.TempDir(), "release")}
}

// admin runs an admin command (on a connection of its own, retried while
// the server starts) and returns its rows as text.
func (s *serve) admin(t *testing.T, sql string) [][]string {
	t.Helper()
	rows, err := s.adminErr(t, sql)
	if err != nil {
		t.Fatalf("%s: %v\n%s", sql, err, lastLines(s.p.Output(), 40))
	}
	return rows
}

func (s *serve) adminErr(t *testing.T, sql string) ([][]string, error) {
	t.Helper()
	dsn := fmt.Sprintf("postgres://admin:fault-admin@127.0.0.1:%d/admin?sslmode=disable", s.e.adminPort)
	var c *pgx.Conn
	waitFor(t, 30*time.Second, "the admin server", func() bool {
		if done, err := s.p.Exited(); done {
			t.Fatalf("reshard serve exited (%v):\n%s", err, lastLines(s.p.Output(), 40))
		}
		var err error
		c, err = pgx.Connect(context.Background(), dsn)
		return err == nil
	})
	defer c.Close(context.Background())
	rows, err := c.Query(context.Background(), sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, err
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			if v != nil {
				row[i] = fmt.Sprint(v)
			}
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// task is the migration's state and message in SHOW TASKS.
func (s *serve) task(t *testing.T) (state, msg string) {
	t.Helper()
	for _, r := range s.admin(t, "SHOW TASKS") {
		if r[0] == s.id {
			return r[5], r[8]
		}
	}
	t.Fatalf("SHOW TASKS does not list task %s", s.id)
	return "", ""
}

// cutoverAsync sends CUTOVER on a connection of its own; the channel gets
// its outcome (an error when serve went away).
func (s *serve) cutoverAsync(t *testing.T) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	dsn := fmt.Sprintf("postgres://admin:fault-admin@127.0.0.1:%d/admin?sslmode=disable", s.e.adminPort)
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatalf("admin server: %v", err)
	}
	go func() {
		defer c.Close(context.Background())
		_, err := c.Exec(context.Background(), "CUTOVER "+s.id, pgx.QueryExecModeSimpleProtocol)
		done <- err
	}()
	return done
}

// persistedStep is the step the migration recorded on shard 0.
func (s *serve) persistedStep(t *testing.T) string {
	t.Helper()
	return s.e.dst[0].one(t, `SELECT step FROM reshard.migrations WHERE id = $1`, s.id)
}

// readOnly tells whether a database refuses the application's writes (a
// new session there is read-only).
func readOnly(t *testing.T, d db) bool {
	t.Helper()
	return d.one(t, `SELECT current_setting('default_transaction_read_only')`) == "on"
}

// writableSide identifies the side that takes the writes, "source" or
// "shards", and checks that the other refuses them: exactly one side is
// writable, except before the first cutover, when the shards are not
// closed yet (nothing of the application is on them; closed tells whether
// a rollback has closed them since).
func (e *env) writableSide(t *testing.T, closed bool) string {
	t.Helper()
	src := readOnly(t, e.src)
	var shards []bool
	for _, d := range e.dst {
		shards = append(shards, readOnly(t, d))
	}
	switch {
	case !src && shards[0] && shards[1]:
		return "source"
	case !src && !closed && !shards[0] && !shards[1]:
		return "source"
	case src && !shards[0] && !shards[1]:
		return "shards"
	}
	t.Fatalf("no single writable side: source read-only %v, shards read-only %v", src, shards)
	return ""
}

// batches numbers writeSide's batches (their keys are new each time).
var batches atomic.Int64

// writeSide writes a batch on the writable side, as the application would:
// on the source any rows; on the shards only rows that belong there (keys
// chosen by the shard's own hash check). Inserts, updates, moves of events
// rows between customers on the same shard and deletes.
func (e *env) writeSide(t *testing.T, side, tag string) {
	t.Helper()
	base := 50_000_000 + batches.Add(1)*10_000
	if side == "source" {
		e.src.exec(t, fmt.Sprintf(`INSERT INTO customers SELECT g, '%[1]s' || g, 'eu' FROM generate_series(%[2]d, %[2]d + 40) g;
			INSERT INTO events SELECT g, g, '%[1]s', %[3]s FROM generate_series(%[2]d, %[2]d + 20) g;
			UPDATE events SET customer_id = customer_id + 1 WHERE id BETWEEN %[2]d AND %[2]d + 10;
			UPDATE orders SET total = total + 1, note = '%[1]s' WHERE id %% 11 = 0;
			DELETE FROM orders WHERE id %% 97 = %[4]d;
			UPDATE countries SET name = name || '.' WHERE code = 'NL'`, tag, base, toastPayload("g"), base%97))
		return
	}
	for k, d := range e.dst {
		hashCheck(t, d)
		d.exec(t, fmt.Sprintf(`INSERT INTO customers SELECT g, '%[1]s' || g, 'us' FROM generate_series(%[2]d, %[2]d + 80) g
				WHERE satisfies_hash_partition('chk.hp_int8'::regclass, 2, %[3]d, g::bigint);
			INSERT INTO events SELECT g, g, '%[1]s', %[4]s FROM generate_series(%[2]d, %[2]d + 40) g
				WHERE satisfies_hash_partition('chk.hp_int8'::regclass, 2, %[3]d, g::bigint);
			UPDATE orders SET note = '%[1]s' WHERE id %% 13 = %[3]d;
			DELETE FROM orders WHERE id %% 89 = %[5]d`, tag, base, k, toastPayload("g"), base%89))
	}
}

// settled checks where a migration hit by a fault ended: in state want
// (streaming: the source writable, the shards following it;
// reverse_streaming: the other way round), the writable side the one that
// state says, writes made there reaching the other, and both sides equal
// (counts, row hashes, placement).
func (s *serve) settled(t *testing.T, want, tag string) {
	t.Helper()
	state, msg := s.task(t)
	if state != want {
		t.Fatalf("task %s is %s (%s), want %s\n%s", s.id, state, msg, want, lastLines(s.p.Output(), 60))
	}
	if want == "reverse_streaming" {
		s.cutOver = true
	}
	side := s.e.writableSide(t, s.cutOver)
	if (want == "streaming") != (side == "source") {
		t.Fatalf("task %s is %s but the writable side is the %s", s.id, want, side)
	}
	s.e.writeSide(t, side, tag)
	s.e.waitSame(t, 2*time.Minute)
	s.e.waitSlotsInUse(t, time.Minute)
	t.Logf("%s: task %s %s, the %s writable, the other side following and equal", tag, s.id, want, side)
}

// waitSlotsInUse waits until every replication slot of the env's databases
// is in use (a stream reads it): a switch undone or completed must leave no
// slot behind retaining WAL.
func (e *env) waitSlotsInUse(t *testing.T, timeout time.Duration) {
	t.Helper()
	var idle []string
	waitFor(t, timeout, "every slot in use", func() bool {
		idle = nil
		for _, d := range append([]db{e.src}, e.dst...) {
			if n := d.one(t, `SELECT coalesce(string_agg(slot_name, ','), '') FROM pg_replication_slots WHERE database = current_database() AND NOT active`); n != "" {
				idle = append(idle, d.name+": "+n)
			}
		}
		return len(idle) == 0
	}, func() string { return fmt.Sprintf("slots left unused: %v", idle) })
}

// step is a point of a cutover or rollback where a scenario strikes.
type step struct {
	name string
	// rollback: the step is a rollback's (the task reverse streams when
	// it starts); committed: the step is at or past the commit point, so
	// the switch completes (else it is undone).
	rollback, committed bool
}

// steps are every step of a cutover and of a rollback, in an order in
// which the migration can go through them one after the other: the ones
// undone first, then the commit point (the direction switches), and the
// slot drops after the commit point last. The resumption of a completed
// switch passes no step of the next entry.
var steps = []step{
	{cutover.StepWritesBlocked, false, false},    // the source's tables locked
	{cutover.StepDrained, false, false},          // the stream drained under the locks
	{cutover.StepForwardStopped, false, false},   // the forward stream stopped
	{cutover.StepSchema, false, false},           // SCHEMA_SYNC CUTOVER and POST_CUTOVER done
	{cutover.StepReverseSlots, false, false},     // the reverse slots made (reverse start)
	{cutover.StepSourceClosed, false, true},      // the commit point
	{cutover.RollbackWritesBlocked, true, false}, // the shards' tables locked
	{cutover.RollbackDrained, true, false},
	{cutover.RollbackReverseStopped, true, false},
	{cutover.RollbackSequences, true, false},
	{cutover.RollbackForwardSlots, true, false},
	{cutover.RollbackShardsClosed, true, true}, // the rollback's commit point
	{cutover.StepShardsOpen, false, true},      // the forward slots dropped next
	{cutover.RollbackSourceOpen, true, true},   // the reverse slots dropped next
}

// stopSteps is the steps TestShardStopDuringCutover stops shard 1 at: a
// shard stop costs a server restart and the switch's retries, so make test
// takes one step of each kind that ends differently (before the cutover's
// commit point, at it, inside a rollback, at the rollback's, and the two
// slot-drop steps past them), in an order each one's state leads to the
// next's; RESHARD_FAULT_ALL_STEPS=1 takes all 14.
func stopSteps() []step {
	if os.Getenv("RESHARD_FAULT_ALL_STEPS") == "1" {
		return steps
	}
	var some []step
	for _, i := range []int{1, 5, 9, 11, 12, 13} {
		some = append(some, steps[i])
	}
	return some
}

// after is the state a migration ends in once a fault at st is behind it,
// when the fault makes the switch stop at st: a restart completes a switch
// past its commit point and undoes one before it.
func (st step) after() string {
	if st.rollback != st.committed {
		return "reverse_streaming"
	}
	return "streaming"
}

// before is the state the task streams in when the switch starts.
func (st step) before() string {
	if st.rollback {
		return "reverse_streaming"
	}
	return "streaming"
}

// cutoverEnv is a COPY_DATA migration streaming under `reshard serve`,
// set to pause at step first.
func cutoverEnv(t *testing.T, name, general string, first step) *serve {
	t.Helper()
	e := newEnv(t, name, newSource(t, "fault_"+name, 5_000), "cutover_timeout = 10000\n"+general)
	e.schemaPre(t)
	s := newServe(t, e)
	s.start(t, first.name)
	at := markOf(s.p)
	s.id = s.admin(t, fmt.Sprintf("COPY_DATA src dst pub %s", e.slot))[0][0]
	at.await(t, 3*time.Minute, logStreaming)
	s.settled(t, "streaming", "start")
	return s
}

// switchAt starts a cutover (or rollback) under a write load (on the
// source, before the forward cutovers) and waits until it pauses at st (the
// task's own log says so); the load stops there. It returns the CUTOVER's
// outcome channel.
func (s *serve) switchAt(t *testing.T, st step) <-chan error {
	t.Helper()
	var w *writer
	if !st.rollback {
		w = startWriter(t, s.e.src, int64(len(st.name)))
		w.waitWrites(t, w.counts(), 200, time.Minute)
	}
	at := markOf(s.p)
	pending := s.cutoverAsync(t)
	at.await(t, 2*time.Minute, "paused at a cutover step", "step="+st.name)
	if w != nil {
		w.halt(t)
		checkWrites(t, "writes on the source before the switch", w.counts())
	}
	if got := s.persistedStep(t); got != st.name {
		t.Fatalf("paused at %s but the recorded step is %q", st.name, got)
	}
	return pending
}

// TestKillDuringCutover: reshard serve is killed with SIGKILL at each step
// of a cutover and of a rollback (paused there: the task's log says it
// reached the step). Started again, it undoes a switch that had not reached
// its commit point and completes one that had; each time the writable side
// is the one the task's state says, the other follows it, and both are
// equal.
func TestKillDuringCutover(t *testing.T) {
	s := cutoverEnv(t, "kcut", "", steps[0])
	for i, st := range steps {
		pending := s.switchAt(t, st)
		if st.before() == "streaming" && i > 0 && steps[i-1].after() != "streaming" {
			t.Fatalf("steps out of order at %s", st.name)
		}
		inject(t, "SIGKILL of reshard at "+st.name, s.p.Kill)
		hit(t, killed(s.p), "reshard killed paused at step %s", st.name)
		<-pending
		restarts.Add(1)
		next := ""
		if i+1 < len(steps) {
			next = steps[i+1].name
		}
		s.start(t, next)
		at := markOf(s.p)
		verb, what := "undoing", "cutover"
		if st.committed {
			verb = "completing"
		}
		if st.rollback {
			what = "rollback"
		}
		at.await(t, 2*time.Minute, verb+" the "+what+" a restart interrupted", logStreaming)
		s.settled(t, st.after(), "after a kill at "+st.name)
	}
}

// TestShardStopDuringCutover: destination shard 1 stops (-m immediate)
// while a cutover or a rollback waits at each of its steps, and the switch
// goes on with the shard down; the shard starts again once reshard has
// logged the switch's outcome. Each time the migration ends on one
// writable side, the other following it, both equal.
func TestShardStopDuringCutover(t *testing.T) {
	run := stopSteps()
	s := cutoverEnv(t, "scut", "", run[0])
	inst := cluster.Instances[2]
	for i, st := range run {
		pending := s.switchAt(t, st)
		at := markOf(s.p)
		inject(t, "stop of shard 1 at "+st.name, func() {
			inst.StopImmediate()
		})
		// The switch goes on with the shard down.
		if err := os.WriteFile(s.release, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		at.await(t, time.Minute, "pause released")
		// The switch's outcome: done, aborted (and undone), or failed.
		s.p.WaitOutput(time.Minute, func(string) bool {
			o := at.since()
			for _, end := range []string{"cutover aborted", "rollback aborted", "cutover done", "rolled back:", "could not complete yet"} {
				if strings.Contains(o, end) {
					return true
				}
			}
			return false
		})
		// Met: reshard failed to reach the shard (its database is named)
		// or its stream lost it.
		met := strings.Contains(at.since(), s.e.dst[1].name) || strings.Contains(at.since(), logStreamRetry)
		hit(t, met, "the %s went on from %s and met the stopped shard: %s", kind(st), st.name, lastLines(at.since(), 6))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := inst.StartAgain(ctx, cluster.BinDir)
		cancel()
		if err != nil && !faultsDisabled() {
			t.Fatalf("start shard 1 again: %v", err)
		}
		select {
		case err := <-pending:
			t.Logf("CUTOVER at %s with shard 1 down answered: %v", st.name, err)
		case <-time.After(2 * time.Minute):
			t.Fatalf("CUTOVER at %s with shard 1 down never answered", st.name)
		}
		if strings.Contains(at.since(), "could not complete yet") {
			// Past the commit point: completed once the shard is back.
			done := map[bool]string{false: "cutover done", true: "rolled back:"}[st.rollback]
			at.awaitSeq(t, 2*time.Minute, done, logStreaming)
		}
		state, msg := s.task(t)
		t.Logf("after shard 1 stopped at %s: task %s (%s)", st.name, state, msg)
		s.settled(t, state, "after shard 1 stopped at "+st.name)
		// Next step: serve restarted cleanly with the next pause, the
		// migration streaming the way that step starts from.
		if err := s.p.Stop(time.Minute); err != nil {
			t.Logf("serve after SIGTERM: %v", err)
		}
		if i+1 == len(run) {
			break
		}
		s.start(t, run[i+1].name)
		markOf(s.p).await(t, 2*time.Minute, logStreaming)
		if state, _ := s.task(t); state != run[i+1].before() {
			t.Logf("task %s is %s, the next step starts from %s: CUTOVER first", s.id, state, run[i+1].before())
			s.admin(t, "CUTOVER "+s.id)
			s.settled(t, run[i+1].before(), "switched before "+run[i+1].name)
		}
	}
}

func kind(st step) string {
	if st.rollback {
		return "rollback"
	}
	return "cutover"
}
