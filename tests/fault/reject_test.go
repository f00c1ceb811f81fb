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
	w.waitWrites(t, w.counts(), 300, time.Minute)
	shard := e.dst[1]
	admin := db{shard.inst, "postgres"}
	before := w.counts()
	inject(t, "a shard rejecting writes", func() {
		admin.exec(t, fmt.Sprintf(`ALTER DATABASE %s SET statement_timeout = '1ms'`, shard.name))
		admin.exec(t, fmt.Sprintf(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'`, shard.name))
	})
	var state, msg string
	failed := func() bool {
		state, msg = task()
		return state == "failed"
	}
	// The task fails within the network timeout of its writes; with the
	// fault off it never does (a bounded wait, then the check fails).
	for deadline := time.Now().Add(time.Minute); !failed() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	hit(t, state == "failed" && strings.Contains(msg, "statement timeout"), "the task failed and SHOW TASKS says why: %s: %q", state, msg)
	hit(t, w.counts().minus(before).writes > 0, "the source took writes while the shard rejected them: %s", w.counts().minus(before))
	admin.exec(t, fmt.Sprintf(`ALTER DATABASE %s RESET statement_timeout`, shard.name))
	restarts.Add(1)
	start()
	w.waitWrites(t, w.counts(), 300, time.Minute)
	w.halt(t)
	checkWrites(t, "the write load of the scenario", w.counts())
	e.waitSame(t, 3*time.Minute)
	if state, msg := task(); state != "streaming" {
		t.Fatalf("the resumed task is %s: %s", state, msg)
	}
}
