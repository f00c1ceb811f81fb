package catalog

import (
	"errors"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary pgdog.toml and users.toml content to the loader:
// it yields a catalog or a clear error (naming the file), never a panic,
// and a catalog it yields is consistent.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(goodConfig), []byte(goodUsers))
	f.Add([]byte(goodConfig+"\n[general]\nport = 1\n"), []byte(goodUsers))
	f.Add([]byte(strings.Replace(goodConfig, "port = 6432", "port = 99999999999999999999", 1)), []byte(goodUsers))
	f.Add([]byte("[general]\nport = \"x\"\n"), []byte(""))
	f.Add([]byte("[[databases]]\nname = \"a\"\nshard = -1\n[[databases]]\nname = \"a\"\nshard = 7\n"), []byte("[[users]]\n"))
	f.Add([]byte("[[sharded_tables]]\ndatabase = \"x\"\ncolumn = \"\"\n[[sharded_tables.mapping]]\nshard = 9\nstart = \"a\"\nend = []\n"), []byte(goodUsers))
	f.Add([]byte("a = \"\x00\"\n[admin\npassword = '''\n"), []byte("\xff\xfe"))
	f.Add([]byte("[general]\nhost = \"\u202e\"\n[admin]\npassword = \""+strings.Repeat("p", 1000)+"\"\n"), []byte(goodUsers))
	f.Fuzz(func(t *testing.T, config, users []byte) {
		cat, err := parseAndBuild(config, users)
		if err != nil {
			msg := err.Error()
			if msg == "" || !(strings.Contains(msg, "pgdog.toml") || strings.Contains(msg, "users.toml")) {
				t.Fatalf("error does not name the file: %q", msg)
			}
			var ce *ConfigError
			var ces ConfigErrors
			if !errors.As(err, &ce) && !errors.As(err, &ces) {
				t.Fatalf("error of type %T, not a ConfigError: %v", err, err)
			}
			return
		}
		if cat == nil {
			t.Fatal("no catalog and no error")
		}
		for _, name := range cat.ClusterNames() {
			cl, ok := cat.Cluster(name)
			if !ok || len(cl.Shards) == 0 {
				t.Fatalf("cluster %q listed but not usable", name)
			}
			for i, sh := range cl.Shards {
				if sh == nil || sh.Primary == nil {
					t.Fatalf("cluster %q shard %d has no primary", name, i)
				}
			}
			if cl.Admin == nil {
				t.Fatalf("cluster %q has no schema_admin user", name)
			}
		}
		if g := cat.Config.General; g.Port < 1 || g.Port > 65535 {
			t.Fatalf("port %d accepted", g.Port)
		}
	})
}

// parseAndBuild is Load on in-memory content.
func parseAndBuild(config, users []byte) (*Catalog, error) {
	cfg, err := ParseConfig("pgdog.toml", config)
	if err != nil {
		return nil, err
	}
	u, err := ParseUsers("users.toml", users)
	if err != nil {
		return nil, err
	}
	return New(cfg, u)
}
