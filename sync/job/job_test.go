package job

import (
	"errors"
	"strings"
	"testing"

	"github.com/reshard/reshard/catalog"
)

const testConfig = `
[admin]
password = "secret"

[[databases]]
name = "prod"
host = "10.0.0.1"

[[databases]]
name = "prod"
host = "10.0.0.9"
role = "replica"

[[databases]]
name = "sharded"
host = "10.0.0.2"
shard = 0

[[databases]]
name = "sharded"
host = "10.0.0.3"
shard = 1
database_name = "app"
`

const testUsers = `
[[users]]
name = "a"
database = "prod"
password = "p"
schema_admin = true

[[users]]
name = "b"
database = "sharded"
password = "q"
schema_admin = true
`

func testCatalog(t *testing.T) *catalog.Catalog {
	t.Helper()
	cfg, err := catalog.ParseConfig("pgdog.toml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	users, err := catalog.ParseUsers("users.toml", []byte(testUsers))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.New(cfg, users)
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func TestNewResolvesClustersAndConnectionStrings(t *testing.T) {
	j, err := New(Spec{Catalog: testCatalog(t), Source: "prod", Destination: "sharded", Publication: "pub", Task: "7"})
	if err != nil {
		t.Fatal(err)
	}
	if len(j.SourceDSN) != 1 || !strings.Contains(j.SourceDSN[0], "10.0.0.1") || !strings.Contains(j.SourceDSN[0], "a:p@") {
		t.Fatalf("source DSN %v", j.SourceDSN)
	}
	if len(j.SourceReplicaDSN) != 1 || len(j.SourceReplicaDSN[0]) != 1 || !strings.Contains(j.SourceReplicaDSN[0][0], "10.0.0.9") {
		t.Fatalf("replica DSN %v", j.SourceReplicaDSN)
	}
	if len(j.DestinationDSN) != 2 || !strings.Contains(j.DestinationDSN[1], "10.0.0.3:5432/app") || !strings.Contains(j.DestinationDSN[0], "b:q@") {
		t.Fatalf("destination DSN %v", j.DestinationDSN)
	}
	if j.Registry == nil || j.Task != "7" || j.Publication != "pub" {
		t.Fatalf("job %+v", j)
	}
	r := j.Reversed()
	if r.Source.Name != "sharded" || r.Destination.Name != "prod" || len(r.SourceDSN) != 2 || r.DestinationDSN[0] != j.SourceDSN[0] {
		t.Fatalf("reversed %+v", r)
	}
	if len(r.SourceReplicaDSN) != 2 || len(r.SourceReplicaDSN[0]) != 0 {
		t.Fatalf("reversed replicas %v", r.SourceReplicaDSN)
	}
	if j.Source.Name != "prod" {
		t.Fatal("Reversed changed the job it was called on")
	}
}

func TestNewRefusesAnUnknownCluster(t *testing.T) {
	_, err := New(Spec{Catalog: testCatalog(t), Source: "prod", Destination: "nope"})
	var je *Error
	if !errors.As(err, &je) || je.Code != "3D000" || !strings.Contains(je.Message, `"nope"`) {
		t.Fatalf("unknown destination: %v", err)
	}
}

func TestWritableDestination(t *testing.T) {
	j, err := New(Spec{Catalog: testCatalog(t), Source: "prod", Destination: "sharded"})
	if err != nil {
		t.Fatal(err)
	}
	w := j.WritableDestination()
	for k, dsn := range w.DestinationDSN {
		if !strings.HasPrefix(dsn, j.DestinationDSN[k]) || !strings.HasSuffix(dsn, "&options=-cdefault_transaction_read_only%3Doff") {
			t.Fatalf("writable destination DSN %q", dsn)
		}
	}
	if strings.Contains(j.DestinationDSN[0], "options") || strings.Contains(w.SourceDSN[0], "options") {
		t.Fatal("the job itself or its source changed")
	}
}
