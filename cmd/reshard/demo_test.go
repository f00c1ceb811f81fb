package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// demoTempDir is a fresh temporary directory for one demo run (its TMPDIR),
// open to the postgres user the demo's servers run as, removed at the end.
func demoTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "reshard-demotest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startDemoInTmux runs the demo in a tmux pseudo-terminal with its own
// TMPDIR; the shell writes its exit code to exitFile.
func startDemoInTmux(t *testing.T) (tmp string, m *tmux, exitFile string) {
	t.Helper()
	tmp = demoTempDir(t)
	m = newTmux(t)
	exitFile = filepath.Join(t.TempDir(), "exit")
	script := fmt.Sprintf("TMPDIR=%s %s demo --orders 100000 --port 0; echo $? > %s; sleep 600", tmp, reshardBinary(t), exitFile)
	m.run("new-session", "-d", "-s", "cli", "-x", "220", "-y", "60", script)
	return tmp, m, exitFile
}

// requireEmpty fails unless the demo removed everything it made in dir.
func requireEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if len(left) > 0 {
		t.Fatalf("the demo left %s in its temporary directory", strings.Join(left, ", "))
	}
}

// TestDemoInTerminal runs `reshard demo` in a tmux pseudo-terminal: the
// screen shows the progress bars, the stream's lag, the application's
// writes, VERIFY's result per table and the summary; Ctrl-C stops it, it
// exits 0 and nothing it made is left in the temporary directory.
func TestDemoInTerminal(t *testing.T) {
	tmp, m, exitFile := startDemoInTmux(t)
	done := func(s string) bool { return strings.Contains(s, "Press Ctrl-C to stop and remove everything.") }
	full := func() string { return m.run("capture-pane", "-p", "-t", "cli", "-S", "-400") }
	screen := m.waitScreen("the end of the demo", func(s string) bool {
		return done(s) || strings.Contains(s, "reshard: ") || strings.Contains(s, "ERROR:")
	})
	if !done(screen) {
		t.Fatalf("the demo failed:\n%s", full())
	}
	all := full()
	t.Logf("screen:\n%s", all)
	for _, want := range []string{
		"reshard demo: the log goes to " + tmp,               // logs to a file, named
		"public.orders", "[===", "100.0%", "rows/s", "total", // copy bars
		"stream reshard_", "lag ", // the stream
		"application ", "orders moved between shards", // the writer
		"verify public.orders", "match  source", // VERIFY's bars
		"Summary", "own check: row counts", "CUTOVER: the shards take the writes",
		// VERIFY held the stream at its point while the application wrote
		// (not the re-run with writes paused).
		"VERIFY while writing: every table matches at one consistent point",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("the screen lacks %q", want)
		}
	}
	if strings.Contains(all, "[INFO]") {
		t.Errorf("log lines on the terminal: they belong in the log file")
	}
	m.run("send-keys", "-t", "cli", "C-c")
	if code := waitExit(t, m, exitFile); code != "0" {
		t.Fatalf("exit code after Ctrl-C: %s\n%s", code, full())
	}
	if !strings.Contains(full(), "Stopped and removed ") {
		t.Errorf("no cleanup message:\n%s", full())
	}
	requireEmpty(t, tmp)
}

// TestDemoOffTerminal runs the demo with its output in files: log lines on
// stderr, the narration and summary on stdout, exit 0 when everything
// matched, and nothing left in the temporary directory.
func TestDemoOffTerminal(t *testing.T) {
	tmp := demoTempDir(t)
	cmd := exec.Command(reshardBinary(t), "demo", "--orders", "50000", "--port", "0")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), lastLines(stderr.String(), 40))
	}
	out := stdout.String()
	for _, want := range []string{"admin=> RESHARD shop shop_sharded all_tables;", "admin=> VERIFY", "orders     match",
		"Summary", "orders moved between shards", "own check", "CUTOVER", "Stopped and removed",
		"VERIFY while writing: every table matches at one consistent point"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(stderr.String(), "[INFO]  reshard.commands") {
		t.Errorf("no log lines on stderr:\n%s", lastLines(stderr.String(), 20))
	}
	requireEmpty(t, tmp)
}

// waitExit waits for the exit code the tmux script writes to exitFile.
func waitExit(t *testing.T, m *tmux, exitFile string) string {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if b, err := os.ReadFile(exitFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("the demo did not stop after Ctrl-C:\n%s", m.run("capture-pane", "-p", "-t", "cli"))
	return ""
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestDemoInterrupted: Ctrl-C while the demo reshards stops it at once,
// with a non-zero exit, and still removes everything it made.
func TestDemoInterrupted(t *testing.T) {
	tmp, m, exitFile := startDemoInTmux(t)
	m.waitScreen("the RESHARD", func(s string) bool { return strings.Contains(s, "task 1: ") })
	m.run("send-keys", "-t", "cli", "C-c")
	if code := waitExit(t, m, exitFile); code == "0" {
		t.Fatalf("exit code 0 after an interrupted demo\n%s", m.run("capture-pane", "-p", "-t", "cli"))
	}
	if screen := m.run("capture-pane", "-p", "-t", "cli", "-S", "-400"); !strings.Contains(screen, "demo interrupted before it finished") {
		t.Errorf("no word of the interruption:\n%s", screen)
	}
	requireEmpty(t, tmp)
}
