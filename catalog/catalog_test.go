package catalog

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const goodConfig = `
[general]
host = "127.0.0.1"
port = 6432
workers = 2            # a PgDog pooler key: accepted, ignored
resharding_copy_format = "text"

[admin]
password = "secret"

[[databases]]
name = "prod"
host = "10.0.0.1"

[[databases]]
name = "prod"
host = "10.0.0.9"
role = "replica"
resharding_only = true

[[databases]]
name = "prod_sharded"
host = "10.0.0.2"
shard = 0

[[databases]]
name = "prod_sharded"
host = "10.0.0.3"
shard = 1
database_name = "app"

[[sharded_tables]]
database = "prod_sharded"
name = "orders"
column = "user_id"

[[sharded_tables.mapping]]
shard = 1
values = [1, 2, 3]

[[sharded_tables.mapping]]
shard = 0
start = 100
end = 200
`

const goodUsers = `
[[users]]
name = "admin_prod"
database = "prod"
password = "p"
schema_admin = true

[[users]]
name = "admin_sharded"
database = "prod_sharded"
password = "q"
server_user = "postgres"
schema_admin = true
`

func build(t *testing.T, cfg, users string) (*Catalog, error) {
	t.Helper()
	c, err := ParseConfig("pgdog.toml", []byte(cfg))
	if err != nil {
		return nil, err
	}
	u, err := ParseUsers("users.toml", []byte(users))
	if err != nil {
		return nil, err
	}
	return New(c, u)
}

