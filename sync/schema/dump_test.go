package schema

import (
	"context"
	"strings"
	"testing"
)

// TestDumpCommandKeepsPasswordOffTheCommandLine: pg_dump's arguments (which
// ps shows to every user) never carry the password; its environment does.
func TestDumpCommandKeepsPasswordOffTheCommandLine(t *testing.T) {
	const password = "Pw-d1stinct'\" @/:%?;ü"
	src := DumpSource{Host: "db.example", Port: 5433, Database: "app", User: "admin", Password: password}
	cmd := dumpCommand(context.Background(), "/usr/bin/pg_dump", src)
	for _, a := range cmd.Args {
		for _, part := range []string{password, "Pw-d1stinct", "PGPASSWORD"} {
			if strings.Contains(a, part) {
				t.Fatalf("pg_dump argument %q carries the password", a)
			}
		}
	}
	if got := strings.Join(cmd.Args[1:], " "); got != "--schema-only --no-subscriptions --host db.example --port 5433 --username admin --dbname app" {
		t.Fatalf("pg_dump arguments: %s", got)
	}
	// exec takes the last of duplicate variables: reshard's comes after
	// any PGPASSWORD inherited from its own environment.
	last := ""
	for _, e := range cmd.Env {
		if strings.HasPrefix(e, "PGPASSWORD=") {
			last = e
		}
	}
	if last != "PGPASSWORD="+password {
		t.Fatalf("pg_dump's environment sets %q", last)
	}
}
