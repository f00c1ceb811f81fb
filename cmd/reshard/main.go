// Command reshard is an online PostgreSQL resharding sidecar. It runs the
// admin server (the default) or one engine command from the command line.
// main only parses flags and calls the same packages the admin server uses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cli/adminclient"
	"github.com/reshard/reshard/cli/display"
	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/metrics"
	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/wire"
)

// Exit codes (documented in docs/cli.md).
const (
	exitOK          = 0   // the command succeeded
	exitError       = 1   // the command failed
	exitUsage       = 2   // bad usage or a bad configuration file
	exitMismatch    = 3   // verify found tables that differ
	exitInterrupted = 130 // stopped by SIGINT (128 + 2)
	exitTerminated  = 143 // stopped by SIGTERM (128 + 15)
)

const usageText = `reshard: online PostgreSQL resharding

Usage:
  reshard [global flags] <command> [flags]

Commands:
  serve         run the admin server (PostgreSQL wire protocol; the default)
  schema-sync   copy the schema: --from-database A --to-database B --publication P
                [--dry-run] [--ignore-errors] [--data-sync-complete] [--cutover]
  data-sync     copy rows and stream changes: --from-database A --to-database B
                --publication P [--replication-slot S] [--replicate-only] [--sync-only]
  verify        prove the destination equals the source: --from-database A
                --to-database B --publication P
  cutover       cut a task of the running admin server over: --task ID
                [--admin-url URL]
  abort         end a migration of the running admin server for good and
                remove its slots, origins and state: --task ID [--with-data]
                [--admin-url URL]
  demo          start throwaway PostgreSQL instances and a resharding demo

Global flags (before or after the command):
  --config F      pgdog.toml path (default "pgdog.toml")
  --users F       users.toml path (default "users.toml")
  --log-level L   trace, debug, info, warn, error (default "info")
  --log-json      log JSON lines instead of text
  --json          schema-sync, data-sync, verify, cutover, abort: print one JSON
                  object per event on stdout (see docs/cli.md)

On a terminal, data-sync, schema-sync and verify draw live progress on
stderr; otherwise they log one line per event.
Exit codes: 0 success, 1 failure, 2 usage or configuration error,
3 verify found differences, 130 interrupted (SIGINT), 143 terminated (SIGTERM).

Run 'reshard <command> --help' for a command's flags.
`

// globals are the flags every command accepts.
type globals struct {
	config, users, logLevel string
	logJSON, json           bool
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.config, "config", "pgdog.toml", "pgdog.toml path")
	fs.StringVar(&g.users, "users", "users.toml", "users.toml path")
	fs.StringVar(&g.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	fs.BoolVar(&g.logJSON, "log-json", false, "log JSON lines")
	fs.BoolVar(&g.json, "json", false, "print one JSON object per event on stdout")
}

func (g *globals) logger(out io.Writer) (hclog.Logger, error) {
	level := hclog.LevelFromString(g.logLevel)
	if level == hclog.NoLevel {
		return nil, fmt.Errorf("--log-level %q is not one of trace, debug, info, warn, error", g.logLevel)
	}
	return hclog.New(&hclog.LoggerOptions{Name: "reshard", Level: level, JSONFormat: g.logJSON, Output: out}), nil
}

