// Package catalog loads reshard's configuration (PgDog's pgdog.toml and
// users.toml), validates it and turns it into clusters, shards, nodes, users
// and sharded tables. It also opens connection pools to the nodes, lazily.
package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"

	"github.com/pelletier/go-toml/v2"
)

// Config is the content of pgdog.toml.
type Config struct {
	General       General          `toml:"general"`
	Admin         Admin            `toml:"admin"`
	Replication   Replication      `toml:"replication"`
	Databases     []Database       `toml:"databases"`
	ShardedTables []ShardedTable   `toml:"sharded_tables"`
	Mappings      []ShardedMapping `toml:"sharded_mappings"`
	OmniTables    []OmniTables     `toml:"omnisharded_tables"`

	// Sections PgDog uses for pooling that reshard accepts and ignores, so
	// an existing pgdog.toml loads unchanged.
	TCP           any `toml:"tcp"`
	MultiTenant   any `toml:"multi_tenant"`
	Plugins       any `toml:"plugins"`
	Mirroring     any `toml:"mirroring"`
	ManualQueries any `toml:"manual_queries"`
	QueryStats    any `toml:"query_stats"`
	Memory        any `toml:"memory"`
	Rewrite       any `toml:"rewrite"`

	// Path is the file the configuration was read from.
	Path string `toml:"-"`
	pos  positions
}

// General is the [general] section.
type General struct {
	// Host is the address the admin server listens on.
	Host string `toml:"host"`
	// Port is the admin server's TCP port.
	Port int `toml:"port"`
	// ReshardingCopyFormat is "binary" or "text".
	ReshardingCopyFormat string `toml:"resharding_copy_format"`
	// ReshardingParallelCopies is the number of copy workers per source shard.
	ReshardingParallelCopies int `toml:"resharding_parallel_copies"`
	// ReshardingSplitThreshold is the table size in bytes above which a
	// table is copied as several ranges at once (default 256 MiB).
	ReshardingSplitThreshold int64 `toml:"resharding_split_threshold"`
	// ReshardingStreamMemory is the memory in bytes that source
	// transactions streamed while in progress may hold together before
	// their changes are spilled to disk (default 64 MiB).
	ReshardingStreamMemory int64 `toml:"resharding_stream_memory"`
	// ReshardingSpillDir is where those changes are spilled (default: the
	// system's temporary directory).
	ReshardingSpillDir string `toml:"resharding_spill_dir"`
	// OpenMetricsPort serves Prometheus metrics when non-zero.
	OpenMetricsPort int `toml:"openmetrics_port"`
	// TLSCertificate and TLSPrivateKey enable TLS on the admin server.
	TLSCertificate string `toml:"tls_certificate"`
	TLSPrivateKey  string `toml:"tls_private_key"`
	// TLSClientRequired refuses admin clients that do not use TLS (PgDog's
	// key of the same name); it needs TLSCertificate and TLSPrivateKey.
	TLSClientRequired bool `toml:"tls_client_required"`
	// AuthType is how admin clients prove their password (PgDog's key of
	// the same name): "scram" (SCRAM-SHA-256, the default), "md5" or
	// "plain" (clear text; use TLS).
	AuthType string `toml:"auth_type"`
	// CutoverTrafficStopThreshold is the replication lag in bytes under which
	// cutover blocks writes on the source.
	CutoverTrafficStopThreshold int64 `toml:"cutover_traffic_stop_threshold"`
	// CutoverReplicationLagThreshold is PgDog's lag in bytes under which
	// cutover considers the destination caught up after writes are
	// blocked. reshard cuts over only once every change committed before
	// writes were blocked is applied: the only value it accepts is 0.
	CutoverReplicationLagThreshold int64 `toml:"cutover_replication_lag_threshold"`
	// CutoverTimeout is how long, in milliseconds, cutover may keep writes
	// blocked before it gives up.
	CutoverTimeout int64 `toml:"cutover_timeout"`
	// CutoverTimeoutAction is what cutover (and rollback) do once
	// cutover_timeout has passed: "abort" (unblock and keep streaming) or
	// "cutover" (go on without losing a change: block writes whatever the
	// lag, end the application sessions that keep the tables locked, and
	// wait for the drain however long it takes).
	CutoverTimeoutAction string `toml:"cutover_timeout_action"`
	// CutoverCommand is an optional shell command run once cutover is ready.
	CutoverCommand string `toml:"cutover_command"`
	// ReshardingNetworkTimeout is how long, in milliseconds, reshard waits
	// for a PostgreSQL server to answer (connect, one apply round trip, a
	// copy making no progress) before it treats the connection as lost and
	// reconnects (default 60000).
	ReshardingNetworkTimeout int64 `toml:"resharding_network_timeout"`
	// ReshardingForeignKeys is what SCHEMA_SYNC POST does with foreign
	// keys: "validate" (default: validate each on every shard, and leave
	// one that fails NOT VALID, reported), "not_valid" (create them NOT
	// VALID, never validated) or "skip" (do not create them).
	ReshardingForeignKeys string `toml:"resharding_foreign_keys"`
	// ReshardingDDL is what a schema change on the source does to a
	// migration: "stop" (the stream stops at the first change of a
	// published table's shape, naming the DDL to run by hand) or
	// "replicate" (event triggers capture the source's DDL and the stream
	// applies it on every shard at its place in the source's order).
	ReshardingDDL string `toml:"resharding_ddl"`

	pgdogGeneral
}

