package fault

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/commands"
)

// TestShardRejectsWrites: while a COPY_DATA task streams under a write
// load, destination shard 1 starts rejecting writes (statement_timeout of
// 1ms on its database, every session ended: a stand-in for a full disk).
// The task must stop with an error that says why, visible in SHOW TASKS;
// once the cause is removed, the same COPY_DATA resumes it, and the shards
// equal the source.
func TestShardRejectsWrites(t *testing.T) {
	e := newEnv(t, "reject", newSource(t, "fault_reject", 20_000), "")
	e.schemaPre(t)
	cat, err := catalog.Load(e.cfgPath, e.usersPath)
	if err != nil {
		t.Fatal(err)
	}
	ex := commands.NewExecutor(cat, hclog.New(&hclog.LoggerOptions{Name: "reshard", Level: hclog.Warn, Output: os.Stderr}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	defer ex.Tasks.StopAll(context.Background())
	w := startWriter(t, e.src, 6)
	copyData := commands.CopyData{Route: commands.Route{Source: "src", Destination: "dst", Publication: "pub"}, Slot: e.slot}
	task := func() (state, msg string) {
		res, err := ex.Execute(ctx, commands.Show{Name: "tasks"})
		if err != nil {
			t.Fatal(err)
		}
		last := res.Rows[len(res.Rows)-1]
		return fmt.Sprint(last[5]), fmt.Sprint(last[8])
	}
	start := func() {
		if _, err := ex.Execute(ctx, copyData); err != nil {
			t.Fatalf("COPY_DATA: %v", err)
		}
		waitFor(t, 3*time.Minute, "the task to stream", func() bool {
			state, msg := task()
			if state == "failed" || state == "stopped" {
				t.Fatalf("task %s: %s", state, msg)
			}
			return state == "streaming"
		})
	}
	start()
	time.Sleep(time.Second)
	shard := e.dst[1]
	admin := db{shard.inst, "postgres"}
	admin.exec(t, fmt.Sprintf(`ALTER DATABASE %s SET statement_timeout = '1ms'`, shard.name))
	admin.exec(t, fmt.Sprintf(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'`, shard.name))
	faultsInjected.Add(1)
	var state, msg string
	waitFor(t, 2*time.Minute, "the task to fail", func() bool {
		state, msg = task()
		return state == "failed"
	})
	t.Logf("SHOW TASKS: %s: %s", state, msg)
	if !strings.Contains(msg, "statement timeout") {
		t.Fatalf("the task's error does not say why it failed: %q", msg)
	}
	admin.exec(t, fmt.Sprintf(`ALTER DATABASE %s RESET statement_timeout`, shard.name))
	restarts.Add(1)
	start()
	time.Sleep(2 * time.Second)
	w.halt(t)
	t.Logf("%d source writes during the scenario", w.writes)
	e.waitSame(t, 3*time.Minute)
	if state, msg := task(); state != "streaming" {
		t.Fatalf("the resumed task is %s: %s", state, msg)
	}
}
