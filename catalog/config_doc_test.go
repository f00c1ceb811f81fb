package catalog

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// tomlKeys collects the toml keys of a struct type and of the struct types
// it contains (embedded structs' keys belong to the outer table).
func tomlKeys(t reflect.Type, into map[string]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if f.Anonymous && name == "" {
			tomlKeys(f.Type, into)
			continue
		}
		if name == "" || name == "-" {
			continue
		}
		into[name] = true
		tomlKeys(f.Type, into)
	}
}

// TestEveryKeyDocumented: every key pgdog.toml and users.toml accept is in
// docs/configuration.md.
func TestEveryKeyDocumented(t *testing.T) {
	data, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	keys := map[string]bool{}
	tomlKeys(reflect.TypeOf(Config{}), keys)
	tomlKeys(reflect.TypeOf(Users{}), keys)
	if len(keys) < 100 {
		t.Fatalf("found only %d keys: the walk over the structs is broken", len(keys))
	}
	for k := range keys {
		// A key is written `key`, or as a section: [key], [[key]].
		if !strings.Contains(doc, "`"+k+"`") && !strings.Contains(doc, "["+k+"]") {
			t.Errorf("docs/configuration.md does not mention `%s`", k)
		}
	}
}

// TestExamplesLoad: the example configurations load and describe the
// reshards their directories are named after.
func TestExamplesLoad(t *testing.T) {
	for dir, shards := range map[string]int{"1-to-2": 2, "1-to-4": 4} {
		cat, err := Load("../examples/"+dir+"/pgdog.toml", "../examples/"+dir+"/users.toml")
		if err != nil {
			t.Fatalf("examples/%s: %v", dir, err)
		}
		src, ok := cat.Cluster("prod")
		if !ok || len(src.Shards) != 1 {
			t.Fatalf("examples/%s: source prod: %v", dir, ok)
		}
		dst, ok := cat.Cluster("prod_sharded")
		if !ok || len(dst.Shards) != shards || len(dst.ShardedTables) != 2 || dst.Admin == nil {
			t.Fatalf("examples/%s: prod_sharded has %d shards, want %d", dir, len(dst.Shards), shards)
		}
	}
}