// pgdogGeneral lists PgDog's pooler settings: accepted so that an existing
// pgdog.toml loads, and not used by reshard.
type pgdogGeneral struct {
	Workers                  any `toml:"workers"`
	DefaultPoolSize          any `toml:"default_pool_size"`
	MinPoolSize              any `toml:"min_pool_size"`
	PoolerMode               any `toml:"pooler_mode"`
	HealthcheckInterval      any `toml:"healthcheck_interval"`
	IdleHealthcheckInterval  any `toml:"idle_healthcheck_interval"`
	IdleHealthcheckDelay     any `toml:"idle_healthcheck_delay"`
	HealthcheckTimeout       any `toml:"healthcheck_timeout"`
	HealthcheckPort          any `toml:"healthcheck_port"`
	BanTimeout               any `toml:"ban_timeout"`
	RollbackTimeout          any `toml:"rollback_timeout"`
	LoadBalancingStrategy    any `toml:"load_balancing_strategy"`
	ReadWriteStrategy        any `toml:"read_write_strategy"`
	ReadWriteSplit           any `toml:"read_write_split"`
	TLSVerify                any `toml:"tls_verify"`
	TLSServerCACertificate   any `toml:"tls_server_ca_certificate"`
	ShutdownTimeout          any `toml:"shutdown_timeout"`
	BroadcastAddress         any `toml:"broadcast_address"`
	BroadcastPort            any `toml:"broadcast_port"`
	QueryTimeout             any `toml:"query_timeout"`
	CheckoutTimeout          any `toml:"checkout_timeout"`
	ConnectTimeout           any `toml:"connect_timeout"`
	ConnectAttempts          any `toml:"connect_attempts"`
	ConnectAttemptDelay      any `toml:"connect_attempt_delay"`
	PreparedStatements       any `toml:"prepared_statements"`
	PreparedStatementsLimit  any `toml:"prepared_statements_limit"`
	QueryCacheLimit          any `toml:"query_cache_limit"`
	PassthroughAuth          any `toml:"passthrough_auth"`
	DryRun                   any `toml:"dry_run"`
	IdleTimeout              any `toml:"idle_timeout"`
	ClientIdleTimeout        any `toml:"client_idle_timeout"`
	ClientLoginTimeout       any `toml:"client_login_timeout"`
	ServerLifetime           any `toml:"server_lifetime"`
	MirrorQueue              any `toml:"mirror_queue"`
	MirrorExposure           any `toml:"mirror_exposure"`
	CrossShardDisabled       any `toml:"cross_shard_disabled"`
	DNSTTL                   any `toml:"dns_ttl"`
	PubSubChannelSize        any `toml:"pub_sub_channel_size"`
	OpenMetricsNamespace     any `toml:"openmetrics_namespace"`
	LogConnections           any `toml:"log_connections"`
	LogDisconnections        any `toml:"log_disconnections"`
	TwoPhaseCommit           any `toml:"two_phase_commit"`
	TwoPhaseCommitAuto       any `toml:"two_phase_commit_auto"`
	ExpandedExplain          any `toml:"expanded_explain"`
	QueryLog                 any `toml:"query_log"`
	StatsPeriod              any `toml:"stats_period"`
	ShardingSchemaSchemaSync any `toml:"sharding_schema_schema_sync"`
	LSNCheckDelay            any `toml:"lsn_check_delay"`
	LSNCheckInterval         any `toml:"lsn_check_interval"`
	LSNCheckTimeout          any `toml:"lsn_check_timeout"`
}

