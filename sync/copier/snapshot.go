package copier

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/sync/job"
)

// Slots are a fresh copy's permanent slots, one per source shard, created
// before the copy with their exported snapshots, so that what else must
// see the source as the copy does (RESHARD dumps the schema with pg_dump
// --snapshot) can import them first. A snapshot stays importable while
// the replication connection that exported it stays open and idle: until
// Close, or until the copy given them (Request.Slots) ends.
type Slots struct {
	base  string
	slots []*snapshotSlot
}

// CreateSlots creates the permanent slots of a fresh copy with slot base
// (see SlotNames). On a failure, those it made are dropped.
func CreateSlots(ctx context.Context, j *job.Job, base string) (*Slots, error) {
	names := SlotNames(base, len(j.Source.Shards))
	s := &Slots{base: base}
	for i, sh := range j.Source.Shards {
		ss, err := createSlot(ctx, j.Catalog, sh.Primary, names[i], false)
		if err != nil {
			s.drop(j)
			return nil, job.Wrap("55000", err, "%v", err)
		}
		s.slots = append(s.slots, ss)
		j.Logger("copy").Info("slot created, snapshot exported", "source_shard", sh.Number, "slot", ss.name, "lsn", ss.lsn, "snapshot", ss.snapshot)
	}
	return s, nil
}

// Snapshot is the name of source shard k's exported snapshot.
func (s *Slots) Snapshot(k int) string { return s.slots[k].snapshot }

// LSN is source shard k's slot's consistent point.
func (s *Slots) LSN(k int) pglogrepl.LSN { return s.slots[k].lsn }

// Close ends the replication connections (and the snapshots with them);
// the slots stay.
func (s *Slots) Close() {
	if s == nil {
		return
	}
	for _, ss := range s.slots {
		ss.close()
	}
}

// Drop closes the connections and drops the slots (a fresh copy that
// starts again from new ones).
func (s *Slots) Drop(j *job.Job) {
	if s != nil {
		s.drop(j)
	}
}

// drop closes the connections and drops the slots.
func (s *Slots) drop(j *job.Job) {
	s.Close()
	for i, ss := range s.slots {
		dsn := j.SourceDSN[i]
		ctx, cancel := context.WithTimeout(context.Background(), j.Catalog.NetworkTimeout())
		if conn, err := pgx.Connect(ctx, dsn); err == nil {
			_, _ = conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", ss.name)
			conn.Close(context.Background())
		}
		cancel()
	}
}

// StaleSlots drops the slots of base that no copy state records and no
// stream uses: what a RESHARD that died between creating its slots and
// recording its copy left. It reports whether a copy with base is
// recorded (it is then resumed, with its slots).
func StaleSlots(ctx context.Context, j *job.Job, base string) (recorded bool, err error) {
	dst, err := j.ConnectDestination(ctx, 0)
	if err != nil {
		return false, err
	}
	defer dst.Close(context.Background())
	saved, err := loadState(ctx, dst, base)
	if err != nil || len(saved) > 0 {
		return len(saved) > 0, err
	}
	srcs, err := j.ConnectSources(ctx)
	if err != nil {
		return false, err
	}
	defer srcs.Close()
	for i, name := range SlotNames(base, len(j.Source.Shards)) {
		if _, err := srcs[i].Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, name); err != nil {
			return false, fmt.Errorf("drop the unused slot %s on source shard %d: %w", name, i, err)
		}
	}
	return false, nil
}

// snapshotConn opens a connection to source shard k inside a transaction
// on the snapshot.
func snapshotConn(ctx context.Context, dsn, snapshot string, k int) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to source shard %d: %w", k, err)
	}
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("SET TRANSACTION SNAPSHOT '%s'", snapshot)); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("import snapshot %s on source shard %d: %w", snapshot, k, err)
	}
	return conn, nil
}

// snapshotTables lists the publication's tables (as the source publishes
// them now, through conn) described inside the snapshot transaction snap,
// named as at the snapshot; the tables created since are left out (see
// atSnapshot).
func snapshotTables(ctx context.Context, conn, snap *pgx.Conn, publication string) ([]*Table, error) {
	names, err := publicationTables(ctx, conn, publication)
	if err != nil {
		return nil, err
	}
	var out []*Table
	for _, n := range names {
		// A table created since the snapshot has no row there to
		// describe.
		var existed bool
		now := (&Table{Schema: n[0], Name: n[1]}).Qualified()
		if err := snap.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass($1))`, now).Scan(&existed); err != nil {
			return nil, fmt.Errorf("find %s at the copy's snapshot: %w", now, err)
		}
		if !existed {
			continue
		}
		t, err := describeTable(ctx, snap, n[0], n[1])
		if err != nil {
			return nil, err
		}
		ok, err := atSnapshot(ctx, snap, t)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, t)
		}
	}
	return out, nil
}

// atSnapshot turns a table described inside a snapshot (columns, keys:
// the catalog as the snapshot sees it, which is the shards' schema) into
// one named as at the snapshot, with its current name kept for reading.
// A table created since the snapshot is not in the copy (false): the
// stream creates it and carries its rows.
func atSnapshot(ctx context.Context, snap *pgx.Conn, t *Table) (bool, error) {
	current := t.Qualified()
	err := snap.QueryRow(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1)`, current).Scan(&t.Schema, &t.Name)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("describe %s at the copy's snapshot: %w", current, err)
	}
	t.atSnapshot = true
	if t.Qualified() != current {
		t.source = current
	}
	return true, nil
}

