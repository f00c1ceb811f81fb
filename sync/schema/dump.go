package schema

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// DumpSource says how to reach the database to dump.
type DumpSource struct {
	// PgDump is the pg_dump executable ([replication] pg_dump_path).
	PgDump string
	// Host, Port, Database locate the source.
	Host     string
	Port     int
	Database string
	// User and Password log in; the password goes through the environment
	// (PGPASSWORD), never the command line.
	User, Password string
	// ServerVersionNum is the source's server_version_num, to check that
	// pg_dump is not older than the server.
	ServerVersionNum int
	// Snapshot, when set, is an exported snapshot to dump at.
	Snapshot string
}

// ErrPgDump marks a pg_dump that is missing, too old or failing.
var ErrPgDump = errors.New("pg_dump")

// ErrChangedSinceSnapshot marks a dump at an exported snapshot that failed
// because a table the snapshot lists was dropped or renamed since (pg_dump
// locks each table by its name at the snapshot): dumping at a new snapshot
// gets past it.
var ErrChangedSinceSnapshot = errors.New("a table was dropped or renamed on the source since the snapshot")

var pgDumpVersion = regexp.MustCompile(`\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?`)

// PgDumpMajor returns the major version of the pg_dump at path.
func PgDumpMajor(ctx context.Context, path string) (int, error) {
	bin, err := exec.LookPath(path)
	if err != nil {
		return 0, fmt.Errorf("%w not found at %q ([replication] pg_dump_path): install the PostgreSQL client tools (postgresql-client) or point pg_dump_path at pg_dump: %v", ErrPgDump, path, err)
	}
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("%w: %s --version: %v", ErrPgDump, bin, err)
	}
	m := pgDumpVersion.FindStringSubmatch(string(out))
	if m == nil {
		return 0, fmt.Errorf("%w: cannot read the version of %s from %q", ErrPgDump, bin, strings.TrimSpace(string(out)))
	}
	major, _ := strconv.Atoi(m[1])
	return major, nil
}

// Dump runs pg_dump --schema-only against the source and returns its output.
func Dump(ctx context.Context, src DumpSource) (string, error) {
	major, err := PgDumpMajor(ctx, src.PgDump)
	if err != nil {
		return "", err
	}
	serverMajor := src.ServerVersionNum / 10000
	if serverMajor > 0 && major < serverMajor {
		return "", fmt.Errorf("%w %d is older than the source server (PostgreSQL %d): install pg_dump %d or newer and set [replication] pg_dump_path", ErrPgDump, major, serverMajor, serverMajor)
	}
	bin, _ := exec.LookPath(src.PgDump)
	cmd := dumpCommand(ctx, bin, src)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if src.Snapshot != "" && strings.Contains(msg, "does not exist") && strings.Contains(msg, "LOCK TABLE") {
			return "", fmt.Errorf("%w --schema-only of %s:%d/%s at snapshot %s failed (%w): %v: %s", ErrPgDump, src.Host, src.Port, src.Database, src.Snapshot, ErrChangedSinceSnapshot, err, msg)
		}
		return "", fmt.Errorf("%w --schema-only of %s:%d/%s failed: %v: %s", ErrPgDump, src.Host, src.Port, src.Database, err, msg)
	}
	return stdout.String(), nil
}

// dumpCommand builds the pg_dump command for src. The password travels in
// the environment (PGPASSWORD, readable only by reshard's user), never in
// the arguments, which every user of the machine can list.
func dumpCommand(ctx context.Context, bin string, src DumpSource) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, "--schema-only", "--no-subscriptions",
		"--host", src.Host, "--port", strconv.Itoa(src.Port),
		"--username", src.User, "--dbname", src.Database)
	if src.Snapshot != "" {
		cmd.Args = append(cmd.Args, "--snapshot", src.Snapshot)
	}
	cmd.Env = append(os.Environ(), "PGPASSWORD="+src.Password, "PGAPPNAME=reshard-schema-sync", "PGCONNECT_TIMEOUT=10")
	return cmd
}
