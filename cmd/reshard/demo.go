package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cli/display"
	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/metrics"
	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/wire"
)

// demoSchema is the sample shop: customers and their orders are sharded by
// customer, countries is an omni table copied to every shard.
const demoSchema = `
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE customers (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL,
  country text REFERENCES countries(code), created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers(id),
  total numeric(12,2) NOT NULL, status text NOT NULL DEFAULT 'new', created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX orders_customer_idx ON orders (customer_id);
INSERT INTO countries VALUES ('NL','Netherlands'),('DE','Germany'),('FR','France'),('US','United States'),('JP','Japan');
INSERT INTO customers (email, name, country)
  SELECT 'customer' || g || '@example.com', 'Customer ' || g, (ARRAY['NL','DE','FR','US','JP'])[1 + g %% 5]
  FROM generate_series(1, %[1]d) g;
INSERT INTO orders (customer_id, total, status)
  SELECT 1 + (g::bigint * 7919) %% %[1]d, round((random() * 500)::numeric, 2), (ARRAY['new','paid','shipped'])[1 + g %% 3]
  FROM generate_series(1, %[2]d) g;
ANALYZE;
CREATE PUBLICATION all_tables FOR ALL TABLES;
`

// demoTables are the shop's tables, in the order the summary lists them.
var demoTables = []string{"customers", "orders", "countries"}

// demoFlags are the demo's options.
type demoFlags struct {
	exit              bool
	port              int
	customers, orders int
	rate              int
	logFile           string
}

func demoCmd(fs *flag.FlagSet) func(ctx context.Context, e *env) error {
	var f demoFlags
	fs.BoolVar(&f.exit, "exit", false, "stop after the demo instead of waiting for Ctrl-C")
	fs.IntVar(&f.port, "port", 6432, "admin server port (a free one is picked if it is taken)")
	fs.IntVar(&f.customers, "customers", 20000, "customers in the sample shop")
	fs.IntVar(&f.orders, "orders", 1000000, "orders in the sample shop")
	fs.IntVar(&f.rate, "rate", 300, "writes per second the application makes while resharding")
	fs.StringVar(&f.logFile, "log-file", "", "write the log here and keep it (default: a file in the demo's temporary directory, removed at the end)")
	return func(ctx context.Context, e *env) error {
		if f.customers < 10 || f.orders < 1 || f.rate < 1 {
			return usageError("--customers must be at least 10, --orders and --rate at least 1")
		}
		d := &demo{env: e, flags: f, tty: isTerminal(e.stderr)}
		err := d.run(ctx)
		if err != nil && ctx.Err() != nil {
			err = errors.New("demo interrupted before it finished")
		}
		if err != nil && d.logFile != nil && f.logFile == "" {
			// The log goes with the demo's directory: show its end.
			if b, rerr := os.ReadFile(d.logPath); rerr == nil {
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				fmt.Fprintf(e.stderr, "\nLast lines of the log:\n%s\n\n", strings.Join(lines[max(0, len(lines)-30):], "\n"))
			}
		}
		d.cleanup()
		return err
	}
}

// demo is one run of `reshard demo`: throwaway PostgreSQL instances, the
// admin server on them, an application writing to the source, and the
// resharding driven through the admin server as an operator would.
type demo struct {
	env   *env
	flags demoFlags
	// tty: bars on the terminal, the log in a file.
	tty bool

	dir     string // configuration files and the log
	logPath string
	logFile *os.File
	log     hclog.Logger
	cluster *pgtest.Cluster
	src     *pgtest.Instance
	shards  []*pgtest.Instance
	exec    *commands.Executor
	stopSrv func()
	watch   *display.Watcher
	dsn     string
	port    int
	metrics string

	mu           sync.Mutex // guards out while bars are drawn
	out          io.Writer  // narration
	task         string     // the RESHARD task
	writer       *demoWriter
	summary      []string
	summaryTable strings.Builder
	cleanedUp    bool
}

// say narrates one line (above the bars on a terminal).
func (d *demo) say(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, format+"\n", args...)
}

