package pgtest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestStartTwoInstances(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, 2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	root := c.Root
	if c.Instances[0].Port == c.Instances[1].Port {
		t.Fatalf("both instances on port %d", c.Instances[0].Port)
	}
	for _, inst := range c.Instances {
		conn, err := inst.Connect(ctx, "postgres")
		if err != nil {
			t.Fatal(err)
		}
		var wal, fsync string
		if err := conn.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('fsync')").Scan(&wal, &fsync); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		if wal != "logical" || fsync != "off" {
			t.Fatalf("wal_level=%s fsync=%s", wal, fsync)
		}
	}
	// A wrong password is refused: the harness really uses password auth.
	inst := c.Instances[0]
	if conn, err := pgx.Connect(ctx, strings.Replace(inst.DSN("postgres"), Password, "wrong", 1)); err == nil {
		conn.Close(ctx)
		t.Fatal("wrong password accepted")
	}
	if err := inst.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := inst.Exec(ctx, "app", "CREATE TABLE t(id int primary key); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := inst.Restart(ctx, c.BinDir); err != nil {
		t.Fatal(err)
	}
	conn, err := inst.Connect(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after restart: n=%d err=%v", n, err)
	}
	conn.Close(ctx)
	c.Stop()
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatalf("root %s not removed: %v", root, err)
	}
}