// snapshotSource is the source side of a unit of a table described at a
// snapshot, read inside the unit's own transaction on that snapshot: the
// table is locked first (DDL waiting for it waits for this unit only),
// then named as the source names it now, each copied column by its name
// now, a column dropped since the snapshot read as NULL (the stream drops
// it on the shards). It returns the COPY (in format, the unit's) and the
// copied columns the source no longer has.
func (w *worker) snapshotSource(ctx context.Context, t *Table, where string, format sharding.Format) (string, []string, error) {
	// The table by its name at the snapshot (this source shard's oid).
	var oid uint32
	err := w.src.QueryRow(ctx, `SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
		t.Schema, t.Name).Scan(&oid)
	if err != nil {
		return "", nil, fmt.Errorf("find %s at the copy's snapshot on source shard %d: %w", t, w.shard, err)
	}
	var name string
	for attempt := 0; ; attempt++ {
		var exists bool
		if err := w.src.QueryRow(ctx, `SELECT $1::oid::regclass::text, to_regclass($1::oid::regclass::text) IS NOT NULL`, oid).Scan(&name, &exists); err != nil {
			return "", nil, fmt.Errorf("name of %s on the source: %w", t, err)
		}
		if !exists {
			return "", nil, errDropped
		}
		_, err := w.src.Exec(ctx, "SAVEPOINT reshard_lock; LOCK TABLE "+name+" IN ACCESS SHARE MODE; RELEASE SAVEPOINT reshard_lock")
		if err == nil {
			break
		}
		var pe *pgconn.PgError
		if attempt < 5 && errors.As(err, &pe) && pe.Code == "42P01" {
			// Renamed between the two: name it again.
			if _, rerr := w.src.Exec(ctx, "ROLLBACK TO SAVEPOINT reshard_lock"); rerr != nil {
				return "", nil, rerr
			}
			continue
		}
		return "", nil, fmt.Errorf("lock %s on the source: %w", t, err)
	}
	rows, err := w.src.Query(ctx, `SELECT a.attname, (pg_identify_object_as_address('pg_class'::regclass, a.attrelid, a.attnum)).object_names[3],
		has_column_privilege(a.attrelid, a.attnum, 'SELECT') IS NULL
		FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`, oid)
	if err != nil {
		return "", nil, fmt.Errorf("columns of %s on the source: %w", t, err)
	}
	now := map[string]string{}
	dropped := map[string]bool{}
	for rows.Next() {
		var then, cur string
		var gone bool
		if err := rows.Scan(&then, &cur, &gone); err != nil {
			rows.Close()
			return "", nil, err
		}
		now[then], dropped[then] = cur, gone
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", nil, err
	}
	cols := make([]string, len(t.Columns))
	var gone []string
	for i, c := range t.Columns {
		switch cur, ok := now[c.Name]; {
		case !ok:
			// Only a replica's snapshot, taken after the schema's, can
			// lack a column the schema has.
			return "", nil, fmt.Errorf("%s.%s was renamed or dropped on the source between the copy's snapshot and the snapshot of %s: run the copy again (it resumes from the primary's snapshot)", t, c.Name, w.node.label())
		case dropped[c.Name]:
			cols[i] = "NULL"
			gone = append(gone, c.Name)
		default:
			cols[i] = pgx.Identifier{cur}.Sanitize()
		}
	}
	from := "ONLY " + name
	if t.Partitioned {
		from = name
	}
	return fmt.Sprintf("COPY (SELECT %s FROM %s%s) TO STDOUT (FORMAT %s)", strings.Join(cols, ", "), from, where, format), gone, nil
}

// errDropped: the table was dropped on the source since the snapshot; the
// stream drops it on the shards, so its rows need no copy.
var errDropped = errors.New("table dropped on the source since the snapshot")

// allowNulls lets columns a unit reads as NULL (dropped on the source
// since the snapshot) take them on a destination shard.
func allowNulls(ctx context.Context, conn *pgx.Conn, t *Table, cols []string) error {
	for _, c := range cols {
		var notNull bool
		err := conn.QueryRow(ctx, `SELECT attnotnull FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2`, t.Qualified(), c).Scan(&notNull)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && !notNull {
			continue
		}
		if err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL", t.Qualified(), pgx.Identifier{c}.Sanitize())); err != nil {
			return fmt.Errorf("let %s.%s (dropped on the source) be NULL: %w", t, c, err)
		}
	}
	return nil
}
