// Package testkit is support code shared by reshard's integration and fault
// suites: building and running the reshard binary as a separate process (so
// it can be killed with SIGKILL), and a TCP proxy that injects network faults.
package testkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// RaceEnv names the environment variable that, set to 1, makes
// BuildReshard build the binary with the race detector: a data race in
// reshard then ends it with exit status 66 and "WARNING: DATA RACE" in its
// output.
const RaceEnv = "RESHARD_TEST_RACE"

// BuildReshard builds the reshard binary into the test's temporary
// directory and returns its path (with -race when RaceEnv is 1).
func BuildReshard(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "reshard")
	args := []string{"build", "-o", bin}
	if os.Getenv(RaceEnv) == "1" {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "github.com/reshard/reshard/cmd/reshard")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build reshard: %v\n%s", err, out)
	}
	return bin
}

// Process is a running reshard command.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	out  Buffer
}

// Start runs bin with args; its stdout and stderr are collected.
func Start(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	return StartEnv(t, bin, nil, args...)
}

// StartEnv is Start with variables (NAME=value) added to the environment.
func StartEnv(t testing.TB, bin string, env []string, args ...string) *Process {
	t.Helper()
	p := &Process{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	if len(env) > 0 {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	return p
}

// Output is what the process printed so far.
func (p *Process) Output() string {
	return p.out.String()
}

// WaitOutput waits up to timeout until cond holds of the process's output,
// checking it each time the process writes (not by polling). It also
// returns when the process ends; ok tells whether cond held.
func (p *Process) WaitOutput(timeout time.Duration, cond func(out string) bool) (ok bool) {
	return p.out.WaitFor(timeout, p.done, cond)
}

// Exited tells whether the process has ended, and its error if so.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Wait waits up to timeout for the process to end. ok is false on timeout.
func (p *Process) Wait(timeout time.Duration) (err error, ok bool) {
	select {
	case <-p.done:
		return p.err, true
	case <-time.After(timeout):
		return nil, false
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (p *Process) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM, waits up to timeout, then kills.
func (p *Process) Stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err, ok := p.Wait(timeout); ok {
		return err
	}
	p.Kill()
	return p.err
}
