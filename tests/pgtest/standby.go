package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

// StandbyOptions tunes AddStandby.
type StandbyOptions struct {
	// Settings are extra postgresql.conf settings of the standby (over the
	// cluster's own). hot_standby_feedback is on unless set here.
	Settings map[string]string
}

// backupSkip lists what a base backup leaves out of a running server's data
// directory (PostgreSQL's "Backing Up the Data Directory"): the directories
// are made empty, the files are not copied.
var backupSkip = map[string]bool{
	"postmaster.pid": true, "postmaster.opts": true, "server.log": true,
	"backup_label": true, "tablespace_map": true,
	"pg_wal": true, "pg_replslot": true, "pg_dynshmem": true, "pg_notify": true,
	"pg_serial": true, "pg_snapshots": true, "pg_stat_tmp": true, "pg_subtrans": true,
}

// AddStandby makes a hot standby of primary, one of c's running instances,
// and starts it on a free port. The primary keeps running: a physical
// replication slot is created on it (pgtest_standby_<n>, so it keeps the
// WAL the standby needs), its data directory is copied between
// pg_backup_start and pg_backup_stop, and the copy starts with
// standby.signal, primary_conninfo and primary_slot_name, streaming from
// the primary. It returns once the standby accepts connections; the
// standby is added to c.Instances and stopped by c.Stop.
func (c *Cluster) AddStandby(ctx context.Context, primary *Instance, opts StandbyOptions) (*Instance, error) {
	c.mu.Lock()
	n := c.standbys
	c.standbys++
	dir := filepath.Join(c.Root, fmt.Sprintf("pg%d", len(c.Instances)+100+n))
	c.mu.Unlock()
	slot := fmt.Sprintf("pgtest_standby_%d", n)

	conn, err := primary.Connect(ctx, "postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: standby of port %d: %w", primary.Port, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, true)`, slot); err != nil {
		return nil, fmt.Errorf("pgtest: physical slot for a standby of port %d: %w", primary.Port, err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_backup_start('pgtest standby', true)`); err != nil {
		return nil, fmt.Errorf("pgtest: pg_backup_start on port %d: %w", primary.Port, err)
	}
	copyErr := copyDataDir(primary.DataDir, dir, c.cred != nil, int(credUID(c)), int(credGID(c)))
	var label, spcmap string
	stopErr := conn.QueryRow(ctx, `SELECT labelfile, spcmapfile FROM pg_backup_stop(false)`).Scan(&label, &spcmap)
	if err := errors.Join(copyErr, stopErr); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: base backup of port %d: %w", primary.Port, err)
	}
	files := map[string]string{"backup_label": label, "standby.signal": ""}
	if spcmap != "" {
		files["tablespace_map"] = spcmap
	}
	for name, body := range files {
		if err := c.writeOwned(filepath.Join(dir, name), body); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	settings := map[string]string{}
	for k, v := range c.settings {
		settings[k] = v
	}
	settings["hot_standby"] = "on"
	settings["hot_standby_feedback"] = "on"
	settings["primary_conninfo"] = fmt.Sprintf("host=%s port=%d user=%s password=%s application_name=%s", primary.Host, primary.Port, User, Password, slot)
	settings["primary_slot_name"] = slot
	for k, v := range opts.Settings {
		settings[k] = v
	}
	inst, err := startOne(ctx, c.BinDir, dir, c.cred, settings)
	if err != nil {
		os.RemoveAll(dir)
		_, _ = conn.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, slot)
		return nil, err
	}
	c.mu.Lock()
	c.Instances = append(c.Instances, inst)
	c.mu.Unlock()
	return inst, nil
}

func credUID(c *Cluster) uint32 {
	if c.cred == nil {
		return 0
	}
	return c.cred.Uid
}

func credGID(c *Cluster) uint32 {
	if c.cred == nil {
		return 0
	}
	return c.cred.Gid
}

// writeOwned writes a file of a data directory, owned by the server's user.
func (c *Cluster) writeOwned(path, body string) error {
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		return fmt.Errorf("pgtest: write %s: %w", path, err)
	}
	if c.cred != nil {
		return os.Chown(path, int(c.cred.Uid), int(c.cred.Gid))
	}
	return nil
}

// copyDataDir copies a running server's data directory from src to dst,
// leaving out what backupSkip lists (its directories are made empty) and
// tolerating files that vanish meanwhile. With chown, everything is owned
// by uid:gid.
func copyDataDir(src, dst string, chown bool, uid, gid int) error {
	mkdir := func(dir string, mode fs.FileMode) error {
		if err := os.MkdirAll(dir, mode); err != nil {
			return err
		}
		if chown {
			return os.Chown(dir, uid, gid)
		}
		return nil
	}
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return err
		}
		topLevel := !strings.Contains(rel, string(filepath.Separator))
		switch {
		case rel == ".":
			return mkdir(target, 0o700)
		case strings.HasPrefix(d.Name(), "pgsql_tmp"):
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		case topLevel && backupSkip[rel]:
			if !d.IsDir() {
				return nil
			}
			if err := mkdir(target, info.Mode().Perm()); err != nil {
				return err
			}
			if rel == "pg_wal" {
				if err := mkdir(filepath.Join(target, "archive_status"), 0o700); err != nil {
					return err
				}
			}
			return filepath.SkipDir
		case d.IsDir():
			return mkdir(target, info.Mode().Perm())
		case !info.Mode().IsRegular():
			return nil
		}
		if err := copyFile(path, target, info.Mode().Perm()); errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return err
		}
		if chown {
			return os.Chown(target, uid, gid)
		}
		return nil
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// WaitReplay waits until the standby has replayed everything the primary
// had inserted into its WAL when it was called (asynchronous commits
// included: the primary's WAL writer flushes them, then they are sent).
func (i *Instance) WaitReplay(ctx context.Context, primary *Instance) error {
	var target string
	pc, err := primary.Connect(ctx, "postgres")
	if err != nil {
		return err
	}
	err = pc.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&target)
	pc.Close(context.Background())
	if err != nil {
		return err
	}
	want, _ := pglogrepl.ParseLSN(target)
	sc, err := i.Connect(ctx, "postgres")
	if err != nil {
		return err
	}
	defer sc.Close(context.Background())
	deadline := time.Now().Add(time.Minute)
	for {
		var replayed *string
		if err := sc.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn()::text`).Scan(&replayed); err != nil {
			return err
		}
		if replayed != nil {
			if got, _ := pglogrepl.ParseLSN(*replayed); got >= want {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: standby on port %d has not replayed to %s in a minute (at %v)", i.Port, want, deref(replayed))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "nothing"
	}
	return *s
}

// InRecovery tells whether the instance is a standby (pg_is_in_recovery).
func (i *Instance) InRecovery(ctx context.Context) (bool, error) {
	conn, err := i.Connect(ctx, "postgres")
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	var r bool
	err = conn.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&r)
	return r, err
}