func main() {
	// RESHARD_HEAPPROFILE=file writes a heap profile at the heap's peak
	// (bench-stream-memory: where the memory goes).
	if p := os.Getenv("RESHARD_HEAPPROFILE"); p != "" {
		stop := watchHeap(p)
		code := run(os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	// RESHARD_CPUPROFILE=file writes a CPU profile (used by the benchmarks
	// to show where the time goes).
	if p := os.Getenv("RESHARD_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			if err := pprof.StartCPUProfile(f); err == nil {
				code := run(os.Args[1:], os.Stdout, os.Stderr)
				pprof.StopCPUProfile()
				f.Close()
				os.Exit(code)
			}
		}
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var g globals
	top := flag.NewFlagSet("reshard", flag.ContinueOnError)
	top.SetOutput(stderr)
	top.Usage = func() {}
	g.register(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usageText)
			return exitOK
		}
		fmt.Fprint(stderr, "\n"+usageText)
		return exitUsage
	}
	rest := top.Args()
	name := "serve"
	if len(rest) > 0 {
		name, rest = rest[0], rest[1:]
	}
	if name == "help" {
		fmt.Fprint(stdout, usageText)
		return exitOK
	}
	cmd, ok := subcommands[name]
	if !ok {
		fmt.Fprintf(stderr, "reshard: unknown command %q\n\n%s", name, usageText)
		return exitUsage
	}
	fs := flag.NewFlagSet("reshard "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	// Global flags given before the command are the defaults here.
	before := g
	g.register(fs)
	_ = fs.Set("config", before.config)
	_ = fs.Set("users", before.users)
	_ = fs.Set("log-level", before.logLevel)
	if before.logJSON {
		_ = fs.Set("log-json", "true")
	}
	if before.json {
		_ = fs.Set("json", "true")
	}
	exec := cmd(fs)
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "reshard %s: unexpected argument %q\n", name, fs.Arg(0))
		return exitUsage
	}
	if g.json && (name == "serve" || name == "demo") {
		fmt.Fprintf(stderr, "reshard %s: --json applies to schema-sync, data-sync, verify and cutover\n", name)
		return exitUsage
	}
	logOut := display.NewWriter(stderr)
	log, err := g.logger(logOut)
	if err != nil {
		fmt.Fprintln(stderr, "reshard:", err)
		return exitUsage
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sig signalSeen
	sig.watch(ctx, cancel)
	e := &env{globals: g, name: name, log: log, logOut: logOut, stdout: stdout, stderr: stderr}
	err = exec(ctx, e)
	code := exitCode(err)
	if s := sig.get(); s != nil && name != "serve" && name != "demo" {
		// serve and demo end on a signal by design; the engine commands
		// were cut short.
		code = exitInterrupted
		if s == syscall.SIGTERM {
			code = exitTerminated
		}
	}
	e.finish(err, code)
	return code
}

// exitCode maps a command's error to the process exit code.
func exitCode(err error) int {
	var ue usageError
	var ce *catalog.ConfigError
	var ces catalog.ConfigErrors
	var me mismatchError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue), errors.As(err, &ce), errors.As(err, &ces):
		return exitUsage
	case errors.As(err, &me):
		return exitMismatch
	}
	return exitError
}

// signalSeen records the first SIGINT or SIGTERM and cancels the command.
type signalSeen struct {
	mu  sync.Mutex
	sig os.Signal
}

func (s *signalSeen) watch(ctx context.Context, cancel context.CancelFunc) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		defer signal.Stop(ch)
		select {
		case sig := <-ch:
			s.mu.Lock()
			s.sig = sig
			s.mu.Unlock()
			cancel()
		case <-ctx.Done():
		}
	}()
}

func (s *signalSeen) get() os.Signal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sig
}

// env is what a subcommand runs with.
type env struct {
	globals
	// name is the subcommand.
	name string
	log  hclog.Logger
	// logOut is where log lines go; the progress display redirects it.
	logOut         *display.Writer
	stdout, stderr io.Writer
	// result is the command's result set, printed by finish.
	result *commands.Result
	// events is the JSON event output (--json), or nil.
	events *display.JSON
}

// usageError is a flag problem found after parsing (a missing required flag).
type usageError string

func (e usageError) Error() string { return string(e) }

// mismatchError is a verify that found tables that differ.
type mismatchError struct{ error }

func (e mismatchError) Unwrap() error { return e.error }

type subcommand func(fs *flag.FlagSet) func(ctx context.Context, e *env) error

var subcommands = map[string]subcommand{
	"serve":       serveCmd,
	"schema-sync": schemaSyncCmd,
	"data-sync":   dataSyncCmd,
	"verify":      verifyCmd,
	"cutover":     cutoverCmd,
	"abort":       abortCmd,
	"demo":        demoCmd,
}

// load reads and validates the configuration files.
func (e *env) load() (*catalog.Catalog, error) {
	cat, err := catalog.Load(e.config, e.users)
	if err == nil {
		setMemoryLimit(cat)
	}
	return cat, err
}

func serveCmd(fs *flag.FlagSet) func(ctx context.Context, e *env) error {
	return func(ctx context.Context, e *env) error {
		cat, err := e.load()
		if err != nil {
			return err
		}
		if err := cat.CheckListen(); err != nil {
			return err
		}
		return serve(ctx, cat, e.log)
	}
}