// Admin is the [admin] section: how operators log into the admin server.
type Admin struct {
	// Name is the database name clients connect to.
	Name string `toml:"name"`
	// User is the admin user name.
	User string `toml:"user"`
	// Password is the admin password.
	Password string `toml:"password"`
}

// Replication is the [replication] section.
type Replication struct {
	// PgDumpPath is the pg_dump executable used by schema sync.
	PgDumpPath string `toml:"pg_dump_path"`
}

// Database is one [[databases]] entry: a node of a cluster.
type Database struct {
	Name           string `toml:"name"`
	Host           string `toml:"host"`
	Port           int    `toml:"port"`
	DatabaseName   string `toml:"database_name"`
	Role           string `toml:"role"`
	Shard          *int   `toml:"shard"`
	ReshardingOnly bool   `toml:"resharding_only"`
	User           string `toml:"user"`
	Password       string `toml:"password"`

	// PgDog pooler settings, accepted and ignored.
	PoolSize         any `toml:"pool_size"`
	MinPoolSize      any `toml:"min_pool_size"`
	PoolerMode       any `toml:"pooler_mode"`
	StatementTimeout any `toml:"statement_timeout"`
	IdleTimeout      any `toml:"idle_timeout"`
	ReadOnly         any `toml:"read_only"`
	ServerLifetime   any `toml:"server_lifetime"`
}

// ShardedTable is one [[sharded_tables]] entry.
type ShardedTable struct {
	Database string    `toml:"database"`
	Name     string    `toml:"name"`
	Schema   string    `toml:"schema"`
	Column   string    `toml:"column"`
	DataType string    `toml:"data_type"`
	Primary  bool      `toml:"primary"`
	Mapping  []Mapping `toml:"mapping"`

	// PgDog vector-sharding settings, accepted and ignored.
	Centroids      any `toml:"centroids"`
	CentroidsPath  any `toml:"centroids_path"`
	CentroidProbes any `toml:"centroid_probes"`
	Hasher         any `toml:"hasher"`
}

// Mapping is a list or range rule placing keys on a shard. A list rule has
// Values; a range rule has Start and/or End ([Start, End)).
type Mapping struct {
	Shard  int   `toml:"shard"`
	Values []any `toml:"values"`
	Start  any   `toml:"start"`
	End    any   `toml:"end"`
}

// ShardedMapping is PgDog's top-level [[sharded_mappings]] form of a Mapping.
type ShardedMapping struct {
	Database string `toml:"database"`
	Table    string `toml:"table"`
	Column   string `toml:"column"`
	Kind     string `toml:"kind"`
	Values   []any  `toml:"values"`
	Start    any    `toml:"start"`
	End      any    `toml:"end"`
	Shard    int    `toml:"shard"`
}

// OmniTables is PgDog's [[omnisharded_tables]]: tables copied whole to every
// shard even if they have a column named like a sharding column.
type OmniTables struct {
	Database string   `toml:"database"`
	Tables   []string `toml:"tables"`
}

// Users is the content of users.toml.
type Users struct {
	Users []User `toml:"users"`

	// Path is the file the users were read from.
	Path string `toml:"-"`
	pos  positions
}

// User is one [[users]] entry.
type User struct {
	Name           string `toml:"name"`
	Database       string `toml:"database"`
	Password       string `toml:"password"`
	SchemaAdmin    bool   `toml:"schema_admin"`
	ServerUser     string `toml:"server_user"`
	ServerPassword string `toml:"server_password"`

	// PgDog pooler settings, accepted and ignored.
	PoolSize         any `toml:"pool_size"`
	MinPoolSize      any `toml:"min_pool_size"`
	PoolerMode       any `toml:"pooler_mode"`
	StatementTimeout any `toml:"statement_timeout"`
	ReplicationMode  any `toml:"replication_mode"`
	ReadOnly         any `toml:"read_only"`
	IdleTimeout      any `toml:"idle_timeout"`
	TwoPC            any `toml:"two_phase_commit"`
}

