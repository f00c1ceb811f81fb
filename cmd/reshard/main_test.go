package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as the reshard binary in subprocesses.
func TestMain(m *testing.M) {
	if os.Getenv("RESHARD_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	code := m.Run()
	if shared.env != nil {
		shared.env.stop()
	}
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

const baseConfig = `[general]
host = "127.0.0.1"
port = %d

[admin]
password = "pw"

[[databases]]
name = "prod"
host = "127.0.0.1"

[[databases]]
name = "prod_sharded"
host = "127.0.0.1"
shard = 0

[[databases]]
name = "prod_sharded"
host = "127.0.0.1"
shard = 1
`

const baseUsers = `[[users]]
name = "a"
database = "prod"
password = "x"
schema_admin = true

[[users]]
name = "b"
database = "prod_sharded"
password = "y"
schema_admin = true
`

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func files(t *testing.T, cfg, users string) (string, string) {
	dir := t.TempDir()
	c, u := filepath.Join(dir, "pgdog.toml"), filepath.Join(dir, "users.toml")
	if err := os.WriteFile(c, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(u, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	return c, u
}

func TestHelpListsCommands(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, c := range []string{"serve", "schema-sync", "data-sync", "verify", "cutover", "demo"} {
		if !strings.Contains(out.String(), "\n  "+c+" ") {
			t.Errorf("--help does not list %s", c)
		}
	}
	if code := run([]string{"frobnicate"}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: exit %d, %s", code, errb.String())
	}
}

// TestServeRejectsBadConfig: a bad config fails at start, naming file, key and line.
func TestServeRejectsBadConfig(t *testing.T) {
	port := freePort(t)
	good := fmt.Sprintf(baseConfig, port)
	cases := []struct {
		name, cfg, want string
	}{
		{"unknown key", strings.Replace(good, `password = "pw"`, "password = \"pw\"\npasword = \"typo\"", 1), "pgdog.toml:7: admin.pasword: unknown key"},
		{"duplicate primary", strings.Replace(good, "shard = 1\n", "shard = 0\n", 1), "pgdog.toml:17: databases[2].role"},
		{"shard gap", strings.Replace(good, "shard = 1\n", "shard = 2\n", 1), "no shard 1"},
		{"wrong type", strings.Replace(good, `host = "127.0.0.1"`, "host = 127", 1), "pgdog.toml:2: general.host"},
		{"bad data type", good + "\n[[sharded_tables]]\ndatabase = \"prod_sharded\"\ncolumn = \"id\"\ndata_type = \"float\"\n", `sharded_tables[0].data_type: data type "float" is not supported`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, users := files(t, c.cfg, baseUsers)
			var out, errb bytes.Buffer
			code := run([]string{"--config", cfg, "--users", users, "serve"}, &out, &errb)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %s", code, exitUsage, errb.String())
			}
			if !strings.Contains(errb.String(), c.want) || !strings.Contains(errb.String(), cfg) {
				t.Fatalf("stderr does not name %q in %s:\n%s", c.want, cfg, errb.String())
			}
		})
	}
	// The duplicate-primary case names the role of the second primary.
	cfg, users := files(t, strings.Replace(good, "shard = 1\n", "shard = 0\n", 1), baseUsers)
	var out, errb bytes.Buffer
	run([]string{"--config", cfg, "--users", users}, &out, &errb)
	if !strings.Contains(errb.String(), "more than one primary") {
		t.Fatalf("duplicate primary: %s", errb.String())
	}
	// A users.toml problem names users.toml.
	cfg, users = files(t, good, strings.Replace(baseUsers, "schema_admin = true\n\n", "schema_admin = true\nadmin = true\n\n", 1))
	errb.Reset()
	run([]string{"--config", cfg, "--users", users}, &out, &errb)
	if !strings.Contains(errb.String(), users+":6: users[0].admin: unknown key") {
		t.Fatalf("users.toml error: %s", errb.String())
	}
	// A busy listen port.
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg, users = files(t, good, baseUsers)
	errb.Reset()
	if code := run([]string{"--config", cfg, "--users", users}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "general.port: cannot listen") {
		t.Fatalf("busy port: exit %d %s", code, errb.String())
	}
}

// TestServeStopsOnSignal runs the binary, checks it listens, sends SIGINT
// and SIGTERM, and expects a clean exit.
func TestServeStopsOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		port := freePort(t)
		cfg, users := files(t, fmt.Sprintf(baseConfig, port), baseUsers)
		cmd := exec.Command(os.Args[0], "--config", cfg, "--users", users, "serve")
		cmd.Env = append(os.Environ(), "RESHARD_TEST_MAIN=1")
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("server never listened: %s", errb.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = cmd.Process.Signal(sig)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%v: exit %v: %s", sig, err, errb.String())
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("%v: server did not stop", sig)
		}
		if !strings.Contains(errb.String(), "admin server shutting down") {
			t.Fatalf("%v: no shutdown log: %s", sig, errb.String())
		}
	}
}

func TestCLIUsesTheSameEngine(t *testing.T) {
	cfg, users := files(t, fmt.Sprintf(baseConfig, freePort(t)), baseUsers)
	var out, errb bytes.Buffer
	code := run([]string{"--config", cfg, "--users", users, "schema-sync", "--from-database", "prod", "--to-database", "nope", "--publication", "p"}, &out, &errb)
	if code != exitError || !strings.Contains(errb.String(), `database "nope" is not configured (SQLSTATE 3D000)`) {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	errb.Reset()
	code = run([]string{"data-sync", "--config", cfg, "--users", users, "--from-database", "prod", "--to-database", "prod_sharded"}, &out, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), "missing required flag --publication") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}

func TestLogFlags(t *testing.T) {
	cfg, users := files(t, strings.Replace(fmt.Sprintf(baseConfig, freePort(t)), "[admin]", "[admin]\nbogus = 1", 1), baseUsers)
	var out, errb bytes.Buffer
	code := run([]string{"--log-json", "--config", cfg, "--users", users, "serve"}, &out, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), `"@level":"error"`) || !strings.Contains(errb.String(), "admin.bogus: unknown key") {
		t.Fatalf("--log-json: exit %d\n%s", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"serve", "--log-level", "loud"}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), `--log-level "loud"`) {
		t.Fatalf("bad --log-level: exit %d %s", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"--json", "serve"}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "--json applies to") {
		t.Fatalf("serve --json: exit %d %s", code, errb.String())
	}
}