func (d *demo) run(ctx context.Context) error {
	e := d.env
	d.out = e.stdout
	var err error
	if d.dir, err = os.MkdirTemp("", "reshard-demo-"); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	// The log: lines on stderr off a terminal; on a terminal the bars take
	// the screen and the log goes to a file.
	d.log = e.log
	if d.tty {
		d.logPath = d.flags.logFile
		if d.logPath == "" {
			d.logPath = filepath.Join(d.dir, "reshard-demo.log")
		}
		if d.logFile, err = os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			return fmt.Errorf("demo: log file: %w", err)
		}
		d.log = hclog.New(&hclog.LoggerOptions{Name: "reshard", Level: hclog.LevelFromString(e.logLevel), JSONFormat: e.logJSON, Output: d.logFile})
		d.say("reshard demo: the log goes to %s", d.logPath)
	}
	d.say("Starting throwaway PostgreSQL 15 instances: a source and two shards")
	if d.cluster, err = pgtest.Start(ctx, 3, pgtest.Options{}); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	d.src, d.shards = d.cluster.Instances[0], d.cluster.Instances[1:]
	for _, inst := range d.cluster.Instances {
		if err := inst.CreateDatabase(ctx, "shop"); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	d.say("Loading the sample shop on the source: %s customers, %s orders, 5 countries", thousands(d.flags.customers), thousands(d.flags.orders))
	began := time.Now()
	if err := d.src.Exec(ctx, "shop", fmt.Sprintf(demoSchema, d.flags.customers, d.flags.orders)); err != nil {
		return fmt.Errorf("demo: load sample data: %w", err)
	}
	d.log.Info("sample shop loaded", "customers", d.flags.customers, "orders", d.flags.orders, "elapsed", time.Since(began))
	if err := d.startServer(ctx); err != nil {
		return err
	}
	d.say("Admin server: psql %q   metrics: %s", d.dsn, d.metrics)

	// From here on the engine's progress is drawn on a terminal.
	if d.tty {
		term := display.NewTerminal(e.stderr, "demo", e.logOut)
		d.out = e.logOut
		d.writer = newDemoWriter(d.flags)
		term.Status(d.writer.status)
		d.watch = display.NewWatcher(d.exec.Registry, term, 200*time.Millisecond, time.Second)
		d.watch.Start(ctx, display.PhasePrepare)
	} else {
		d.writer = newDemoWriter(d.flags)
	}
	err = d.reshard(ctx)
	if d.watch != nil {
		d.watch.Stop()
		d.watch = nil
		d.out = e.stdout
	}
	if err != nil {
		return err
	}
	d.printSummary()
	if !d.flags.exit && isTerminal(os.Stdin) {
		fmt.Fprintf(e.stdout, "\nThe admin server is up (the shards stream back into the old database):\n\n  psql %q\n\n"+
			"  SHOW TASKS; SHOW TABLE_COPIES; SHOW REPLICATION_SLOTS; SHOW VERIFY; SHOW DATABASES;\n\n"+
			"Metrics: %s   Source: %s   Shards: %s, %s\n", d.dsn, d.metrics, d.src.DSN("shop"), d.shards[0].DSN("shop"), d.shards[1].DSN("shop"))
		if d.logPath != "" {
			fmt.Fprintf(e.stdout, "Log: %s\n", d.logPath)
		}
		fmt.Fprintln(e.stdout, "\nPress Ctrl-C to stop and remove everything.")
		<-ctx.Done()
	}
	return nil
}

