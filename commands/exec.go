package commands

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/migrate"
	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/sync/task"
)

// Version is reshard's version string.
const Version = "0.1.0"

// Executor runs commands against the catalog and the engine. One Executor
// serves every admin connection and CLI call.
type Executor struct {
	// Catalog is the validated configuration.
	Catalog *catalog.Catalog
	// Logger is the "commands" logger.
	Logger hclog.Logger
	// Registry is the engine's progress, read by the SHOW views.
	Registry *progress.Registry
	// Tasks are the background tasks.
	Tasks *task.Manager
	// Engine runs the migrations (RESHARD, COPY_DATA, REPLICATE tasks).
	Engine *migrate.Engine
}

// NewExecutor returns an executor for the catalog.
func NewExecutor(cat *catalog.Catalog, logger hclog.Logger) *Executor {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	e := &Executor{Catalog: cat, Logger: logger.Named("commands"), Registry: progress.NewRegistry(), Tasks: task.NewManager()}
	e.Engine = migrate.New(cat, e.Registry, e.Tasks, e.Logger)
	return e
}

// RecoverTasks continues the migrations an earlier run of reshard left
// running, with their ids, and lists those that were stopped or had
// failed (read from every cluster's shard 0).
func (e *Executor) RecoverTasks(ctx context.Context) { e.Engine.Recover(ctx) }

// WatchSlots keeps the list of reshard's inactive replication slots up to
// date until ctx ends (SHOW REPLICATION_SLOTS, SHOW TASKS, metrics).
func (e *Executor) WatchSlots(ctx context.Context) { e.Engine.Watch(ctx, migrate.WatchInterval) }

// Columns returns the columns cmd's result will have, before running it, so
// that the extended protocol can describe a statement. A command whose
// columns cannot be known (an unknown SHOW name) returns its error here.
func (e *Executor) Columns(cmd Command) ([]Column, error) {
	switch c := cmd.(type) {
	case Show:
		if v, ok := views[c.Name]; ok {
			return v, nil
		}
		if _, ok := settings[c.Name]; ok || c.Name == "application_name" {
			return []Column{{Name: c.Name, Type: TypeText}}, nil
		}
		return nil, unknownShow(c.Name)
	case CopyData:
		if c.Foreground {
			return copyDataResultColumns, nil
		}
		return taskIDColumns, nil
	case Replicate:
		if c.Foreground {
			return nil, nil
		}
		return taskIDColumns, nil
	case Verify:
		if c.Foreground {
			return verifyColumns, nil
		}
		return taskIDColumns, nil
	case Reshard:
		return taskIDColumns, nil
	case Cutover:
		return cutoverColumns, nil
	case StopTask:
		return stopTaskColumns, nil
	case AbortTask:
		return abortTaskColumns, nil
	case DescribeColumns:
		return c.columns(), nil
	case Select:
		return c.columns(), nil
	case SchemaSync:
		if c.DryRun {
			return schemaSyncDryRunColumns, nil
		}
		return schemaSyncResultColumns, nil
	}
	return nil, nil
}

func unknownShow(name string) *Error {
	names := Views()
	for i, n := range names {
		names[i] = strings.ToUpper(n)
	}
	return Errorf(CodeUndefinedObject, "unrecognized configuration parameter or view %q", abbreviate(name)).
		WithHint("views: %s", strings.Join(names, ", "))
}

// Execute runs one command and returns its result set. Errors are *Error
// values carrying a SQLSTATE.
func (e *Executor) Execute(ctx context.Context, cmd Command) (*Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch c := cmd.(type) {
	case Empty:
		return &Result{}, nil
	case Set:
		tag := c.Verb
		if c.Verb == "DISCARD" {
			tag = "DISCARD ALL"
		}
		return &Result{Tag: tag}, nil
	case Transaction:
		return &Result{Tag: c.Tag}, nil
	case Show:
		return e.show(ctx, c)
	case DescribeColumns:
		return &Result{Columns: c.columns(), Rows: c.rows(), Tag: fmt.Sprintf("SELECT %d", len(c.Columns))}, nil
	case Select:
		return e.runSelect(ctx, c)
	case SchemaSync:
		if err := e.checkRoute(c.Route); err != nil {
			return nil, err
		}
		return e.schemaSync(ctx, c)
	case CopyData:
		if err := e.checkRoute(c.Route); err != nil {
			return nil, err
		}
		if c.Slot != "" {
			if err := e.checkSlot(c.Source, c.Slot); err != nil {
				return nil, err
			}
		}
		return e.copyData(ctx, c)
	case Replicate:
		if err := e.checkRoute(c.Route); err != nil {
			return nil, err
		}
		if err := e.checkSlot(c.Source, c.Slot); err != nil {
			return nil, err
		}
		return e.replicate(ctx, c)
	case Reshard:
		if err := e.checkRoute(c.Route); err != nil {
			return nil, err
		}
		return e.reshard(ctx, c)
	case Verify:
		if err := e.checkRoute(c.Route); err != nil {
			return nil, err
		}
		return e.verify(ctx, c)
	case StopTask:
		return e.stopTask(ctx, c)
	case AbortTask:
		return e.abortTask(ctx, c)
	case Cutover:
		return e.cutoverTask(ctx, c)
	}
	return nil, Errorf(CodeInternalError, "no executor for %T", cmd)
}

