package tests

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reshard/reshard/tests/testkit"
)

// buildReshard builds the reshard binary for tests that run it as a process.
func buildReshard(t *testing.T) string { return testkit.BuildReshard(t) }

// TestCopyResumesAfterKill kills reshard (SIGKILL) in the middle of a copy,
// runs the same command again, and checks that the copy completes exactly
// and that units finished before the kill were not copied again.
func TestCopyResumesAfterKill(t *testing.T) {
	bin := buildReshard(t)
	e := newCopyEnv(t, "cpkill", 1, 2, "resharding_split_threshold = 1048576")
	e.setup(t, 2000)
	e.src[0].exec(t, `CREATE TABLE big (id bigint PRIMARY KEY, customer_id bigint, pad text);
		INSERT INTO big SELECT g, g % 1000, repeat(md5(g::text), 3) FROM generate_series(1, 400000) g;
		CREATE TABLE bigu (uid uuid PRIMARY KEY, customer_id bigint, pad text);
		INSERT INTO bigu SELECT md5(g::text)::uuid, g % 777, repeat(md5(g::text), 3) FROM generate_series(1, 200000) g;`)
	for _, d := range e.dst {
		d.exec(t, `CREATE TABLE big (id bigint PRIMARY KEY, customer_id bigint, pad text); CREATE TABLE bigu (uid uuid PRIMARY KEY, customer_id bigint, pad text)`)
	}
	args := []string{"--config", e.cfgPath, "--users", e.usersPath, "data-sync", "--from-database", "src", "--to-database", "dst",
		"--publication", "all_tables", "--replication-slot", "cpkill_slot", "--sync-only"}
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Kill once some units are done and others are not.
	var doneBefore []string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case err := <-exited:
			t.Fatalf("copy finished (%v) before it could be killed:\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no partial progress seen:\n%s", out.String())
		}
		if e.dst[0].one(t, `SELECT to_regclass('reshard.copy_units') IS NOT NULL`) == "true" {
			counts := e.dst[0].one(t, `SELECT count(*) FILTER (WHERE done), count(*) FILTER (WHERE NOT done) FROM reshard.copy_units WHERE slot = 'cpkill_slot'`)
			f := strings.Split(counts, " | ")
			if f[0] != "0" && f[1] != "0" {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				<-exited
				doneBefore = query(t, e.dst[0].inst, e.dst[0].db, `SELECT table_name || ' ' || unit || ' ' || finished_at::text FROM reshard.copy_units WHERE slot = 'cpkill_slot' AND done`)
				t.Logf("killed with %s units done, %s not done", f[0], f[1])
				break
			}
		}
		time.Sleep(3 * time.Millisecond)
	}
	out.Reset()
	second := exec.Command(bin, args...)
	second.Stdout, second.Stderr = &out, &out
	if err := second.Run(); err != nil {
		t.Fatalf("second run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "cpkill_slot") || !strings.Contains(out.String(), "true") {
		t.Fatalf("second run did not report a resumed copy:\n%s", out.String())
	}
	// Units finished before the kill kept their finish time (not copied again),
	// unless their table had to be emptied (ctid ranges: bigu).
	after := map[string]bool{}
	for _, r := range query(t, e.dst[0].inst, e.dst[0].db, `SELECT table_name || ' ' || unit || ' ' || finished_at::text FROM reshard.copy_units WHERE slot = 'cpkill_slot' AND done`) {
		after[r] = true
	}
	kept := 0
	for _, r := range doneBefore {
		if strings.HasPrefix(r, "bigu ") {
			continue
		}
		if !after[r] {
			t.Fatalf("unit %q finished before the kill was copied again", r)
		}
		kept++
	}
	if n := e.dst[0].one(t, `SELECT count(*) FROM reshard.copy_units WHERE slot = 'cpkill_slot' AND NOT done`); n != "0" {
		t.Fatalf("%s units not done after the second run", n)
	}
	t.Logf("%d units finished before the kill were kept", kept)
	e.verifyCopy(t)
	for _, table := range []string{"big", "bigu"} {
		want := e.src[0].one(t, fmt.Sprintf(`SELECT count(*) || ' ' || sum(hashtext(x::text)::numeric) FROM %s x`, table))
		var n, sum float64
		for _, d := range e.dst {
			var c, s float64
			fmt.Sscan(strings.Replace(d.one(t, fmt.Sprintf(`SELECT count(*) || ' ' || coalesce(sum(hashtext(x::text)::numeric), 0) FROM %s x`, table)), " ", "\n", 1), &c, &s)
			n, sum = n+c, sum+s
		}
		if got := fmt.Sprintf("%.0f %.0f", n, sum); got != want {
			t.Fatalf("%s after resume: shards %s, source %s", table, got, want)
		}
	}
}
