package tests

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/sync/migrate"
	"github.com/reshard/reshard/tests/testkit"
)

// serveEnv is a copyEnv driven through a real `reshard serve` process, so
// that it can be restarted (SIGTERM) or killed (SIGKILL) at any moment.
type serveEnv struct {
	*copyEnv
	bin   string
	proc  *testkit.Process
	admin *pgx.Conn
	// id is the migration's task id.
	id string
}

func newServeEnv(t *testing.T, e *copyEnv) *serveEnv {
	t.Helper()
	s := &serveEnv{copyEnv: e, bin: buildReshard(t)}
	t.Cleanup(func() {
		if s.admin != nil {
			s.admin.Close(context.Background())
		}
		if s.proc != nil {
			_ = s.proc.Stop(30 * time.Second)
		}
	})
	return s
}

func (s *serveEnv) dsn() string {
	return fmt.Sprintf("postgres://admin:%s@127.0.0.1:%d/admin?sslmode=disable", adminPassword, s.cat.Config.General.Port)
}

// start starts `reshard serve`, pausing cutovers at step pause when it is
// not "", and connects to its admin server.
func (s *serveEnv) start(t *testing.T, pause string) {
	t.Helper()
	var env []string
	if pause != "" {
		env = []string{migrate.PauseEnv + "=" + pause}
	}
	s.proc = testkit.StartEnv(t, s.bin, env, "--config", s.cfgPath, "--users", s.usersPath, "--log-level", "debug", "serve")
	s.admin = s.dial(t)
}