// serve runs the admin server until ctx ends.
func serve(ctx context.Context, cat *catalog.Catalog, log hclog.Logger) error {
	if cat.Config.Admin.Password == "" {
		return &catalog.ConfigError{File: cat.Config.Path, Key: "admin.password", Msg: "set an admin password: the admin server does not accept logins without one"}
	}
	exec := commands.NewExecutor(cat, log)
	exec.RecoverTasks(ctx)
	wctx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { defer close(watched); exec.WatchSlots(wctx) }()
	defer func() { stopWatch(); <-watched }()
	if port := cat.Config.General.OpenMetricsPort; port != 0 {
		ms, err := metrics.Listen(cat.Config.General.Host, port, metrics.NewRegistry(exec.Registry, exec.Tasks), log)
		if err != nil {
			return err
		}
		mctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := ms.Serve(mctx); err != nil {
				log.Error("metrics server stopped", "error", err)
			}
		}()
		defer func() { stop(); <-done }()
	}
	srv, err := wire.New(cat, exec, log)
	if err != nil {
		return err
	}
	// Running tasks stop cleanly with the server, as soon as it is told to
	// stop (an admin connection may be waiting on one, such as a CUTOVER);
	// their state is kept, so the next start continues them.
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		exec.Tasks.StopAll(sctx)
	}()
	err = srv.Serve(ctx)
	<-stopped
	return err
}

// runCommand runs one admin command through the same executor the admin
// server uses, with the progress display (starting in phase), and keeps
// its result for finish to print.
func runCommand(ctx context.Context, e *env, cmd commands.Command, phase string) error {
	cat, err := e.load()
	if err != nil {
		return err
	}
	exec := commands.NewExecutor(cat, e.log)
	defer e.watch(ctx, exec.Registry, phase)()
	res, err := exec.Execute(ctx, cmd)
	e.result = res
	return err
}

// watch shows reg's progress (bars, JSON events or nothing, see sink)
// until the returned function is called.
func (e *env) watch(ctx context.Context, reg *progress.Registry, phase string) (stop func()) {
	sink := e.sink()
	if sink == nil {
		return func() {}
	}
	w := display.NewWatcher(reg, sink, 200*time.Millisecond, time.Second)
	w.Start(ctx, phase)
	return w.Stop
}

func required(fs *flag.FlagSet, names ...string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var missing []string
	for _, n := range names {
		if !set[n] {
			missing = append(missing, "--"+n)
		}
	}
	if len(missing) > 0 {
		return usageError("missing required flag " + strings.Join(missing, ", "))
	}
	return nil
}

type routeFlags struct{ from, to, publication string }

func (r *routeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.from, "from-database", "", "source database (cluster name in pgdog.toml) (required)")
	fs.StringVar(&r.to, "to-database", "", "destination database (required)")
	fs.StringVar(&r.publication, "publication", "", "publication on the source (required)")
}

func (r *routeFlags) route() commands.Route {
	return commands.Route{Source: r.from, Destination: r.to, Publication: r.publication}
}

func schemaSyncCmd(fs *flag.FlagSet) func(ctx context.Context, e *env) error {
	var r routeFlags
	r.register(fs)
	dryRun := fs.Bool("dry-run", false, "print the SQL each phase would run on each shard; change nothing")
	ignore := fs.Bool("ignore-errors", false, "continue past failing statements and list them at the end")
	post := fs.Bool("data-sync-complete", false, "run the POST phase (after the data copy)")
	cutover := fs.Bool("cutover", false, "run the CUTOVER phase")
	return func(ctx context.Context, e *env) error {
		if err := required(fs, "from-database", "to-database", "publication"); err != nil {
			return err
		}
		if *post && *cutover {
			return usageError("--data-sync-complete and --cutover are different phases: give one")
		}
		phase := commands.PhasePre
		switch {
		case *post:
			phase = commands.PhasePost
		case *cutover:
			phase = commands.PhaseCutover
		}
		cmd := commands.SchemaSync{Phase: phase, Route: r.route(), DryRun: *dryRun, IgnoreErrors: *ignore}
		if !*dryRun {
			return runCommand(ctx, e, cmd, "schema_"+strings.ToLower(string(phase)))
		}
		if err := runCommand(ctx, e, cmd, "schema_dry_run"); err != nil || e.json {
			return err
		}
		printDryRun(e.stdout, cmd, e.result)
		e.result = nil
		return nil
	}
}