// LoginUser is the PostgreSQL role reshard connects as for this user.
func (u *User) LoginUser() string {
	if u.ServerUser != "" {
		return u.ServerUser
	}
	return u.Name
}

// LoginPassword is the password reshard sends for this user.
func (u *User) LoginPassword() string {
	if u.ServerPassword != "" {
		return u.ServerPassword
	}
	return u.Password
}

// Defaults, as PgDog documents them where it has the same setting.
const (
	DefaultHost            = "0.0.0.0"
	DefaultPort            = 6432
	DefaultPostgresPort    = 5432
	DefaultCopyFormat      = "binary"
	DefaultParallelCopies  = 4
	DefaultAdminName       = "admin"
	DefaultAdminUser       = "admin"
	DefaultPgDump          = "pg_dump"
	DefaultCutoverTimeout  = 30_000
	DefaultCutoverStopLag  = 1_000_000
	DefaultCutoverLagBytes = 0
	// DefaultNetworkTimeout is resharding_network_timeout's default (ms).
	DefaultNetworkTimeout = 60_000
	// DefaultForeignKeys is resharding_foreign_keys' default.
	DefaultForeignKeys = "validate"
)

// The [general] auth_type values: how admin clients prove their password.
const (
	AuthSCRAM = "scram" // SCRAM-SHA-256 (PostgreSQL's default since 14)
	AuthMD5   = "md5"
	AuthPlain = "plain" // clear text
)

// The [general] resharding_ddl values: what a schema change on the source
// does to a migration.
const (
	DDLStop      = "stop"      // the stream stops at a changed table shape
	DDLReplicate = "replicate" // the source's DDL is captured and applied on the shards
)

// The [general] cutover_timeout_action values.
const (
	CutoverTimeoutAbort   = "abort"   // give up: writes unblocked, the stream goes on
	CutoverTimeoutCutover = "cutover" // go on, never at the cost of a change
)

// ParseConfig decodes pgdog.toml content in strict mode. path is used in
// error messages only. Every problem is reported (ConfigErrors), not only
// the first.
func ParseConfig(path string, data []byte) (*Config, error) {
	cfg, errs := parseConfig(path, data)
	if len(errs) > 0 {
		return nil, errs
	}
	return cfg, nil
}

// parseConfig decodes as much of the file as it can: cfg is never nil, so
// that validation can report its own findings beside the decoding ones.
func parseConfig(path string, data []byte) (*Config, ConfigErrors) {
	cfg := &Config{}
	pos := indexPositions(data)
	errs := decodeStrict(path, data, pos, cfg)
	cfg.Path, cfg.pos = path, pos
	cfg.applyDefaults()
	return cfg, errs
}

// ParseUsers decodes users.toml content in strict mode.
func ParseUsers(path string, data []byte) (*Users, error) {
	u, errs := parseUsers(path, data)
	if len(errs) > 0 {
		return nil, errs
	}
	return u, nil
}

func parseUsers(path string, data []byte) (*Users, ConfigErrors) {
	u := &Users{}
	pos := indexPositions(data)
	errs := decodeStrict(path, data, pos, u)
	u.Path, u.pos = path, pos
	return u, errs
}

// LoadConfig reads and decodes a pgdog.toml file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

// LoadUsers reads and decodes a users.toml file.
func LoadUsers(path string) (*Users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	return ParseUsers(path, data)
}

// maxDecodeErrors bounds the values a file may have of the wrong type (or
// unparsable) before decoding gives up on it.
const maxDecodeErrors = 50

