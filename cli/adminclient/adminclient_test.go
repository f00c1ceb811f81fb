package adminclient_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cli/adminclient"
	"github.com/reshard/reshard/commands"
	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

// TestURL: the configuration's listen address becomes a reachable one,
// with the admin user, password (escaped) and database.
func TestURL(t *testing.T) {
	for host, want := range map[string]string{"": "127.0.0.1:6432", "0.0.0.0": "127.0.0.1:6432", "::": "[::1]:6432", "10.1.2.3": "10.1.2.3:6432"} {
		cfg := &catalog.Config{}
		cfg.General.Host, cfg.General.Port = host, 6432
		cfg.Admin.User, cfg.Admin.Password, cfg.Admin.Name = "admin", "p@ss/word", "admin"
		u := adminclient.URL(cfg)
		if !strings.Contains(u, "@"+want+"/admin?") || !strings.Contains(u, "admin:p%40ss%2Fword@") || !strings.Contains(u, "sslmode=prefer") {
			t.Errorf("host %q: %s", host, u)
		}
	}
}

// TestDialNoServer: nothing listens: a connection_failure error that says
// where it looked and what to check.
func TestDialNoServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = adminclient.Dial(ctx, "postgres://admin:x@"+addr+"/admin?sslmode=disable")
	var ce *commands.Error
	if !errors.As(err, &ce) || ce.Code != commands.CodeConnectionFailure || !strings.Contains(ce.Message, addr) || !strings.Contains(ce.Hint, "reshard serve") {
		t.Fatalf("Dial with no server: %#v", err)
	}
	if _, err := adminclient.Dial(ctx, "postgres://admin:x@127.0.0.1:notaport/admin"); err == nil || !strings.Contains(err.Error(), "admin server address") {
		t.Fatalf("Dial of a bad address: %v", err)
	}
}

// TestClientAgainstServer runs the client against a real admin server (in
// process, as reshard serve runs it) on real PostgreSQL: results with their
// columns, server errors with their SQLSTATE, a wrong password, and Mirror
// copying a streaming task's slot into a registry and dropping it when the
// task stops.
func TestClientAgainstServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := pgtest.Start(ctx, 1, pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	inst := cl.Instances[0]
	for _, db := range []string{"app", "s0", "s1"} {
		if err := inst.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
		if err := inst.Exec(ctx, db, `CREATE TABLE t (id bigint PRIMARY KEY, v text)`); err != nil {
			t.Fatal(err)
		}
	}
	if err := inst.Exec(ctx, "app", `INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g; CREATE PUBLICATION all_tables FOR ALL TABLES`); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("[general]\nport = 0\n[admin]\npassword = \"secret\"\n[[databases]]\nname = \"src\"\nhost = \"127.0.0.1\"\nport = %d\ndatabase_name = \"app\"\n", inst.Port)
	for k, db := range []string{"s0", "s1"} {
		cfg += fmt.Sprintf("[[databases]]\nname = \"dst\"\nhost = \"127.0.0.1\"\nport = %d\ndatabase_name = %q\nshard = %d\n", inst.Port, db, k)
	}
	cfg += "[[sharded_tables]]\ndatabase = \"dst\"\ncolumn = \"id\"\n"
	cfgPath, usersPath := testkit.WriteConfig(t, t.TempDir(), cfg)
	cat, err := catalog.Load(cfgPath, usersPath)
	if err != nil {
		t.Fatal(err)
	}
	exec := commands.NewExecutor(cat, hclog.NewNullLogger())
	go exec.WatchSlots(ctx) // as reshard serve runs it
	addr, _ := testkit.ServeAdmin(t, cat, exec, hclog.NewNullLogger())
	dsn := fmt.Sprintf("postgres://admin:secret@%s/admin?sslmode=disable", addr)

	if _, err := adminclient.Dial(ctx, fmt.Sprintf("postgres://admin:wrong@%s/admin?sslmode=disable", addr)); err == nil || !strings.Contains(err.Error(), commands.CodeInvalidPassword) {
		t.Fatalf("a wrong password: %v", err)
	}
	c, err := adminclient.Dial(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	res, err := c.Run(ctx, commands.Show{Name: "version"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 1 || len(res.Columns) == 0 || res.Tag == "" {
		t.Fatalf("SHOW VERSION: %+v", res)
	}
	// A server error keeps its SQLSTATE, message and hint.
	_, err = c.Run(ctx, commands.Show{Name: "no_such_view"})
	var ce *commands.Error
	if !errors.As(err, &ce) || ce.Code == "" || !strings.Contains(ce.Message, "no_such_view") {
		t.Fatalf("SHOW of an unknown view: %#v", err)
	}
	_, err = c.Run(ctx, commands.StopTask{Task: "999"})
	if !errors.As(err, &ce) || ce.Code != commands.CodeUndefinedObject || !strings.Contains(ce.Message, "999") {
		t.Fatalf("STOP_TASK of no task: %#v", err)
	}
	// The connection is still usable after errors.
	if _, err := c.Run(ctx, commands.Show{Name: "tasks"}); err != nil {
		t.Fatalf("SHOW TASKS after errors: %v", err)
	}

	// A streaming task: Mirror shows its slot, then drops it.
	res, err = c.Run(ctx, commands.CopyData{Route: commands.Route{Source: "src", Destination: "dst", Publication: "all_tables"}, Slot: "mirror_slot"})
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprint(res.Rows[0][0])
	tk, ok := exec.Tasks.Get(id)
	if !ok {
		t.Fatalf("task %s not in the server's tasks", id)
	}
	if _, _, err := tk.WaitState(ctx, func(s string) bool { return s == "streaming" }); err != nil {
		t.Fatal(err)
	}
	reg := progress.NewRegistry()
	// The server lists the slot active once its stream has connected.
	var stop func()
	for deadline := time.Now().Add(time.Minute); ; {
		if stop, err = c.Mirror(ctx, reg, 20*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if len(reg.Slots()) == 1 {
			break
		}
		stop()
		if time.Now().After(deadline) {
			t.Fatalf("Mirror shows no slot of the streaming task: %+v", reg.Slots())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The stream confirms a position once it has applied a change.
	if err := inst.Exec(ctx, "app", `INSERT INTO t VALUES (1001, 'streamed')`); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); len(reg.Slots()) != 1 || reg.Slots()[0].Confirmed == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("Mirror shows no confirmed position: %+v", reg.Slots())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s := reg.Slots()[0]
	if s.Name != "mirror_slot" || s.Port != inst.Port || s.Database != "app" || s.Confirmed == 0 || s.Task != "server" {
		t.Fatalf("mirrored slot: %+v", s)
	}
	if _, err := c.Run(ctx, commands.StopTask{Task: id}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); len(reg.Slots()) != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the stopped task's slot is still mirrored: %+v", reg.Slots())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := inst.Exec(ctx, "app", `SELECT pg_drop_replication_slot('mirror_slot')`); err != nil {
		t.Fatal(err)
	}
}