func dataSyncCmd(fs *flag.FlagSet) func(ctx context.Context, e *env) error {
	var r routeFlags
	r.register(fs)
	slot := fs.String("replication-slot", "", "replication slot to use (created if missing)")
	replicateOnly := fs.Bool("replicate-only", false, "do not copy; stream changes from the slot")
	syncOnly := fs.Bool("sync-only", false, "copy the data and exit; do not stream")
	return func(ctx context.Context, e *env) error {
		if err := required(fs, "from-database", "to-database", "publication"); err != nil {
			return err
		}
		if *replicateOnly && *syncOnly {
			return usageError("--replicate-only and --sync-only exclude each other")
		}
		var err error
		if *replicateOnly {
			if *slot == "" {
				return usageError("--replicate-only needs --replication-slot")
			}
			err = runCommand(ctx, e, commands.Replicate{Route: r.route(), Slot: *slot, Foreground: true}, display.PhaseStream)
		} else {
			err = runCommand(ctx, e, commands.CopyData{Route: r.route(), Slot: *slot, Foreground: true, SyncOnly: *syncOnly}, display.PhasePrepare)
		}
		var in *commands.Interrupted
		if errors.As(err, &in) {
			// Say how to continue: the same command with the slot.
			args := []string{"reshard", "--config", e.config, "--users", e.users, "data-sync", "--from-database", r.from,
				"--to-database", r.to, "--publication", r.publication, "--replication-slot", in.Slot}
			switch {
			case in.Phase == "stream":
				args = append(args, "--replicate-only")
			case *syncOnly:
				args = append(args, "--sync-only")
			}
			return interruptedError{in, shellJoin(args)}
		}
		return err
	}
}

// interruptedError is a data-sync a signal stopped, with the command that
// continues it.
type interruptedError struct {
	*commands.Interrupted
	continueWith string
}

func (e interruptedError) Error() string {
	return e.Interrupted.Error() + "\ncontinue with: " + e.continueWith
}

func (e interruptedError) Unwrap() error { return e.Interrupted }

// shellJoin joins args into a command line a POSIX shell reads back.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		safe := a != ""
		for _, r := range a {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:@,+", r)) {
				safe = false
				break
			}
		}
		if safe {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}

func verifyCmd(fs *flag.FlagSet) func(ctx context.Context, e *env) error {
	var r routeFlags
	r.register(fs)
	return func(ctx context.Context, e *env) error {
		if err := required(fs, "from-database", "to-database", "publication"); err != nil {
			return err
		}
		err := runCommand(ctx, e, commands.Verify{Route: r.route(), Foreground: true}, "verify")
		if err != nil && e.result != nil {
			// The executor answers both a result and an error only when
			// tables differ.
			return mismatchError{err}
		}
		return err
	}
}

func cutoverCmd(fs *flag.FlagSet) func(ctx context.Context, e *env) error {
	task := fs.String("task", "", "task id, as SHOW TASKS lists it (required)")
	url := fs.String("admin-url", "", "admin server URL (default: [general] host and port, [admin] user, password and name of --config)")
	return func(ctx context.Context, e *env) error {
		if err := required(fs, "task"); err != nil {
			return err
		}
		return adminCommand(ctx, e, *url, commands.Cutover{Task: *task}, "cutover")
	}
}

func abortCmd(fs *flag.FlagSet) func(ctx context.Context, e *env) error {
	task := fs.String("task", "", "task id, as SHOW TASKS lists it (required)")
	withData := fs.Bool("with-data", false, "also empty the publication's tables on the shards (refused after a cutover)")
	url := fs.String("admin-url", "", "admin server URL (default: [general] host and port, [admin] user, password and name of --config)")
	return func(ctx context.Context, e *env) error {
		if err := required(fs, "task"); err != nil {
			return err
		}
		return adminCommand(ctx, e, *url, commands.AbortTask{Task: *task, WithData: *withData}, "abort")
	}
}

// adminCommand runs cmd on the running admin server (tasks live in the
// `reshard serve` process), with its progress shown as phase.
func adminCommand(ctx context.Context, e *env, url string, cmd commands.Command, phase string) error {
	if url == "" {
		cat, err := e.load()
		if err != nil {
			return err
		}
		url = adminclient.URL(cat.Config)
	}
	c, err := adminclient.Dial(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close()
	reg := progress.NewRegistry()
	stopMirror, err := c.Mirror(ctx, reg, 500*time.Millisecond)
	if err != nil {
		return err
	}
	stopWatch := e.watch(ctx, reg, phase)
	res, err := c.Run(ctx, cmd)
	stopMirror()
	stopWatch()
	e.result = res
	return err
}