func (s *serveEnv) dial(t *testing.T) *pgx.Conn {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := pgx.Connect(context.Background(), s.dsn())
		if err == nil {
			return c
		}
		if done, perr := s.proc.Exited(); done {
			t.Fatalf("reshard serve exited (%v):\n%s", perr, lastOutput(s.proc.Output(), 40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin server: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// restart stops serve with sig (SIGTERM: a clean shutdown; SIGKILL: a
// crash) and starts it again.
func (s *serveEnv) restart(t *testing.T, sig syscall.Signal, pause string) {
	t.Helper()
	s.admin.Close(context.Background())
	s.admin = nil
	if sig == syscall.SIGKILL {
		s.proc.Kill()
	} else if err := s.proc.Stop(time.Minute); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, lastOutput(s.proc.Output(), 80))
	}
	t.Logf("%s: serve stopped with %s", time.Now().Format("15:04:05.000"), sig)
	s.start(t, pause)
}

func lastOutput(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run runs an admin command and returns its rows as text.
func (s *serveEnv) run(t *testing.T, sql string) [][]string {
	t.Helper()
	rows, err := s.admin.Query(context.Background(), sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			if v != nil {
				row[i] = fmt.Sprint(v)
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

// task is the state and error of the migration in SHOW TASKS, which must
// list it alone, with its id.
func (s *serveEnv) task(t *testing.T) (string, string) {
	t.Helper()
	ts := s.run(t, "SHOW TASKS")
	if len(ts) != 1 || ts[0][0] != s.id {
		t.Fatalf("SHOW TASKS lists %v, want task %s alone", ts, s.id)
	}
	return ts[0][5], ts[0][8]
}

// waitState waits until the migration is in state want.
func (s *serveEnv) waitState(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		state, msg := s.task(t)
		if state == want {
			return
		}
		if state == "failed" || time.Now().After(deadline) {
			t.Fatalf("task %s is %s (%s), want %s\n%s", s.id, state, msg, want, lastOutput(s.proc.Output(), 60))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// persisted is the migration's phase and step as recorded on shard 0.
func (s *serveEnv) persisted(t *testing.T) (phase, step string) {
	t.Helper()
	// The rollback ends the application's sessions on the shards (this
	// one included) when it closes them: such a session is asked again.
	sql := fmt.Sprintf(`SELECT phase || ' ' || step FROM reshard.migrations WHERE id = '%s'`, s.id)
	for attempt := 0; ; attempt++ {
		var row string
		conn, err := s.dst[0].inst.Connect(t.Context(), s.dst[0].db)
		if err == nil {
			err = conn.QueryRow(t.Context(), sql).Scan(&row)
			conn.Close(context.Background())
		}
		var pgErr *pgconn.PgError
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return "", ""
		case err == nil:
			f := strings.SplitN(row+" ", " ", 3)
			return f[0], f[1]
		case errors.As(err, &pgErr) && pgErr.Code == "57P01" && attempt < 5:
			continue
		default:
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// waitStep waits until the recorded step is step.
func (s *serveEnv) waitStep(t *testing.T, step string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		if _, got := s.persisted(t); got == step {
			return
		}
		if time.Now().After(deadline) {
			p, st := s.persisted(t)
			t.Fatalf("the migration never reached step %s (recorded: %s %s)\n%s", step, p, st, lastOutput(s.proc.Output(), 60))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cutoverAsync sends CUTOVER on a connection of its own (it returns when
// the cutover ends, or the server goes away).
func (s *serveEnv) cutoverAsync(t *testing.T) <-chan error {
	t.Helper()
	c := s.dial(t)
	done := make(chan error, 1)
	go func() {
		defer c.Close(context.Background())
		_, err := c.Exec(context.Background(), "CUTOVER "+s.id, pgx.QueryExecModeSimpleProtocol)
		done <- err
	}()
	return done
}

// cutover runs CUTOVER and returns the state it answers.
func (s *serveEnv) cutover(t *testing.T) string {
	t.Helper()
	rows := s.run(t, "CUTOVER "+s.id)
	if len(rows) != 1 {
		t.Fatalf("CUTOVER answered %v", rows)
	}
	return rows[0][1]
}

// nodes are the env's databases: the source shards, then the shards.
func (e *copyEnv) nodes() []node { return append(append([]node{}, e.src...), e.dst...) }

// slots lists name and whether active of every slot of the env's
// databases.
func (e *copyEnv) slots(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, n := range e.nodes() {
		for _, r := range query(t, n.inst, n.db, `SELECT slot_name || ' ' || active FROM pg_replication_slots WHERE database = current_database()`) {
			f := strings.Fields(r)
			out[n.db+"/"+f[0]] = f[1] == "true"
		}
	}
	return out
}

// waitNoInactiveSlot waits until every slot on every server of the env is
// active, and returns them.
func (e *copyEnv) waitNoInactiveSlot(t *testing.T, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		slots := e.slots(t)
		var names, inactive []string
		for n, active := range slots {
			names = append(names, n)
			if !active {
				inactive = append(inactive, n)
			}
		}
		sort.Strings(names)
		if len(inactive) == 0 {
			return names
		}
		if time.Now().After(deadline) {
			t.Fatalf("inactive slots left: %v (all: %v)", inactive, names)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sharded are the copy schema's sharded tables and their key; the other
// published table (countries) is omnisharded.
var sharded = map[string]string{"customers": "id", "orders": "customer_id", "events_2025": "customer_id", "events_2026": "customer_id", "notes": "customer_id"}

var copyTables = []string{"countries", "customers", "events_2025", "events_2026", "notes", "orders"}

// sums is count and sum(hashtext(row)) of a table on a node.
func sums(t *testing.T, n node, table string) string {
	t.Helper()
	return n.one(t, fmt.Sprintf(`SELECT count(*) || '/' || coalesce(sum(hashtext(x::text)::numeric), 0) FROM ONLY %s x`, table))
}

// sideSums are the counts and row hashes of every table as the source
// sees them and as the shards hold them (summed over shards for sharded
// tables; the omni table's from every shard).
func (e *copyEnv) sideSums(t *testing.T) (src, dst map[string]string) {
	t.Helper()
	src, dst = map[string]string{}, map[string]string{}
	for _, table := range copyTables {
		if _, ok := sharded[table]; !ok {
			src[table] = addSums(t, e.src[:1], table)
			var per []string
			for _, d := range e.dst {
				per = append(per, addSums(t, []node{d}, table))
			}
			if strings.Count(strings.Join(per, ","), per[0]) == len(per) {
				dst[table] = per[0]
			} else {
				dst[table] = strings.Join(per, ",")
			}
			continue
		}
		src[table] = addSums(t, e.src, table)
		dst[table] = addSums(t, e.dst, table)
	}
	return src, dst
}

func addSums(t *testing.T, nodes []node, table string) string {
	t.Helper()
	var count, total int64
	for _, n := range nodes {
		f := strings.SplitN(sums(t, n, table), "/", 2)
		var c, s int64
		fmt.Sscan(f[0], &c)
		fmt.Sscan(f[1], &s)
		count += c
		total += s
	}
	return fmt.Sprintf("%d/%d", count, total)
}

// waitSame waits until both sides have the same counts and row hashes,
// then compares them exactly: every row (sorted text), and every row of a
// sharded table on the shard satisfies_hash_partition gives it.
func (e *copyEnv) waitSame(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		src, dst := e.sideSums(t)
		same := true
		for k := range src {
			if src[k] != dst[k] {
				same = false
			}
		}
		if same {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the two sides differ (count/row hash):\nsource: %v\nshards: %v", src, dst)
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.compareExactly(t)
}

// compareExactly compares every row of every table between the source and
// the shards, and the placement of every row.
func (e *copyEnv) compareExactly(t *testing.T) {
	t.Helper()
	rowsOf := func(nodes []node, table string) []string {
		var out []string
		for _, n := range nodes {
			out = append(out, query(t, n.inst, n.db, fmt.Sprintf("SELECT x::text FROM ONLY %s x", table))...)
		}
		sort.Strings(out)
		return out
	}
	for _, table := range copyTables {
		col, isSharded := sharded[table]
		if !isSharded {
			want := rowsOf(e.src[:1], table)
			for k, d := range e.dst {
				if got := rowsOf([]node{d}, table); strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Fatalf("omni table %s on shard %d differs from the source:\n%s", table, k, firstLines(diff(want, got), 10))
				}
			}
			continue
		}
		want, got := rowsOf(e.src, table), rowsOf(e.dst, table)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("%s differs: source %d rows, shards %d:\n%s", table, len(want), len(got), firstLines(diff(want, got), 10))
		}
		for k, d := range e.dst {
			if n := misplaced(t, d, "ONLY "+table, col, len(e.dst), k); n != 0 {
				t.Fatalf("%s: %d rows on shard %d belong on another shard", table, n, k)
			}
		}
	}
}
