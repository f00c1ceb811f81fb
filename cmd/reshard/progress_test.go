package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/tests/pgtest"
)

// The tests in this file run the built reshard binary against real
// PostgreSQL instances: the progress display in a terminal (tmux), --json
// events, and the exit codes.

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// reshardBinary builds cmd/reshard once per test run.
func reshardBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "reshard-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "reshard")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// cliSchema is a small shop: customers sharded by id, orders by
// customer_id, countries copied to every shard.
const cliSchema = `
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, country text REFERENCES countries(code));
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers(id), total numeric(12,2) NOT NULL);
INSERT INTO countries VALUES ('NL','Netherlands'),('DE','Germany'),('JP','Japan');
INSERT INTO customers SELECT g, 'Customer ' || g, (ARRAY['NL','DE','JP'])[1 + g % 3] FROM generate_series(1, 5000) g;
INSERT INTO orders (customer_id, total) SELECT 1 + g % 5000, (g % 1000) / 10.0 FROM generate_series(1, 100000) g;
CREATE PUBLICATION pub FOR ALL TABLES;
`

// cliEnv is a source and two shards with three independent databases (a,
// b and c, one per test), started once for the tests of this file.
type cliEnv struct {
	cl         *pgtest.Cluster
	dir        string
	cfg, users string
}

var shared struct {
	once sync.Once
	env  *cliEnv
	err  error
}

// sharedCLIEnv returns the environment, starting it on first use; TestMain
// stops it.
func sharedCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	shared.once.Do(func() { shared.env, shared.err = startCLIEnv() })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.env
}

func startCLIEnv() (*cliEnv, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := pgtest.Start(ctx, 3, pgtest.Options{})
	if err != nil {
		return nil, err
	}
	env := &cliEnv{cl: cl}
	if err := env.setUp(ctx); err != nil {
		env.stop()
		return nil, err
	}
	return env, nil
}

func (e *cliEnv) setUp(ctx context.Context) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var cfg, users strings.Builder
	fmt.Fprintf(&cfg, "[general]\nhost = \"127.0.0.1\"\nport = %d\n\n[admin]\npassword = \"pw\"\n", port)
	for _, db := range []string{"a", "b", "c"} {
		for _, inst := range e.cl.Instances {
			if err := inst.CreateDatabase(ctx, db); err != nil {
				return err
			}
		}
		if err := e.cl.Instances[0].Exec(ctx, db, cliSchema); err != nil {
			return err
		}
		src := e.cl.Instances[0]
		fmt.Fprintf(&cfg, "\n[[databases]]\nname = %q\nhost = %q\nport = %d\ndatabase_name = %q\n", db, src.Host, src.Port, db)
		for i, inst := range e.cl.Instances[1:] {
			fmt.Fprintf(&cfg, "\n[[databases]]\nname = \"%s_sharded\"\nhost = %q\nport = %d\ndatabase_name = %q\nshard = %d\n", db, inst.Host, inst.Port, db, i)
		}
		fmt.Fprintf(&cfg, "\n[[sharded_tables]]\ndatabase = \"%s_sharded\"\nname = \"customers\"\ncolumn = \"id\"\n", db)
		fmt.Fprintf(&cfg, "\n[[sharded_tables]]\ndatabase = \"%s_sharded\"\ncolumn = \"customer_id\"\n", db)
		for _, name := range []string{db, db + "_sharded"} {
			fmt.Fprintf(&users, "[[users]]\nname = %q\ndatabase = %q\npassword = %q\nschema_admin = true\n\n", pgtest.User, name, pgtest.Password)
		}
	}
	if e.dir, err = os.MkdirTemp("", "reshard-cli-"); err != nil {
		return err
	}
	e.cfg, e.users = filepath.Join(e.dir, "pgdog.toml"), filepath.Join(e.dir, "users.toml")
	if err := os.WriteFile(e.cfg, []byte(cfg.String()), 0o600); err != nil {
		return err
	}
	return os.WriteFile(e.users, []byte(users.String()), 0o600)
}