// startServer writes the configuration and starts the admin server and
// the metrics endpoint in this process.
func (d *demo) startServer(ctx context.Context) error {
	d.port = d.flags.port
	if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(d.port))); err != nil {
		d.port = 0
	} else {
		l.Close()
	}
	if d.port == 0 {
		p, err := freeLoopbackPort()
		if err != nil {
			return err
		}
		d.port = p
	}
	metricsPort, err := freeLoopbackPort()
	if err != nil {
		return err
	}
	const password = "demo"
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "[general]\nhost = \"127.0.0.1\"\nport = %d\nopenmetrics_port = %d\n\n[admin]\npassword = %q\n\n", d.port, metricsPort, password)
	fmt.Fprintf(&cfg, "[[databases]]\nname = \"shop\"\nhost = %q\nport = %d\n\n", d.src.Host, d.src.Port)
	for k, s := range d.shards {
		fmt.Fprintf(&cfg, "[[databases]]\nname = \"shop_sharded\"\nhost = %q\nport = %d\ndatabase_name = \"shop\"\nshard = %d\n\n", s.Host, s.Port, k)
	}
	cfg.WriteString("[[sharded_tables]]\ndatabase = \"shop_sharded\"\nname = \"customers\"\ncolumn = \"id\"\n\n" +
		"[[sharded_tables]]\ndatabase = \"shop_sharded\"\ncolumn = \"customer_id\"\n")
	var users strings.Builder
	for _, db := range []string{"shop", "shop_sharded"} {
		fmt.Fprintf(&users, "[[users]]\nname = %q\ndatabase = %q\npassword = %q\nschema_admin = true\n\n", pgtest.User, db, pgtest.Password)
	}
	cfgPath, usersPath := filepath.Join(d.dir, "pgdog.toml"), filepath.Join(d.dir, "users.toml")
	for path, body := range map[string]string{cfgPath: cfg.String(), usersPath: users.String()} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	cat, err := catalog.Load(cfgPath, usersPath)
	if err != nil {
		return err
	}
	d.exec = commands.NewExecutor(cat, d.log)
	srv, err := wire.New(cat, d.exec, d.log)
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	ms, err := metrics.Listen("127.0.0.1", metricsPort, metrics.NewRegistry(d.exec.Registry, d.exec.Tasks), d.log)
	if err != nil {
		return err
	}
	sctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = srv.Serve(sctx) }()
	go func() { defer wg.Done(); _ = ms.Serve(sctx) }()
	d.stopSrv = func() { stop(); wg.Wait() }
	d.dsn = fmt.Sprintf("postgres://admin:%s@127.0.0.1:%d/admin", password, d.port)
	d.metrics = "http://" + ms.Addr() + "/metrics"
	return nil
}

// cleanup removes everything the demo made: tasks, servers, PostgreSQL
// instances and their data, configuration files, the log (unless
// --log-file asked to keep it). A second Ctrl-C does not cut it short.
func (d *demo) cleanup() {
	if d.cleanedUp {
		return
	}
	d.cleanedUp = true
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	if d.watch != nil {
		d.watch.Stop()
		d.out = d.env.stdout
	}
	if d.writer != nil {
		d.writer.stop()
	}
	if d.exec != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		d.exec.Tasks.StopAll(sctx)
		cancel()
	}
	if d.stopSrv != nil {
		d.stopSrv()
	}
	var removed []string
	if d.cluster != nil {
		d.cluster.Stop()
		removed = append(removed, d.cluster.Root)
	}
	if d.logFile != nil {
		d.logFile.Close()
	}
	if d.dir != "" {
		if err := os.RemoveAll(d.dir); err == nil {
			removed = append(removed, d.dir)
		}
	}
	if len(removed) > 0 {
		fmt.Fprintf(d.env.stdout, "Stopped and removed %s\n", strings.Join(removed, ", "))
	}
}