// checkSlot verifies that slot is a name PostgreSQL accepts for a
// replication slot (lower-case letters, digits and underscores), also with
// the per-shard suffix a source of several shards adds. Replication commands
// take slot names unquoted, so nothing else may reach them.
func (e *Executor) checkSlot(source, slot string) error {
	for _, r := range slot {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' {
			return Errorf(CodeInvalidName, "invalid replication slot name %q: it contains %q", abbreviate(slot), r).
				WithHint("replication slot names may contain only lower-case letters, digits and underscores")
		}
	}
	cl, _ := e.Catalog.Cluster(source)
	for _, name := range copier.SlotNames(slot, len(cl.Shards)) {
		if len(name) > maxIdentifier {
			return Errorf(CodeNameTooLong, "replication slot name %q is too long: %d characters, at most %d", abbreviate(name), len(name), maxIdentifier)
		}
	}
	return nil
}

// abbreviate shortens s for an error message.
func abbreviate(s string) string {
	if len(s) <= 80 {
		return s
	}
	cut := 80
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// maxIdentifier is PostgreSQL's limit on an identifier (NAMEDATALEN - 1):
// a longer publication name cannot exist.
const maxIdentifier = 63

// checkRoute verifies that both clusters exist and differ, and that the
// publication is a name PostgreSQL can hold.
func (e *Executor) checkRoute(r Route) error {
	for _, name := range []string{r.Source, r.Destination} {
		if _, ok := e.Catalog.Cluster(name); !ok {
			return Errorf(CodeUndefinedDatabase, "database %q is not configured", abbreviate(name)).
				WithHint("configured databases: %s", strings.Join(e.Catalog.ClusterNames(), ", "))
		}
	}
	if r.Source == r.Destination {
		return Errorf(CodeInvalidParameterValue, "source and destination are both %q", r.Source).
			WithHint("resharding moves data from one database cluster to another")
	}
	if len(r.Publication) > maxIdentifier {
		return Errorf(CodeNameTooLong, "publication name %q is too long: %d bytes, at most %d", abbreviate(r.Publication), len(r.Publication), maxIdentifier)
	}
	return nil
}

func (e *Executor) show(ctx context.Context, c Show) (*Result, error) {
	columns, err := e.Columns(c)
	if err != nil {
		return nil, err
	}
	res := &Result{Columns: columns, Tag: "SHOW"}
	switch c.Name {
	case "version":
		res.Rows = [][]any{{fmt.Sprintf("reshard %s (%s, PostgreSQL wire protocol 3.0)", Version, runtime.Version())}}
	case "databases":
		res.Rows = e.databases()
	case "config":
		res.Rows = e.config()
	case "schema_sync":
		res.Rows = e.showSchemaSync()
	case "table_copies":
		res.Rows = e.showTableCopies()
	case "tasks":
		res.Rows = e.showTasks()
	case "replication_slots":
		res.Rows = e.showReplicationSlots()
	case "verify":
		res.Rows = e.showVerify()
	case "ddl":
		res.Rows = e.showDDL()
	case "application_name":
		res.Rows = [][]any{{e.session(ctx).ApplicationName}}
	default:
		v := settings[c.Name]
		res.Rows = [][]any{{v}}
	}
	return res, nil
}

func (e *Executor) databases() [][]any {
	var rows [][]any
	for _, cl := range e.Catalog.Clusters() {
		for _, sh := range cl.Shards {
			nodes := append([]*catalog.Node{sh.Primary}, sh.Replicas...)
			for _, n := range nodes {
				if n == nil {
					continue
				}
				rows = append(rows, []any{n.Cluster, n.Host, int64(n.Port), n.Database, n.Role, int64(n.Shard), n.ReshardingOnly})
			}
		}
	}
	return rows
}

const masked = "********"

func (e *Executor) config() [][]any {
	cfg := e.Catalog.Config
	g := cfg.General
	mask := func(s string) string {
		if s == "" {
			return ""
		}
		return masked
	}
	rows := [][]any{
		{"config_path", cfg.Path},
		{"users_path", e.Catalog.Users.Path},
		{"general.host", g.Host},
		{"general.port", strconv.Itoa(g.Port)},
		{"general.resharding_copy_format", g.ReshardingCopyFormat},
		{"general.resharding_parallel_copies", strconv.Itoa(g.ReshardingParallelCopies)},
		{"general.resharding_ddl", g.ReshardingDDL},
		{"general.openmetrics_port", strconv.Itoa(g.OpenMetricsPort)},
		{"general.tls_certificate", g.TLSCertificate},
		{"general.tls_private_key", g.TLSPrivateKey},
		{"general.tls_client_required", strconv.FormatBool(g.TLSClientRequired)},
		{"general.auth_type", g.AuthType},
		{"general.cutover_traffic_stop_threshold", strconv.FormatInt(g.CutoverTrafficStopThreshold, 10)},
		{"general.cutover_replication_lag_threshold", strconv.FormatInt(g.CutoverReplicationLagThreshold, 10)},
		{"general.cutover_timeout", strconv.FormatInt(g.CutoverTimeout, 10)},
		{"general.cutover_timeout_action", g.CutoverTimeoutAction},
		{"general.cutover_command", g.CutoverCommand},
		{"general.resharding_foreign_keys", g.ReshardingForeignKeys},
		{"admin.name", cfg.Admin.Name},
		{"admin.user", cfg.Admin.User},
		{"admin.password", mask(cfg.Admin.Password)},
		{"replication.pg_dump_path", cfg.Replication.PgDumpPath},
	}
	for i, d := range cfg.Databases {
		p := fmt.Sprintf("databases[%d].", i)
		rows = append(rows,
			[]any{p + "name", d.Name},
			[]any{p + "host", d.Host},
			[]any{p + "port", strconv.Itoa(d.Port)},
			[]any{p + "database_name", d.DatabaseName},
			[]any{p + "role", d.Role},
			[]any{p + "shard", strconv.Itoa(*d.Shard)},
			[]any{p + "resharding_only", strconv.FormatBool(d.ReshardingOnly)},
		)
		if d.User != "" {
			rows = append(rows, []any{p + "user", d.User})
		}
		if d.Password != "" {
			rows = append(rows, []any{p + "password", masked})
		}
	}
	for i, t := range cfg.ShardedTables {
		p := fmt.Sprintf("sharded_tables[%d].", i)
		rows = append(rows,
			[]any{p + "database", t.Database},
			[]any{p + "schema", t.Schema},
			[]any{p + "name", t.Name},
			[]any{p + "column", t.Column},
			[]any{p + "data_type", t.DataType},
			[]any{p + "mappings", strconv.Itoa(len(t.Mapping))},
		)
	}
	for i, u := range e.Catalog.Users.Users {
		p := fmt.Sprintf("users[%d].", i)
		rows = append(rows,
			[]any{p + "name", u.Name},
			[]any{p + "database", u.Database},
			[]any{p + "password", mask(u.Password)},
			[]any{p + "schema_admin", strconv.FormatBool(u.SchemaAdmin)},
		)
		if u.ServerUser != "" {
			rows = append(rows, []any{p + "server_user", u.ServerUser})
		}
		if u.ServerPassword != "" {
			rows = append(rows, []any{p + "server_password", masked})
		}
	}
	return rows
}

func (e *Executor) showSchemaSync() [][]any {
	var rows [][]any
	for _, r := range e.Registry.Schema() {
		var started any
		if !r.StartedAt.IsZero() {
			started = r.StartedAt
		}
		rows = append(rows, []any{r.Database, r.User, int64(r.Shard), r.Kind, r.State, started,
			r.Elapsed.Round(time.Millisecond).String(), r.Elapsed.Milliseconds(), r.Schema, r.Table, r.SQL})
	}
	return rows
}