func (e *cliEnv) stop() {
	e.cl.Stop()
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

// reshard runs the binary to the end and returns stdout, stderr and the
// exit code.
func (e *cliEnv) reshard(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, reshardBinary(t), append([]string{"--config", e.cfg, "--users", e.users}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("reshard %v: %v", args, err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

func (e *cliEnv) route(db string) []string {
	return []string{"--from-database", db, "--to-database", db + "_sharded", "--publication", "pub"}
}

func (e *cliEnv) schemaSync(t *testing.T, db string) {
	t.Helper()
	if _, stderr, code := e.reshard(t, append([]string{"schema-sync"}, e.route(db)...)...); code != exitOK {
		t.Fatalf("schema-sync %s: exit %d\n%s", db, code, stderr)
	}
}

// tmux drives one tmux server of the test's own (its own socket).
type tmux struct {
	t      *testing.T
	socket string
}

func newTmux(t *testing.T) *tmux {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is not installed (scripts/deps.sh installs it)")
	}
	m := &tmux{t: t, socket: filepath.Join(t.TempDir(), "tmux.sock")}
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", m.socket, "kill-server").Run() })
	return m
}

func (m *tmux) run(args ...string) string {
	m.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", m.socket}, args...)...).CombinedOutput()
	if err != nil {
		m.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// waitScreen captures the pane until ok accepts it, and returns it.
func (m *tmux) waitScreen(what string, ok func(screen string) bool) string {
	m.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var screen string
	for time.Now().Before(deadline) {
		screen = m.run("capture-pane", "-p", "-t", "cli")
		if ok(screen) {
			return screen
		}
		time.Sleep(200 * time.Millisecond)
	}
	m.t.Fatalf("the terminal never showed %s; it shows:\n%s", what, screen)
	return ""
}

// TestProgressDisplayInTerminal runs data-sync (copy, then stream) in a
// tmux pseudo-terminal: the screen shows a bar per table with its percent,
// the totals, and a lag line per stream that moves as changes are applied.
// Ctrl-C stops the stream and the process exits 130.
func TestProgressDisplayInTerminal(t *testing.T) {
	env := sharedCLIEnv(t)
	env.schemaSync(t, "a")
	m := newTmux(t)
	exitFile := filepath.Join(t.TempDir(), "exit")
	script := fmt.Sprintf("%s --config %s --users %s data-sync %s; echo $? > %s; sleep 600",
		reshardBinary(t), env.cfg, env.users, strings.Join(env.route("a"), " "), exitFile)
	m.run("new-session", "-d", "-s", "cli", "-x", "200", "-y", "50", script)

	streaming := func(s string) bool {
		for _, want := range []string{"public.customers", "public.orders", "public.countries", "total", "100.0%", "rows/s", "stream reshard_", "lag "} {
			if !strings.Contains(s, want) {
				return false
			}
		}
		return strings.Contains(s, "3/3 tables") && strings.Contains(s, "· stream ·")
	}
	screen := m.waitScreen("the finished copy and the stream", streaming)
	t.Logf("screen while streaming:\n%s", screen)
	for _, line := range strings.Split(screen, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "public.orders") {
			if !strings.Contains(line, "[===") || !strings.Contains(line, "100,000 rows") {
				t.Fatalf("orders bar: %q", line)
			}
		}
	}

	// Changes on the source show up in the stream line as they are applied.
	ctx := context.Background()
	if err := env.cl.Instances[0].Exec(ctx, "a", "INSERT INTO orders (customer_id, total) SELECT 1 + g % 5000, 1 FROM generate_series(1, 500) g"); err != nil {
		t.Fatal(err)
	}
	applied := regexp.MustCompile(`applied [1-9][0-9,]*  last transaction`)
	if applied.MatchString(screen) {
		t.Fatalf("changes applied before any were made:\n%s", screen)
	}
	m.waitScreen("the applied changes", applied.MatchString)

	m.run("send-keys", "-t", "cli", "C-c")
	deadline := time.Now().Add(time.Minute)
	for {
		b, err := os.ReadFile(exitFile)
		if err == nil && len(bytes.TrimSpace(b)) > 0 {
			if code := strings.TrimSpace(string(b)); code != fmt.Sprint(exitInterrupted) {
				t.Fatalf("exit code after Ctrl-C: %s, want %d\n%s", code, exitInterrupted, m.run("capture-pane", "-p", "-t", "cli"))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reshard did not stop after Ctrl-C:\n%s", m.run("capture-pane", "-p", "-t", "cli"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The result table is printed after the display.
	final := m.run("capture-pane", "-p", "-t", "cli", "-S", "-200")
	if !strings.Contains(final, "units_copied") {
		t.Fatalf("no result after Ctrl-C:\n%s", final)
	}
}

// streamUntilLag runs the binary with args until its --json output shows a
// lag event (it streams), sends sig, and returns stdout, the exit code and
// stderr.
func (e *cliEnv) streamUntilLag(t *testing.T, sig syscall.Signal, args ...string) (string, int, string) {
	t.Helper()
	cmd := exec.Command(reshardBinary(t), append([]string{"--config", e.cfg, "--users", e.users}, args...)...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = pw, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	var out strings.Builder
	lagSeen := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		closed := false
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if !closed && strings.Contains(sc.Text(), `"event":"lag"`) {
				closed = true
				close(lagSeen)
			}
		}
	}()
	select {
	case <-lagSeen:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-readDone
		t.Fatalf("%v: no lag event within 2 minutes; stderr:\n%s", args, stderr.String())
	}
	_ = cmd.Process.Signal(sig)
	_ = cmd.Wait()
	<-readDone
	return out.String(), cmd.ProcessState.ExitCode(), stderr.String()
}

// jsonLines parses out as one JSON object per line.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var events []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("not one JSON object per line: %q: %v", sc.Text(), err)
		}
		if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(ev["time"])); err != nil || ev["event"] == nil {
			t.Fatalf("event without event/time: %q", sc.Text())
		}
		events = append(events, ev)
	}
	return events
}

func kinds(events []map[string]any) map[string]int {
	n := map[string]int{}
	for _, ev := range events {
		n[fmt.Sprint(ev["event"])]++
	}
	return n
}

// TestJSONEventsAndExitCodes runs data-sync --json through copy and stream
// and stops it with SIGINT, then verify --json (equal, then with a row
// changed on a shard), checking the events and the exit codes.
func TestJSONEventsAndExitCodes(t *testing.T) {
	env := sharedCLIEnv(t)
	env.schemaSync(t, "b")

	out, code, stderr := env.streamUntilLag(t, syscall.SIGINT, append([]string{"data-sync", "--json"}, env.route("b")...)...)
	if code != exitInterrupted {
		t.Fatalf("data-sync after SIGINT: exit %d, want %d\n%s", code, exitInterrupted, stderr)
	}
	events := jsonLines(t, out)
	n := kinds(events)
	for _, k := range []string{"phase", "unit_started", "unit_finished", "table_done", "progress", "lag", "result"} {
		if n[k] == 0 {
			t.Errorf("no %q event in:\n%s", k, out)
		}
	}
	if n["table_done"] != 3 {
		t.Errorf("%d table_done events, want 3 (countries, customers, orders)", n["table_done"])
	}
	var phases []string
	for _, ev := range events {
		if ev["event"] == "phase" {
			phases = append(phases, fmt.Sprint(ev["phase"]))
		}
		if ev["event"] == "table_done" && ev["table"] == "orders" && ev["rows"] != float64(100000) {
			t.Errorf("orders table_done: %v", ev)
		}
	}
	if strings.Join(phases, ",") != "prepare,copy,stream" {
		t.Errorf("phases %v, want prepare,copy,stream", phases)
	}
	last := events[len(events)-1]
	if last["event"] != "result" || last["exit_code"] != float64(exitInterrupted) || last["command"] != "data-sync" {
		t.Errorf("last event: %v", last)
	}

	// The slot kept the changes: --replicate-only streams from it; SIGTERM
	// stops it with 143.
	rows, _ := last["rows"].([]any)
	if len(rows) != 1 {
		t.Fatalf("data-sync result rows: %v", last)
	}
	slot := fmt.Sprint(rows[0].(map[string]any)["slot"])
	// It said where it stopped and how to continue.
	var said string
	for _, ev := range events {
		if ev["event"] == "error" {
			said = fmt.Sprint(ev["message"])
		}
	}
	if !strings.Contains(said, "interrupted while streaming, everything applied up to "+slot+" at ") ||
		!strings.Contains(said, "continue with: reshard --config ") || !strings.Contains(said, "--replication-slot "+slot+" --replicate-only") {
		t.Errorf("data-sync after SIGINT does not say where it stopped and how to continue: %q", said)
	}
	out, code, stderr = env.streamUntilLag(t, syscall.SIGTERM, append([]string{"data-sync", "--json", "--replicate-only", "--replication-slot", slot}, env.route("b")...)...)
	events = jsonLines(t, out)
	if n := kinds(events); code != exitTerminated || n["unit_started"] != 0 || events[0]["phase"] != "stream" || events[len(events)-1]["exit_code"] != float64(exitTerminated) {
		t.Fatalf("data-sync --replicate-only after SIGTERM: exit %d, want %d\n%s\n%s", code, exitTerminated, out, stderr)
	}

	// verify: equal.
	stdout, stderrS, code := env.reshard(t, append([]string{"verify", "--json"}, env.route("b")...)...)
	if code != exitOK {
		t.Fatalf("verify: exit %d\n%s%s", code, stdout, stderrS)
	}
	events = jsonLines(t, stdout)
	if n := kinds(events); n["table_verified"] != 3 || n["result"] != 1 {
		t.Fatalf("verify events %v:\n%s", n, stdout)
	}
	// verify: one row changed on a shard exits 3, in text mode too.
	for _, inst := range env.cl.Instances[1:] {
		if err := inst.Exec(context.Background(), "b", "UPDATE orders SET total = total + 1 WHERE id = 7"); err != nil {
			t.Fatal(err)
		}
	}
	stdout, stderrS, code = env.reshard(t, append([]string{"verify"}, env.route("b")...)...)
	if code != exitMismatch || !strings.Contains(stderrS, "1 of 3 tables differ") || !strings.Contains(stdout, "orders") {
		t.Fatalf("verify with a changed row: exit %d, want %d\n%s\n%s", code, exitMismatch, stdout, stderrS)
	}
	stdout, _, code = env.reshard(t, append([]string{"verify", "--json"}, env.route("b")...)...)
	events = jsonLines(t, stdout)
	last = events[len(events)-1]
	if code != exitMismatch || last["exit_code"] != float64(exitMismatch) || events[len(events)-2]["event"] != "error" {
		t.Fatalf("verify --json with a changed row: exit %d\n%s", code, stdout)
	}

	// A failing command exits 1 and says why; with --json as an error event.
	stdout, _, code = env.reshard(t, "--json", "schema-sync", "--from-database", "b", "--to-database", "nope", "--publication", "pub")
	events = jsonLines(t, stdout)
	if n := len(events); code != exitError || n < 2 || events[n-2]["event"] != "error" || events[n-2]["sqlstate"] != "3D000" || events[n-1]["exit_code"] != float64(exitError) {
		t.Fatalf("unknown database: exit %d\n%s", code, stdout)
	}
	// Usage and configuration errors exit 2.
	if _, stderrS, code := env.reshard(t, "verify", "--from-database", "b"); code != exitUsage || !strings.Contains(stderrS, "missing required flag") {
		t.Fatalf("missing flag: exit %d %s", code, stderrS)
	}
	bad, users := files(t, "[general]\nbogus = 1\n", "")
	badConfig := &cliEnv{cfg: bad, users: users}
	if _, stderrS, code := badConfig.reshard(t, "verify", "--from-database", "b", "--to-database", "b_sharded", "--publication", "pub"); code != exitUsage || !strings.Contains(stderrS, "general.bogus: unknown key") {
		t.Fatalf("bad config: exit %d %s", code, stderrS)
	}
}

// TestCutoverThroughAdminServer: `reshard cutover --task` sends CUTOVER to
// the running admin server that holds the task, shows the server's streams
// while it waits, and prints the result; a task the server does not have,
// and a server that is not there, exit 1 with the reason.
func TestCutoverThroughAdminServer(t *testing.T) {
	env := sharedCLIEnv(t)
	serve := exec.Command(reshardBinary(t), "--config", env.cfg, "--users", env.users, "serve")
	var serveLog bytes.Buffer
	serve.Stdout, serve.Stderr = &serveLog, &serveLog
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stopServe := func() {
		if !stopped {
			stopped = true
			_ = serve.Process.Signal(syscall.SIGTERM)
			_ = serve.Wait()
		}
	}
	defer stopServe()
	cfgText, err := os.ReadFile(env.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var port int
	fmt.Sscanf(string(cfgText[strings.Index(string(cfgText), "port = "):]), "port = %d", &port)
	dsn := fmt.Sprintf("postgres://admin:pw@127.0.0.1:%d/admin?sslmode=disable", port)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var admin *pgx.Conn
	for admin == nil {
		if admin, err = pgx.Connect(ctx, dsn); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("admin server: %v\n%s", err, serveLog.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	defer admin.Close(context.Background())
	var id string
	if err := admin.QueryRow(ctx, "RESHARD c c_sharded pub", pgx.QueryExecModeSimpleProtocol).Scan(&id); err != nil {
		t.Fatal(err)
	}
	for state := ""; state != "streaming"; {
		if err := admin.QueryRow(ctx, "SHOW TASKS", pgx.QueryExecModeSimpleProtocol).Scan(nil, nil, nil, nil, nil, &state, nil, nil, nil); err != nil {
			t.Fatalf("SHOW TASKS: %v", err)
		}
		if state == "failed" || ctx.Err() != nil {
			t.Fatalf("RESHARD is %s:\n%s", state, serveLog.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	stdout, stderr, code := env.reshard(t, "cutover", "--json", "--task", id)
	if code != exitOK {
		t.Fatalf("cutover: exit %d\n%s\n%s", code, stdout, stderr)
	}
	events := jsonLines(t, stdout)
	n := kinds(events)
	if n["lag"] == 0 || n["phase"] != 1 || events[0]["phase"] != "cutover" {
		t.Errorf("cutover events %v:\n%s", n, stdout)
	}
	last := events[len(events)-1]
	rows, _ := last["rows"].([]any)
	if last["exit_code"] != float64(exitOK) || len(rows) != 1 || rows[0].(map[string]any)["state"] != "reverse_streaming" {
		t.Fatalf("cutover result: %v", last)
	}
	// The task is the server's: it now streams the shards back.
	var state string
	if err := admin.QueryRow(ctx, "SHOW TASKS", pgx.QueryExecModeSimpleProtocol).Scan(nil, nil, nil, nil, nil, &state, nil, nil, nil); err != nil || state != "reverse_streaming" {
		t.Fatalf("task after cutover: %q %v", state, err)
	}

	if _, stderr, code := env.reshard(t, "cutover", "--task", "99"); code != exitError || !strings.Contains(stderr, `task "99" does not exist`) {
		t.Fatalf("unknown task: exit %d\n%s", code, stderr)
	}
	stopServe()
	if _, stderr, code := env.reshard(t, "cutover", "--task", id); code != exitError || !strings.Contains(stderr, "cannot reach the admin server") {
		t.Fatalf("no server: exit %d\n%s", code, stderr)
	}
}
