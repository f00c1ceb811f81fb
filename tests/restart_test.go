package tests

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestTasksSurviveRestart: after reshard dies (SIGKILL) and starts again,
// SHOW TASKS lists the interrupted work as stopped, with the command that
// continues it; running that command continues it.
func TestTasksSurviveRestart(t *testing.T) {
	bin := buildReshard(t)
	e := newCopyEnv(t, "restart", 1, 2, "")
	src := e.src[0]
	src.exec(t, copySchema)
	loadData(t, src, 0, 1, 500)
	serve := func() (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(bin, "--config", e.cfgPath, "--users", e.usersPath, "serve")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dsn := fmt.Sprintf("postgres://admin:%s@127.0.0.1:%d/admin?sslmode=disable", adminPassword, e.cat.Config.General.Port)
	dial := func() *pgx.Conn {
		deadline := time.Now().Add(30 * time.Second)
		for {
			c, err := pgx.Connect(ctx, dsn)
			if err == nil {
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("admin server: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	tasks := func(c *pgx.Conn) [][]string {
		rows, err := c.Query(ctx, "SHOW TASKS")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out [][]string
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			var f []string
			for _, v := range vals {
				f = append(f, fmt.Sprint(v))
			}
			out = append(out, f)
		}
		return out
	}
	first, firstOut := serve()
	c := dial()
	var id string
	if err := c.QueryRow(ctx, "RESHARD src dst all_tables").Scan(&id); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; {
		if ts := tasks(c); len(ts) == 1 && ts[0][5] == "streaming" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never streaming: %v\n%s", tasks(c), firstOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // the state reaches the destination
	c.Close(ctx)
	first.Process.Signal(syscall.SIGKILL)
	first.Wait()

	second, secondOut := serve()
	defer func() { second.Process.Signal(syscall.SIGTERM); second.Wait() }()
	c = dial()
	defer c.Close(ctx)
	ts := tasks(c)
	if len(ts) != 1 || ts[0][1] != "reshard" || ts[0][5] != "stopped" || !strings.Contains(ts[0][8], "interrupted in state streaming") || !strings.Contains(ts[0][8], "RESHARD src dst all_tables continues it") {
		t.Fatalf("after a restart SHOW TASKS lists %v\n%s", ts, secondOut.String())
	}
	// The command it names continues the work.
	if err := c.QueryRow(ctx, "RESHARD src dst all_tables").Scan(&id); err != nil {
		t.Fatal(err)
	}
	src.exec(t, `UPDATE countries SET name = name || '!'`)
	for deadline := time.Now().Add(time.Minute); ; {
		ok := true
		for _, d := range e.dst {
			if d.one(t, `SELECT count(*) FROM countries WHERE name LIKE '%!'`) != "3" {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the continued RESHARD does not stream: %v\n%s", tasks(c), secondOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
