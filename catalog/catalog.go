package catalog

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
)

// DataTypes are the sharding key types reshard supports.
var dataTypes = map[string]bool{
	"bigint": true, "integer": true, "smallint": true,
	"varchar": true, "text": true, "uuid": true,
}

// SupportedDataTypes lists the accepted data_type values, for messages.
func SupportedDataTypes() []string {
	out := make([]string, 0, len(dataTypes))
	for k := range dataTypes {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Catalog is the validated configuration: clusters made of shards made of
// nodes, the users reshard connects as, and the sharded tables.
type Catalog struct {
	// Config is the decoded pgdog.toml.
	Config *Config
	// Users is the decoded users.toml.
	Users *Users

	clusters map[string]*Cluster
	names    []string
}

// Cluster is a logical database: every [[databases]] entry with one name.
type Cluster struct {
	// Name is the cluster name used in commands.
	Name string
	// Shards are indexed by shard number.
	Shards []*Shard
	// Admin is the schema_admin user reshard connects as.
	Admin *User
	// ShardedTables are the sharding rules whose database is this cluster.
	ShardedTables []*ShardedTable
	// OmniTables are tables declared omnisharded for this cluster.
	OmniTables []string
}

// Shard is one shard of a cluster: a primary and its replicas.
type Shard struct {
	// Number is the shard number, 0..N-1.
	Number int
	// Primary is the node that takes writes.
	Primary *Node
	// Replicas are read-only copies, resharding_only ones first.
	Replicas []*Node
}

// Node is one PostgreSQL server of a shard.
type Node struct {
	// Cluster is the cluster name.
	Cluster string
	// Shard is the shard number.
	Shard int
	// Host and Port locate the server.
	Host string
	Port int
	// Database is the real database name on the server.
	Database string
	// Role is "primary" or "replica".
	Role string
	// ReshardingOnly marks a replica reserved for copy work.
	ReshardingOnly bool
	// User and Password override the cluster's schema_admin login.
	User     string
	Password string
}

// Addr is host:port.
func (n *Node) Addr() string { return net.JoinHostPort(n.Host, strconv.Itoa(n.Port)) }

// String identifies the node in logs and errors.
func (n *Node) String() string {
	return fmt.Sprintf("%s shard %d %s (%s/%s)", n.Cluster, n.Shard, n.Role, n.Addr(), n.Database)
}

// New validates the configuration and users and builds the catalog. Every
// problem found is reported, each naming its file, key and line.
func New(cfg *Config, users *Users) (*Catalog, error) {
	ce := &errList{file: cfg.Path, pos: cfg.pos}
	ue := &errList{file: users.Path, pos: users.pos}
	c := &Catalog{Config: cfg, Users: users, clusters: map[string]*Cluster{}}

	g := cfg.General
	if g.Port < 1 || g.Port > 65535 {
		ce.add("general.port", "port %d out of range 1-65535", g.Port)
	}
	if g.OpenMetricsPort < 0 || g.OpenMetricsPort > 65535 {
		ce.add("general.openmetrics_port", "port %d out of range 1-65535", g.OpenMetricsPort)
	}
	if g.OpenMetricsPort != 0 && g.OpenMetricsPort == g.Port {
		ce.add("general.openmetrics_port", "same port as general.port (%d)", g.Port)
	}
	switch g.ReshardingCopyFormat {
	case "binary", "text":
	default:
		ce.add("general.resharding_copy_format", "%q is not a copy format (binary or text)", g.ReshardingCopyFormat)
	}
	if g.ReshardingParallelCopies < 1 || g.ReshardingParallelCopies > 256 {
		ce.add("general.resharding_parallel_copies", "%d is out of range 1-256", g.ReshardingParallelCopies)
	}
	if g.ReshardingSplitThreshold < 0 {
		ce.add("general.resharding_split_threshold", "must not be negative")
	}
	if g.ReshardingNetworkTimeout < 0 {
		ce.add("general.resharding_network_timeout", "must not be negative")
	}
	if g.ReshardingStreamMemory < 0 {
		ce.add("general.resharding_stream_memory", "must not be negative")
	}
	if (g.TLSCertificate == "") != (g.TLSPrivateKey == "") {
		ce.add("general.tls_certificate", "tls_certificate and tls_private_key must be set together")
	}
	if g.TLSClientRequired && g.TLSCertificate == "" {
		ce.add("general.tls_client_required", "tls_client_required needs tls_certificate and tls_private_key")
	}
	switch g.AuthType {
	case AuthSCRAM, AuthMD5, AuthPlain:
	case "trust":
		ce.add("general.auth_type", "\"trust\" is not accepted for the admin server, which always asks for [admin] password: use \"scram\", \"md5\" or \"plain\"")
	default:
		ce.add("general.auth_type", "%q is not an authentication type (scram, md5 or plain)", g.AuthType)
	}
	switch g.ReshardingDDL {
	case DDLStop, DDLReplicate:
	default:
		ce.add("general.resharding_ddl", "%q is not stop or replicate", g.ReshardingDDL)
	}
	switch g.CutoverTimeoutAction {
	case CutoverTimeoutAbort, CutoverTimeoutCutover:
	default:
		ce.add("general.cutover_timeout_action", "%q is not abort or cutover", g.CutoverTimeoutAction)
	}
	if g.CutoverReplicationLagThreshold != 0 {
		ce.add("general.cutover_replication_lag_threshold", "is %d, but reshard cuts over only once every change committed before writes were blocked is applied (lag 0, which it waits for): remove the setting or set it to 0 (cutover_traffic_stop_threshold is the lag under which writes are blocked)", g.CutoverReplicationLagThreshold)
	}
	if g.CutoverTimeout < 0 {
		ce.add("general.cutover_timeout", "must not be negative")
	}
	switch g.ReshardingForeignKeys {
	case "validate", "not_valid", "skip":
	default:
		ce.add("general.resharding_foreign_keys", "%q is not validate, not_valid or skip", g.ReshardingForeignKeys)
	}

	// Nodes, grouped into clusters and shards.
	type shardNodes struct {
		primaries []int
		nodes     []*Node
	}
	byCluster := map[string]map[int]*shardNodes{}
	for i := range cfg.Databases {
		d := &cfg.Databases[i]
		key := fmt.Sprintf("databases[%d]", i)
		if d.Name == "" {
			ce.add(key+".name", "name is required")
			continue
		}
		if d.Host == "" {
			ce.add(key+".host", "host is required for database %q", d.Name)
		}
		if d.Port < 1 || d.Port > 65535 {
			ce.add(key+".port", "port %d out of range 1-65535", d.Port)
		}
		role := d.Role
		if role == "auto" {
			role = "primary"
		}
		if role != "primary" && role != "replica" {
			ce.add(key+".role", "%q is not a role (primary or replica)", d.Role)
			continue
		}
		if *d.Shard < 0 {
			ce.add(key+".shard", "shard %d must not be negative", *d.Shard)
			continue
		}
		if d.ReshardingOnly && role == "primary" {
			ce.add(key+".resharding_only", "only a replica can be resharding_only")
		}
		if byCluster[d.Name] == nil {
			byCluster[d.Name] = map[int]*shardNodes{}
			c.names = append(c.names, d.Name)
		}
		sn := byCluster[d.Name][*d.Shard]
		if sn == nil {
			sn = &shardNodes{}
			byCluster[d.Name][*d.Shard] = sn
		}
		n := &Node{Cluster: d.Name, Shard: *d.Shard, Host: d.Host, Port: d.Port, Database: d.DatabaseName,
			Role: role, ReshardingOnly: d.ReshardingOnly, User: d.User, Password: d.Password}
		if role == "primary" {
			sn.primaries = append(sn.primaries, i)
		}
		sn.nodes = append(sn.nodes, n)
	}
	for _, name := range c.names {
		shards := byCluster[name]
		cl := &Cluster{Name: name}
		max := -1
		for k := range shards {
			if k > max {
				max = k
			}
		}
		for k := 0; k <= max; k++ {
			sn, ok := shards[k]
			if !ok {
				ce.add(firstDatabaseKey(cfg, name), "cluster %q has shards up to %d but no shard %d: shards must be numbered 0..N-1 without gaps", name, max, k)
				continue
			}
			sh := &Shard{Number: k}
			switch len(sn.primaries) {
			case 0:
				ce.add(firstDatabaseKey(cfg, name), "cluster %q shard %d has no primary", name, k)
			case 1:
			default:
				ce.add(fmt.Sprintf("databases[%d].role", sn.primaries[1]), "cluster %q shard %d has more than one primary (databases[%d] and databases[%d])", name, k, sn.primaries[0], sn.primaries[1])
			}
			for _, n := range sn.nodes {
				if n.Role == "primary" && sh.Primary == nil {
					sh.Primary = n
				} else if n.Role == "replica" {
					sh.Replicas = append(sh.Replicas, n)
				}
			}
			sort.SliceStable(sh.Replicas, func(a, b int) bool {
				return sh.Replicas[a].ReshardingOnly && !sh.Replicas[b].ReshardingOnly
			})
			cl.Shards = append(cl.Shards, sh)
		}
		c.clusters[name] = cl
	}

	// Users: one schema_admin per cluster.
	for i := range users.Users {
		u := &users.Users[i]
		key := fmt.Sprintf("users[%d]", i)
		if u.Name == "" {
			ue.add(key+".name", "name is required")
			continue
		}
		if u.Database == "" {
			ue.add(key+".database", "database is required for user %q", u.Name)
			continue
		}
		cl, ok := c.clusters[u.Database]
		if !ok {
			ue.add(key+".database", "user %q names database %q, which is not in %s (known: %s)", u.Name, u.Database, cfg.Path, strings.Join(c.names, ", "))
			continue
		}
		if u.SchemaAdmin {
			if cl.Admin != nil {
				ue.add(key+".schema_admin", "database %q has more than one schema_admin user (%q and %q)", u.Database, cl.Admin.Name, u.Name)
				continue
			}
			cl.Admin = u
		}
	}
	for _, name := range c.names {
		if c.clusters[name].Admin == nil {
			ue.add("users", "no user with schema_admin = true for database %q: reshard connects as that user", name)
		}
	}

	// Sharded tables.
	for i := range cfg.ShardedTables {
		t := &cfg.ShardedTables[i]
		key := fmt.Sprintf("sharded_tables[%d]", i)
		cl, ok := c.clusters[t.Database]
		if !ok {
			ce.add(key+".database", "sharded table names database %q, which is not configured (known: %s)", t.Database, strings.Join(c.names, ", "))
			continue
		}
		if t.Column == "" {
			ce.add(key+".column", "column is required")
			continue
		}
		if !dataTypes[t.DataType] {
			ce.add(key+".data_type", "data type %q is not supported (supported: %s)", t.DataType, strings.Join(SupportedDataTypes(), ", "))
			continue
		}
		for j, m := range t.Mapping {
			mk := fmt.Sprintf("%s.mapping[%d]", key, j)
			checkMapping(ce, mk, m.Shard, len(cl.Shards), m.Values, m.Start, m.End)
		}
		cl.ShardedTables = append(cl.ShardedTables, t)
	}
	for i := range cfg.Mappings {
		m := &cfg.Mappings[i]
		key := fmt.Sprintf("sharded_mappings[%d]", i)
		cl, ok := c.clusters[m.Database]
		if !ok {
			ce.add(key+".database", "mapping names database %q, which is not configured", m.Database)
			continue
		}
		switch m.Kind {
		case "list", "range":
		default:
			ce.add(key+".kind", "%q is not a mapping kind (list or range)", m.Kind)
			continue
		}
		if !checkMapping(ce, key, m.Shard, len(cl.Shards), m.Values, m.Start, m.End) {
			continue
		}
		var target *ShardedTable
		for _, t := range cl.ShardedTables {
			if t.Column == m.Column && (m.Table == "" || t.Name == m.Table) {
				target = t
				break
			}
		}
		if target == nil {
			ce.add(key+".column", "no [[sharded_tables]] entry for database %q column %q table %q", m.Database, m.Column, m.Table)
			continue
		}
		target.Mapping = append(target.Mapping, Mapping{Shard: m.Shard, Values: m.Values, Start: m.Start, End: m.End})
	}
	for i := range cfg.OmniTables {
		o := &cfg.OmniTables[i]
		cl, ok := c.clusters[o.Database]
		if !ok {
			ce.add(fmt.Sprintf("omnisharded_tables[%d].database", i), "names database %q, which is not configured", o.Database)
			continue
		}
		cl.OmniTables = append(cl.OmniTables, o.Tables...)
	}

	errs := append(ce.errs, ue.errs...)
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

func checkMapping(l *errList, key string, shard, nshards int, values []any, start, end any) bool {
	ok := true
	if shard < 0 || shard >= nshards {
		l.add(key+".shard", "shard %d does not exist (the cluster has %d shards)", shard, nshards)
		ok = false
	}
	if len(values) == 0 && start == nil && end == nil {
		l.add(key, "a mapping needs values (list) or start/end (range)")
		ok = false
	}
	if len(values) > 0 && (start != nil || end != nil) {
		l.add(key, "a mapping has either values or start/end, not both")
		ok = false
	}
	return ok
}

func firstDatabaseKey(cfg *Config, name string) string {
	for i := range cfg.Databases {
		if cfg.Databases[i].Name == name {
			return fmt.Sprintf("databases[%d].shard", i)
		}
	}
	return "databases"
}

// Cluster returns the cluster called name.
func (c *Catalog) Cluster(name string) (*Cluster, bool) {
	cl, ok := c.clusters[name]
	return cl, ok
}

// Clusters returns every cluster in the order the configuration names them.
func (c *Catalog) Clusters() []*Cluster {
	out := make([]*Cluster, 0, len(c.names))
	for _, n := range c.names {
		out = append(out, c.clusters[n])
	}
	return out
}

// ClusterNames lists the configured cluster names.
func (c *Catalog) ClusterNames() []string {
	return append([]string(nil), c.names...)
}

// CheckListen verifies that the ports reshard will listen on are free.
func (c *Catalog) CheckListen() error {
	check := func(key string, port int) *ConfigError {
		l, err := net.Listen("tcp", net.JoinHostPort(c.Config.General.Host, strconv.Itoa(port)))
		if err != nil {
			return &ConfigError{File: c.Config.Path, Line: c.Config.pos.line(key), Key: key, Msg: fmt.Sprintf("cannot listen on %s:%d: %v", c.Config.General.Host, port, err)}
		}
		l.Close()
		return nil
	}
	var errs ConfigErrors
	if e := check("general.port", c.Config.General.Port); e != nil {
		errs = append(errs, e)
	}
	if p := c.Config.General.OpenMetricsPort; p != 0 {
		if e := check("general.openmetrics_port", p); e != nil {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// Load reads, decodes and validates both configuration files.
func Load(configPath, usersPath string) (*Catalog, error) {
	cdata, err := os.ReadFile(configPath)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	udata, err := os.ReadFile(usersPath)
	if err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	// Every problem of both files at once: what cannot be decoded, then
	// what the decoded values break (a key already reported is not
	// reported again for the zero value it was left with).
	cfg, errs := parseConfig(configPath, cdata)
	users, uerrs := parseUsers(usersPath, udata)
	errs = append(errs, uerrs...)
	cat, err := New(cfg, users)
	if len(errs) == 0 {
		return cat, err
	}
	var verrs ConfigErrors
	if !errors.As(err, &verrs) && err != nil {
		return nil, append(errs, &ConfigError{File: configPath, Msg: err.Error()})
	}
	reported := map[string]bool{}
	for _, e := range errs {
		reported[e.File+"\x00"+e.Key] = true
	}
	for _, e := range verrs {
		if !reported[e.File+"\x00"+e.Key] {
			errs = append(errs, e)
		}
	}
	sort.SliceStable(errs, func(a, b int) bool {
		if errs[a].File != errs[b].File {
			return errs[a].File == configPath
		}
		return errs[a].Line < errs[b].Line
	})
	return nil, errs
}