// decodeStrict decodes data into v (a pointer to a zero struct), reporting
// every unknown key and every value that cannot be decoded. The decoder
// stops at the first bad value, so each one is reported and its line
// blanked (line numbers stay), and the file decoded again. v holds what
// could be decoded.
func decodeStrict(path string, data []byte, pos positions, v any) ConfigErrors {
	var errs ConfigErrors
	work := append([]byte(nil), data...)
	rv := reflect.ValueOf(v).Elem()
	for range maxDecodeErrors {
		rv.Set(reflect.Zero(rv.Type()))
		dec := toml.NewDecoder(bytes.NewReader(work))
		dec.DisallowUnknownFields()
		err := dec.Decode(v)
		if err == nil {
			return errs
		}
		var strictErr *toml.StrictMissingError
		if errors.As(err, &strictErr) {
			for i := range strictErr.Errors {
				de := &strictErr.Errors[i]
				row, _ := de.Position()
				errs = append(errs, &ConfigError{File: path, Line: row, Key: pos.pathAt(row, de.Key()), Msg: "unknown key"})
			}
			return errs
		}
		var decErr *toml.DecodeError
		if !errors.As(err, &decErr) {
			return append(errs, &ConfigError{File: path, Msg: err.Error()})
		}
		row, _ := decErr.Position()
		errs = append(errs, &ConfigError{File: path, Line: row, Key: pos.pathAt(row, decErr.Key()), Msg: decodeMessage(decErr.Error())})
		if !blankLine(work, row) {
			return errs
		}
	}
	return errs
}

var typeMismatch = regexp.MustCompile(`^toml: cannot decode TOML (\w+) into struct field \S+ of type (\S+)$`)

// typeNames say Go types as the configuration's documentation does.
var typeNames = map[string]string{"int": "an integer", "int64": "an integer", "string": "a string", "bool": "a boolean (true or false)",
	"*int": "an integer", "[]string": "an array of strings", "[]interface {}": "an array"}

// decodeMessage makes go-toml's type mismatch readable.
func decodeMessage(msg string) string {
	m := typeMismatch.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	want, ok := typeNames[m[2]]
	if !ok {
		want = m[2]
	}
	return fmt.Sprintf("a TOML %s where %s is expected", m[1], want)
}

// blankLine overwrites line (1-based) of data with spaces, keeping its
// length and the newlines; false when there is no such line or it is
// blank already.
func blankLine(data []byte, line int) bool {
	start := 0
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(data[start:], '\n')
		if i < 0 {
			return false
		}
		start += i + 1
	}
	end := start
	for end < len(data) && data[end] != '\n' {
		end++
	}
	if len(bytes.TrimSpace(data[start:end])) == 0 {
		return false
	}
	for i := start; i < end; i++ {
		if data[i] != '\r' {
			data[i] = ' '
		}
	}
	return true
}

func (c *Config) applyDefaults() {
	g := &c.General
	if g.Host == "" {
		g.Host = DefaultHost
	}
	if g.Port == 0 {
		g.Port = DefaultPort
	}
	if g.ReshardingCopyFormat == "" {
		g.ReshardingCopyFormat = DefaultCopyFormat
	}
	if g.ReshardingParallelCopies == 0 {
		g.ReshardingParallelCopies = DefaultParallelCopies
	}
	if g.CutoverTimeout == 0 {
		g.CutoverTimeout = DefaultCutoverTimeout
	}
	if g.CutoverTrafficStopThreshold == 0 {
		g.CutoverTrafficStopThreshold = DefaultCutoverStopLag
	}
	if g.ReshardingNetworkTimeout == 0 {
		g.ReshardingNetworkTimeout = DefaultNetworkTimeout
	}
	if g.CutoverTimeoutAction == "" {
		g.CutoverTimeoutAction = CutoverTimeoutAbort
	}
	if g.ReshardingDDL == "" {
		g.ReshardingDDL = DDLStop
	}
	if g.AuthType == "" {
		g.AuthType = AuthSCRAM
	}
	if g.ReshardingForeignKeys == "" {
		g.ReshardingForeignKeys = DefaultForeignKeys
	}
	if c.Admin.Name == "" {
		c.Admin.Name = DefaultAdminName
	}
	if c.Admin.User == "" {
		c.Admin.User = DefaultAdminUser
	}
	if c.Replication.PgDumpPath == "" {
		c.Replication.PgDumpPath = DefaultPgDump
	}
	for i := range c.Databases {
		d := &c.Databases[i]
		if d.Port == 0 {
			d.Port = DefaultPostgresPort
		}
		if d.DatabaseName == "" {
			d.DatabaseName = d.Name
		}
		if d.Role == "" {
			d.Role = "primary"
		}
		if d.Shard == nil {
			zero := 0
			d.Shard = &zero
		}
	}
	for i := range c.ShardedTables {
		t := &c.ShardedTables[i]
		if t.DataType == "" {
			t.DataType = "bigint"
		}
	}
}