// reshard drives the resharding through the admin server while the
// application writes: RESHARD, VERIFY at a consistent point with the
// writes going on, the demo's own comparison, CUTOVER and a write coming
// back from a shard.
func (d *demo) reshard(ctx context.Context) error {
	admin, err := connectAdmin(ctx, d.dsn)
	if err != nil {
		return err
	}
	defer admin.Close(context.Background())
	if err := d.writer.start(ctx, d.src, d.flags.customers); err != nil {
		return err
	}
	d.say("The application writes to the source all along: inserts, updates, deletes, and updates of customer_id that move orders between shards")

	d.say("admin=> RESHARD shop shop_sharded all_tables;")
	began := time.Now()
	id, err := adminScalar(ctx, admin, "RESHARD shop shop_sharded all_tables")
	if err != nil {
		return fmt.Errorf("demo: RESHARD: %w", err)
	}
	d.task = id
	last := ""
	for {
		task, err := demoTask(ctx, admin, id)
		if err != nil {
			return err
		}
		if task["state"] != last {
			last, _ = task["state"].(string)
			d.say("   task %s: %s (%s)", id, last, time.Since(began).Round(100*time.Millisecond))
		}
		if last == "streaming" {
			break
		}
		if last == "failed" || last == "stopped" || last == "done" {
			return fmt.Errorf("demo: RESHARD ended %s: %v", last, task["error"])
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	copied := time.Since(began)
	rows, _ := demoCopiedRows(ctx, admin)
	d.summary = append(d.summary, fmt.Sprintf("RESHARD: schema, %s rows copied and indexes built in %s while the application wrote; then streaming",
		thousands64(rows), copied.Round(100*time.Millisecond)))
	if d.watch != nil {
		d.watch.SetPhase(display.PhaseStream)
	}
	// Let the stream catch up on what was written during the copy.
	if err := d.waitLag(ctx, admin, 16<<20, 2*time.Minute); err != nil {
		return err
	}

	// VERIFY while the application keeps writing: one consistent point.
	if d.watch != nil {
		d.watch.SetPhase("verify")
	}
	d.say("admin=> VERIFY shop shop_sharded all_tables;   (the application keeps writing)")
	writesBefore := d.writer.total()
	res, err := d.verify(ctx, admin)
	if err != nil {
		return err
	}
	writesDuring := d.writer.total() - writesBefore
	switch {
	case res.held && len(res.mismatched) == 0:
		held := "no change arrived while the stream was held"
		if res.hold > 0 {
			held = "the stream held back changes for " + res.hold.Round(10*time.Microsecond).String()
		}
		d.summary = append(d.summary, fmt.Sprintf("VERIFY while writing: every table matches at one consistent point (%s rows compared; %s; %s writes meanwhile)",
			thousands64(res.compared), held, thousands64(writesDuring)))
	case res.held:
		return mismatchError{fmt.Errorf("demo: VERIFY found differences in %s", strings.Join(res.mismatched, ", "))}
	default:
		// VERIFY found no stream to hold at its point (the stream had
		// stopped): it compared the shards as they were, behind the source
		// by the stream's lag. Verify again with the writes paused.
		d.say("   VERIFY found no stream to hold at its consistent point: the shards were compared as they were, behind the source by the lag")
		d.say("   pausing the application until the stream has caught up, then verifying again")
		d.writer.stop()
		if err := d.waitCaughtUp(ctx, admin); err != nil {
			return err
		}
		d.say("admin=> VERIFY shop shop_sharded all_tables;   (the application paused)")
		res, err = d.verify(ctx, admin)
		if err != nil {
			return err
		}
		if len(res.mismatched) > 0 {
			return mismatchError{fmt.Errorf("demo: VERIFY found differences in %s", strings.Join(res.mismatched, ", "))}
		}
		d.summary = append(d.summary, fmt.Sprintf("VERIFY: every table matches (%s rows compared) with the application paused; while it wrote, VERIFY found no stream to hold at its point", thousands64(res.compared)))
	}

	// The writer stops; once the stream has applied everything, the demo
	// compares source and shards with its own SQL.
	d.writer.stop()
	if err := d.waitCaughtUp(ctx, admin); err != nil {
		return err
	}
	if err := d.compare(ctx); err != nil {
		return err
	}

	if d.watch != nil {
		d.watch.SetPhase("cutover")
	}
	d.say("admin=> CUTOVER %s;", id)
	cut, err := adminRows(ctx, admin, "CUTOVER "+id)
	if err != nil || len(cut) != 1 {
		return fmt.Errorf("demo: CUTOVER: %v", err)
	}
	d.say("   %s: the shards take the writes; the old database is read-only and follows them (slot %s)", cut[0]["state"], cut[0]["slot"])
	if err := d.shards[0].Exec(ctx, "shop", `UPDATE countries SET name = 'Nederland' WHERE code = 'NL'`); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		name, err := queryString(ctx, d.src, `SELECT name FROM countries WHERE code = 'NL'`)
		if err != nil {
			return err
		}
		if name == "Nederland" {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("demo: reverse replication did not carry a shard's write back to the old database in 30s")
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	d.summary = append(d.summary, "CUTOVER: the shards take the writes; a write on shard 0 reached the old database (rollback stays possible)",
		fmt.Sprintf("end to end: %s", time.Since(began).Round(100*time.Millisecond)))
	return nil
}

// verifyResult is one VERIFY as the demo reads it.
type verifyResult struct {
	mismatched []string
	compared   int64
	// held: the stream was held at the consistent point while the shards'
	// snapshots were taken, so writes going on do not show as differences.
	held bool
	hold time.Duration
}

// verify runs VERIFY through the admin server, waits for it and narrates
// its result per table.
func (d *demo) verify(ctx context.Context, admin *pgx.Conn) (verifyResult, error) {
	var res verifyResult
	id, err := adminScalar(ctx, admin, "VERIFY shop shop_sharded all_tables")
	if err != nil {
		return res, fmt.Errorf("demo: VERIFY: %w", err)
	}
	if err := waitTaskEnd(ctx, admin, id, "done", "failed"); err != nil {
		return res, err
	}
	rows, err := adminRows(ctx, admin, "SHOW VERIFY")
	if err != nil {
		return res, err
	}
	for _, r := range rows {
		if r["task"] != id {
			continue
		}
		shardRows := strings.Split(fmt.Sprint(r["shard_rows"]), ",")
		for i, n := range shardRows {
			v, _ := strconv.ParseInt(n, 10, 64)
			shardRows[i] = thousands64(v)
		}
		line := fmt.Sprintf("   %-10s %-8s source %s rows, shards %s", r["table"], r["status"], thousands64(asInt(r["source_rows"])), strings.Join(shardRows, " and "))
		if r["status"] != "match" {
			res.mismatched = append(res.mismatched, fmt.Sprint(r["table"]))
			line += fmt.Sprintf(" (missing %d, extra %d, different %d, misplaced %d)", asInt(r["missing"]), asInt(r["extra"]), asInt(r["different"]), asInt(r["misplaced"]))
		}
		d.say("%s", line)
		res.compared += asInt(r["rows_compared"])
	}
	// Whether the stream was held, and how long it held back changes, are
	// in the registry the admin server reads (a hold during which no change
	// arrived lasts zero).
	for _, v := range d.exec.Registry.Verify() {
		if v.Task == id && v.Held {
			res.held, res.hold = true, max(res.hold, v.Hold)
		}
	}
	return res, nil
}

// waitCaughtUp writes one more order on the source and waits until it is
// on a shard: the stream applies transactions in commit order, so every
// write before it is applied too. (The lag of an idle stream need not
// reach 0: WAL without changes to publish, such as autovacuum's, is not
// confirmed until a change follows it.)
func (d *demo) waitCaughtUp(ctx context.Context, admin *pgx.Conn) error {
	conn, err := d.src.Connect(ctx, "shop")
	if err != nil {
		return err
	}
	var id int64
	err = conn.QueryRow(ctx, `INSERT INTO orders (customer_id, total, status) VALUES (1, 0, 'marker') RETURNING id`).Scan(&id)
	conn.Close(context.Background())
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	d.writer.inserts.Add(1)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		found := 0
		for _, s := range d.shards {
			n, _, err := countAndHash(ctx, s, fmt.Sprintf(`SELECT count(*), '' FROM orders WHERE id = %d`, id))
			if err != nil {
				return err
			}
			found += int(n)
		}
		if found == 1 {
			return nil
		}
		if t, err := demoTask(ctx, admin, d.task); err != nil {
			return err
		} else if t["state"] != "streaming" {
			return fmt.Errorf("demo: RESHARD task %s is %v: %v", d.task, t["state"], t["error"])
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: the application's last write has not reached the shards after 2 minutes")
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitLag waits until every stream's lag is at most limit bytes.
func (d *demo) waitLag(ctx context.Context, admin *pgx.Conn, limit int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		slots, err := adminRows(ctx, admin, "SHOW REPLICATION_SLOTS")
		if err != nil {
			return err
		}
		worst := int64(-1)
		for _, s := range slots {
			worst = max(worst, asInt(s["lag_bytes"]))
		}
		if len(slots) > 0 && worst <= limit {
			return nil
		}
		if t, err := demoTask(ctx, admin, d.task); err != nil {
			return err
		} else if t["state"] != "streaming" {
			return fmt.Errorf("demo: RESHARD task %s is %v: %v", d.task, t["state"], t["error"])
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: the stream is still %d bytes behind after %s", worst, timeout)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// compare checks the shards against the source with the demo's own SQL:
// for each table the row count and the sum of every row's hash, sharded
// tables summed over the shards, the omni table on each shard.
func (d *demo) compare(ctx context.Context) error {
	const q = `SELECT count(*), coalesce(sum(hashtext(t::text)::numeric), 0)::text FROM %s t`
	for deadline := time.Now().Add(30 * time.Second); ; {
		var bad []string
		d.summaryTable.Reset()
		tw := tabwriter.NewWriter(&d.summaryTable, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "table\tsource\tshard 0\tshard 1\t")
		for _, table := range demoTables {
			var counts []int64
			var sums []string
			for _, inst := range append([]*pgtest.Instance{d.src}, d.shards...) {
				n, sum, err := countAndHash(ctx, inst, fmt.Sprintf(q, table))
				if err != nil {
					return err
				}
				counts, sums = append(counts, n), append(sums, sum)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", table, thousands64(counts[0]), thousands64(counts[1]), thousands64(counts[2]))
			if table == "countries" {
				if counts[1] != counts[0] || counts[2] != counts[0] || sums[1] != sums[0] || sums[2] != sums[0] {
					bad = append(bad, table)
				}
				continue
			}
			if counts[1]+counts[2] != counts[0] || !sumsEqual(sums[0], sums[1], sums[2]) {
				bad = append(bad, table)
			}
		}
		tw.Flush()
		if len(bad) == 0 {
			d.summary = append(d.summary, "own check: row counts and the sum of every row's hashtext equal on the source and the shards (countries whole on each)")
			return nil
		}
		if time.Now().After(deadline) {
			return mismatchError{fmt.Errorf("demo: source and shards differ in %s (counts or row hashes)", strings.Join(bad, ", "))}
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// printSummary prints what happened.
func (d *demo) printSummary() {
	w := d.env.stdout
	fmt.Fprintln(w, "\nSummary")
	fmt.Fprintf(w, "  writes by the application: %s\n", d.writer.summary())
	for _, s := range d.summary {
		fmt.Fprintf(w, "  %s\n", s)
	}
	fmt.Fprintf(w, "\n%s(customers and orders are split by customer; countries is copied to every shard)\n", indent(d.summaryTable.String(), "  "))
}

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}

// demoWriter is the application: connections to the source making a mix
// of writes at a steady rate.
type demoWriter struct {
	rate     int
	inserts  atomic.Int64
	updates  atomic.Int64
	deletes  atomic.Int64
	moves    atomic.Int64
	failures atomic.Int64
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  time.Time
	stopped  atomic.Int64 // unix nanos when stopped
	lastErr  atomic.Value
}

func newDemoWriter(f demoFlags) *demoWriter { return &demoWriter{rate: f.rate} }

// start opens two connections to the source and writes until stop.
func (w *demoWriter) start(ctx context.Context, src *pgtest.Instance, customers int) error {
	wctx, cancel := context.WithCancel(ctx)
	w.cancel = cancel
	w.started = time.Now()
	const workers = 2
	for i := 0; i < workers; i++ {
		conn, err := src.Connect(ctx, "shop")
		if err != nil {
			cancel()
			return fmt.Errorf("demo: the application's connection: %w", err)
		}
		w.wg.Add(1)
		go func(seed uint64) {
			defer w.wg.Done()
			defer conn.Close(context.Background())
			w.loop(wctx, conn, customers, rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano()))), time.Second*workers/time.Duration(w.rate))
		}(uint64(i + 1))
	}
	return nil
}

func (w *demoWriter) loop(ctx context.Context, conn *pgx.Conn, customers int, rng *rand.Rand, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := w.write(ctx, conn, customers, rng); err != nil && ctx.Err() == nil {
			w.failures.Add(1)
			w.lastErr.Store(err.Error())
		}
	}
}

// write makes one write: 40% new orders, 25% updates, 15% deletes, 20%
// moves (an order's customer_id changed to a customer on the other shard).
func (w *demoWriter) write(ctx context.Context, conn *pgx.Conn, customers int, rng *rand.Rand) error {
	customer := func() int64 { return 1 + rng.Int64N(int64(customers)) }
	var maxID int64
	if err := conn.QueryRow(ctx, `SELECT last_value FROM orders_id_seq`).Scan(&maxID); err != nil {
		return err
	}
	order := 1 + rng.Int64N(max(maxID, 1))
	switch p := rng.IntN(100); {
	case p < 40:
		_, err := conn.Exec(ctx, `INSERT INTO orders (customer_id, total) VALUES ($1, $2)`, customer(), float64(rng.IntN(50000))/100)
		if err == nil {
			w.inserts.Add(1)
		}
		return err
	case p < 65:
		tag, err := conn.Exec(ctx, `UPDATE orders SET status = 'paid', total = total + 1 WHERE id = $1`, order)
		if err == nil && tag.RowsAffected() == 1 {
			w.updates.Add(1)
		}
		return err
	case p < 80:
		tag, err := conn.Exec(ctx, `DELETE FROM orders WHERE id = $1`, order)
		if err == nil && tag.RowsAffected() == 1 {
			w.deletes.Add(1)
		}
		return err
	default:
		var current int64
		if err := conn.QueryRow(ctx, `SELECT customer_id FROM orders WHERE id = $1`, order).Scan(&current); errors.Is(err, pgx.ErrNoRows) {
			return nil
		} else if err != nil {
			return err
		}
		// A customer whose orders live on the other shard of two.
		from := sharding.ShardOfHash(sharding.HashInt(current), 2)
		to := customer()
		for sharding.ShardOfHash(sharding.HashInt(to), 2) == from {
			to = customer()
		}
		tag, err := conn.Exec(ctx, `UPDATE orders SET customer_id = $1 WHERE id = $2`, to, order)
		if err == nil && tag.RowsAffected() == 1 {
			w.moves.Add(1)
		}
		return err
	}
}

func (w *demoWriter) stop() {
	if w.cancel == nil {
		return
	}
	w.cancel()
	w.wg.Wait()
	w.stopped.CompareAndSwap(0, time.Now().UnixNano())
}

func (w *demoWriter) total() int64 {
	return w.inserts.Load() + w.updates.Load() + w.deletes.Load() + w.moves.Load()
}

// status is the writer's line under the bars.
func (w *demoWriter) status() string {
	if w.started.IsZero() {
		return "application: not writing yet"
	}
	state := "writing"
	if w.stopped.Load() != 0 {
		state = "stopped"
	}
	s := fmt.Sprintf("application %s: %s", state, w.summary())
	if n := w.failures.Load(); n > 0 {
		s += fmt.Sprintf("  %d failed (%v)", n, w.lastErr.Load())
	}
	return s
}

func (w *demoWriter) summary() string {
	end := time.Now()
	if ns := w.stopped.Load(); ns != 0 {
		end = time.Unix(0, ns)
	}
	perSec := 0.0
	if secs := end.Sub(w.started).Seconds(); secs > 0 {
		perSec = float64(w.total()) / secs
	}
	return fmt.Sprintf("%s inserts, %s updates, %s deletes, %s orders moved between shards (%.0f writes/s)",
		thousands64(w.inserts.Load()), thousands64(w.updates.Load()), thousands64(w.deletes.Load()), thousands64(w.moves.Load()), perSec)
}

// connectAdmin connects to the admin server, retrying while it starts.
func connectAdmin(ctx context.Context, dsn string) (*pgx.Conn, error) {
	var lastErr error
	for i := 0; i < 50; i++ {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, dsn+"?sslmode=disable")
		cancel()
		if err == nil {
			return conn, nil
		}
		lastErr = err
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("demo: connect to the admin server: %w", lastErr)
}

// adminRows runs a command through the admin server and returns its rows
// by column name.
func adminRows(ctx context.Context, admin *pgx.Conn, sql string) ([]map[string]any, error) {
	rows, err := admin.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, pgx.RowToMap)
	if err != nil {
		return nil, fmt.Errorf("demo: %s: %w", sql, err)
	}
	return out, nil
}

// adminScalar runs a command that answers one value (a task id).
func adminScalar(ctx context.Context, admin *pgx.Conn, sql string) (string, error) {
	var v string
	err := admin.QueryRow(ctx, sql, pgx.QueryExecModeSimpleProtocol).Scan(&v)
	return v, err
}

// demoTask is task id's row of SHOW TASKS.
func demoTask(ctx context.Context, admin *pgx.Conn, id string) (map[string]any, error) {
	tasks, err := adminRows(ctx, admin, "SHOW TASKS")
	if err != nil {
		return nil, err
	}
	for _, t := range tasks {
		if t["id"] == id {
			return t, nil
		}
	}
	return nil, fmt.Errorf("demo: task %s is not in SHOW TASKS", id)
}

// waitTaskEnd waits until task id has ended in one of the states ok
// (VERIFY ends failed when tables differ: the caller reads SHOW VERIFY).
func waitTaskEnd(ctx context.Context, admin *pgx.Conn, id string, ok ...string) error {
	for {
		t, err := demoTask(ctx, admin, id)
		if err != nil {
			return err
		}
		state, _ := t["state"].(string)
		for _, s := range ok {
			if state == s {
				return nil
			}
		}
		switch state {
		case "done", "failed", "stopped":
			return fmt.Errorf("demo: task %s ended %s: %v", id, state, t["error"])
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// demoCopiedRows sums SHOW TABLE_COPIES' rows.
func demoCopiedRows(ctx context.Context, admin *pgx.Conn) (int64, error) {
	copies, err := adminRows(ctx, admin, "SHOW TABLE_COPIES")
	var n int64
	for _, c := range copies {
		n += asInt(c["rows"])
	}
	return n, err
}

func countAndHash(ctx context.Context, inst *pgtest.Instance, sql string) (int64, string, error) {
	conn, err := inst.Connect(ctx, "shop")
	if err != nil {
		return 0, "", err
	}
	defer conn.Close(context.Background())
	var n int64
	var sum string
	err = conn.QueryRow(ctx, sql).Scan(&n, &sum)
	return n, sum, err
}

func queryString(ctx context.Context, inst *pgtest.Instance, sql string) (string, error) {
	conn, err := inst.Connect(ctx, "shop")
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var s string
	err = conn.QueryRow(ctx, sql).Scan(&s)
	return s, err
}

// sumsEqual tells whether a equals b + c, decimal integers of any size.
func sumsEqual(a, b, c string) bool {
	x, okA := new(big.Int).SetString(a, 10)
	y, okB := new(big.Int).SetString(b, 10)
	z, okC := new(big.Int).SetString(c, 10)
	return okA && okB && okC && x.Cmp(new(big.Int).Add(y, z)) == 0
}

func asInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int32:
		return int64(x)
	case float64:
		return int64(x)
	}
	return 0
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func thousands(n int) string { return display.Count(int64(n)) }

func thousands64(n int64) string { return display.Count(n) }