func TestGoodConfig(t *testing.T) {
	c, err := build(t, goodConfig, goodUsers)
	if err != nil {
		t.Fatal(err)
	}
	prod, ok := c.Cluster("prod")
	if !ok || len(prod.Shards) != 1 || prod.Shards[0].Primary.Host != "10.0.0.1" || len(prod.Shards[0].Replicas) != 1 {
		t.Fatalf("prod cluster wrong: %+v", prod)
	}
	if prod.Shards[0].Primary.Port != 5432 || prod.Shards[0].Primary.Database != "prod" {
		t.Fatalf("defaults not applied: %+v", prod.Shards[0].Primary)
	}
	dst, _ := c.Cluster("prod_sharded")
	if len(dst.Shards) != 2 || dst.Shards[1].Primary.Database != "app" {
		t.Fatalf("prod_sharded wrong: %+v", dst.Shards)
	}
	if len(dst.ShardedTables) != 1 || len(dst.ShardedTables[0].Mapping) != 2 || dst.ShardedTables[0].DataType != "bigint" {
		t.Fatalf("sharded tables wrong: %+v", dst.ShardedTables)
	}
	if c.Config.General.ReshardingCopyFormat != "text" || c.Config.General.ReshardingParallelCopies != DefaultParallelCopies {
		t.Fatalf("general wrong: %+v", c.Config.General)
	}
	dsn, err := c.ConnString(dst.Shards[1].Primary, map[string]string{"replication": "database"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(dsn, "postgres://postgres:q@10.0.0.3:5432/app?") || !strings.Contains(dsn, "replication=database") {
		t.Fatalf("conn string %s", dsn)
	}
	if got := c.ClusterNames(); len(got) != 2 || got[0] != "prod" {
		t.Fatalf("names %v", got)
	}
}

// expectErr checks that building fails with an error naming file, key and line.
func expectErr(t *testing.T, cfg, users, file, key string, line int, msg string) {
	t.Helper()
	_, err := build(t, cfg, users)
	if err == nil {
		t.Fatalf("expected an error about %s", key)
	}
	var ce *ConfigError
	var ces ConfigErrors
	switch {
	case errors.As(err, &ces):
		ce = ces[0]
	case errors.As(err, &ce):
	default:
		t.Fatalf("error %T %v is not a ConfigError", err, err)
	}
	if ce.File != file || ce.Key != key || (line > 0 && ce.Line != line) || !strings.Contains(ce.Error(), msg) {
		t.Fatalf("got %q (file=%s key=%s line=%d), want file=%s key=%s line=%d containing %q", ce.Error(), ce.File, ce.Key, ce.Line, file, key, line, msg)
	}
}

func TestUnknownKey(t *testing.T) {
	cfg := strings.Replace(goodConfig, "workers = 2", "wokers = 2", 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "general.wokers", 5, "unknown key")
	cfg = strings.Replace(goodConfig, `database_name = "app"`, `databse_name = "app"`, 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "databases[3].databse_name", 30, "unknown key")
	users := strings.Replace(goodUsers, "schema_admin = true\n\n", "schema_admin = true\nsuperuser = true\n\n", 1)
	expectErr(t, goodConfig, users, "users.toml", "users[0].superuser", 7, "unknown key")
}

func TestWrongType(t *testing.T) {
	cfg := strings.Replace(goodConfig, "port = 6432", `port = "6432"`, 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "general.port", 4, "")
}

func TestNetworkTimeout(t *testing.T) {
	c, err := build(t, goodConfig, goodUsers)
	if err != nil {
		t.Fatal(err)
	}
	if c.NetworkTimeout() != DefaultNetworkTimeout*time.Millisecond {
		t.Fatalf("default network timeout %s", c.NetworkTimeout())
	}
	dsn, err := c.ConnString(c.clusters["prod"].Shards[0].Primary, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dsn, "connect_timeout=60") {
		t.Fatalf("conn string %s has no connect_timeout", dsn)
	}
	cfg := strings.Replace(goodConfig, "port = 6432", "port = 6432\nresharding_network_timeout = -1", 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "general.resharding_network_timeout", 0, "must not be negative")
}

func TestDuplicatePrimary(t *testing.T) {
	cfg := strings.Replace(goodConfig, `role = "replica"`, `role = "primary"`, 1)
	cfg = strings.Replace(cfg, "resharding_only = true\n", "", 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "databases[1].role", 18, "more than one primary")
}

func TestShardGap(t *testing.T) {
	cfg := strings.Replace(goodConfig, "shard = 1\n", "shard = 2\n", 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "databases[2].shard", 24, "no shard 1")
}

func TestMissingSchemaAdmin(t *testing.T) {
	users := strings.Replace(goodUsers, "server_user = \"postgres\"\nschema_admin = true", "", 1)
	expectErr(t, goodConfig, users, "users.toml", "users", 0, `schema_admin = true for database "prod_sharded"`)
}

func TestBadShardedTable(t *testing.T) {
	cfg := strings.Replace(goodConfig, `column = "user_id"`, "column = \"user_id\"\ndata_type = \"float\"", 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "sharded_tables[0].data_type", 0, `"float" is not supported`)
	cfg = strings.Replace(goodConfig, `database = "prod_sharded"`, `database = "nope"`, 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "sharded_tables[0].database", 33, `"nope"`)
	cfg = strings.Replace(goodConfig, "shard = 1\nvalues", "shard = 5\nvalues", 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "sharded_tables[0].mapping[0].shard", 38, "shard 5 does not exist")
}

func TestTLSClientRequiredNeedsCertificate(t *testing.T) {
	cfg := strings.Replace(goodConfig, "workers = 2", "tls_client_required = true", 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "general.tls_client_required", 5, "needs tls_certificate")
}

// TestAuthType: PgDog's [general] auth_type picks the admin login's
// method, SCRAM-SHA-256 by default; trust and unknown values are refused.
func TestAuthType(t *testing.T) {
	c, err := build(t, goodConfig, goodUsers)
	if err != nil {
		t.Fatal(err)
	}
	if c.Config.General.AuthType != AuthSCRAM {
		t.Fatalf("default auth_type %q, want scram", c.Config.General.AuthType)
	}
	for _, v := range []string{AuthSCRAM, AuthMD5, AuthPlain} {
		c, err := build(t, strings.Replace(goodConfig, "workers = 2", "auth_type = \""+v+"\"", 1), goodUsers)
		if err != nil || c.Config.General.AuthType != v {
			t.Fatalf("auth_type %q: %v", v, err)
		}
	}
	cfg := strings.Replace(goodConfig, "workers = 2", `auth_type = "trust"`, 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "general.auth_type", 5, `"trust" is not accepted`)
	cfg = strings.Replace(goodConfig, "workers = 2", `auth_type = "scram-sha-256"`, 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "general.auth_type", 5, `"scram-sha-256" is not an authentication type (scram, md5 or plain)`)
}

func TestBadRole(t *testing.T) {
	cfg := strings.Replace(goodConfig, `role = "replica"`, `role = "standby"`, 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "databases[1].role", 18, `"standby" is not a role`)
}

func TestListenPortBusy(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	cfg := strings.Replace(goodConfig, "port = 6432", "port = "+itoa(port), 1)
	c, err := build(t, cfg, goodUsers)
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckListen()
	if err == nil || !strings.Contains(err.Error(), "pgdog.toml:4: general.port") {
		t.Fatalf("busy port not reported with file and line: %v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
func TestPositions(t *testing.T) {
	pos := indexPositions([]byte(goodConfig))
	cases := map[string]int{
		"general.port":                       4,
		"databases[0].name":                  12,
		"databases[3].database_name":         30,
		"sharded_tables[0].mapping[1].start": 43,
		"admin.password":                     9,
	}
	for k, want := range cases {
		if got := pos.line(k); got != want {
			t.Errorf("line(%s) = %d, want %d", k, got, want)
		}
	}
}

// TestEveryProblemAtOnce: a value of the wrong type, an unknown key, a bad
// value in pgdog.toml and a bad reference in users.toml are all reported
// together, each with its file, line and key.
func TestEveryProblemAtOnce(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "pgdog.toml")
	users := filepath.Join(dir, "users.toml")
	os.WriteFile(cfg, []byte(`[general]
port = "six thousand"
resharding_copy_format = "csv"
resharding_parralel_copies = 4

[admin]
password = "x"

[[databases]]
name = "prod"
host = "10.0.0.1"
role = "boss"
`), 0o600)
	os.WriteFile(users, []byte(`[[users]]
name = "a"
database = "nowhere"
schema_admin = true
`), 0o600)
	_, err := Load(cfg, users)
	var errs ConfigErrors
	if !errors.As(err, &errs) {
		t.Fatalf("want ConfigErrors, got %v", err)
	}
	want := []string{
		cfg + ":2: general.port: ",
		cfg + ":3: general.resharding_copy_format: ",
		cfg + ":4: general.resharding_parralel_copies: unknown key",
		cfg + ":12: databases[0].role: ",
		users + ":3: users[0].database: ",
	}
	got := strings.Split(err.Error(), "\n")
	for _, w := range want {
		found := false
		for _, g := range got {
			if strings.HasPrefix(g, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("missing %q in\n%s", w, err)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d problems reported, want %d:\n%s", len(got), len(want), err)
	}
	if !strings.Contains(got[0], "a TOML string where an integer is expected") {
		t.Errorf("type error not explained: %s", got[0])
	}
}

// TestCutoverSettings: cutover_timeout_action is abort by default, cutover
// is accepted, anything else refused; a non-zero
// cutover_replication_lag_threshold is refused with the reason (reshard
// cuts over at lag 0 only), 0 accepted.
func TestCutoverSettings(t *testing.T) {
	c, err := build(t, goodConfig, goodUsers)
	if err != nil {
		t.Fatal(err)
	}
	if c.Config.General.CutoverTimeoutAction != CutoverTimeoutAbort {
		t.Fatalf("default cutover_timeout_action %q, want abort", c.Config.General.CutoverTimeoutAction)
	}
	c, err = build(t, strings.Replace(goodConfig, "workers = 2", `cutover_timeout_action = "cutover"`, 1), goodUsers)
	if err != nil || c.Config.General.CutoverTimeoutAction != CutoverTimeoutCutover {
		t.Fatalf("cutover_timeout_action = cutover: %v", err)
	}
	cfg := strings.Replace(goodConfig, "workers = 2", `cutover_timeout_action = "force"`, 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "general.cutover_timeout_action", 5, `"force" is not abort or cutover`)
	if _, err := build(t, strings.Replace(goodConfig, "workers = 2", "cutover_replication_lag_threshold = 0", 1), goodUsers); err != nil {
		t.Fatalf("cutover_replication_lag_threshold = 0: %v", err)
	}
	cfg = strings.Replace(goodConfig, "workers = 2", "cutover_replication_lag_threshold = 1024", 1)
	expectErr(t, cfg, goodUsers, "pgdog.toml", "general.cutover_replication_lag_threshold", 5, "is 1024, but reshard cuts over only once every change committed before writes were blocked is applied")
}
