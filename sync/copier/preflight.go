package copier

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sync/job"
)

// CheckMode says what a command needs of the slot and the destination.
type CheckMode int

// The modes.
const (
	// CheckFresh: a new copy. No slot of that name on the source; every
	// table on the destination, compatible and empty.
	CheckFresh CheckMode = iota
	// CheckResume: the copy the state on destination shard 0 records
	// continues. Its slot is on the source; every table on the destination.
	CheckResume
	// CheckSchemaFirst: RESHARD's first run, which creates the schema
	// itself. No slot; a destination table is absent, or present,
	// compatible and empty (an earlier SCHEMA_SYNC PRE made it).
	CheckSchemaFirst
	// CheckStream: REPLICATE. The slot is on the source; every table on
	// the destination, compatible.
	CheckStream
)

// CheckRequest is what Check verifies.
type CheckRequest struct {
	// Slot is the slot's base name (see SlotNames).
	Slot string
	Mode CheckMode
	// SyncOnly skips the primary-key check (no streaming follows).
	SyncOnly bool
	// SlotsMade: a fresh copy's slots were created for it (Slots), so
	// they exist. Describe, when set, is a connection to source shard 0
	// inside a transaction on the copy's snapshot: the tables are
	// described as it sees them (see atSnapshot).
	SlotsMade bool
	Describe  *pgx.Conn
}

// Resumable tells whether the copy state on destination shard 0 (conn)
// records a copy with the slot: running the copy again resumes it.
func Resumable(ctx context.Context, conn *pgx.Conn, slot string) (bool, error) {
	saved, err := loadState(ctx, conn, slot)
	return len(saved) > 0, err
}

// Check is the copy's preflight: every source shard (logical WAL, free
// slots and senders, the publication, the slot as the mode needs it), the
// publication's tables (routable; a primary key or replica identity unless
// SyncOnly) and every destination shard (the tables as the mode needs
// them). It changes nothing, and returns the tables with every problem
// found, each naming what to fix.
func Check(ctx context.Context, j *job.Job, src, dst job.Conns, req CheckRequest) ([]*Table, []string, error) {
	var problems []string
	slots := SlotNames(req.Slot, len(j.Source.Shards))
	needed := 1 // a fresh copy's slot, or a resumed one's temporary slot
	if req.Mode == CheckStream {
		needed = 0
	}
	for i, sh := range j.Source.Shards {
		p, err := CheckSource(ctx, src[i], "source "+sh.Primary.String(), j.Publication, needed)
		if err != nil {
			return nil, nil, err
		}
		problems = append(problems, p...)
		var exists bool
		if err := src[i].QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, slots[i]).Scan(&exists); err != nil {
			return nil, nil, fmt.Errorf("look up slot %s on %s: %w", slots[i], sh.Primary, err)
		}
		switch {
		case exists && req.SlotsMade:
		case exists && (req.Mode == CheckFresh || req.Mode == CheckSchemaFirst):
			problems = append(problems, fmt.Sprintf("replication slot %q already exists on %s but no copy state records it: to stream from it use REPLICATE; to start over drop it (SELECT pg_drop_replication_slot('%s'))", slots[i], sh.Primary, slots[i]))
		case !exists && req.Mode == CheckResume:
			problems = append(problems, fmt.Sprintf("the copy with slot %q cannot resume: the slot is gone from %s (start over: DELETE FROM reshard.copy_units WHERE slot = '%s' and empty the destination tables)", slots[i], sh.Primary, req.Slot))
		case !exists && req.Mode == CheckStream:
			problems = append(problems, fmt.Sprintf("replication slot %q does not exist on %s: REPLICATE streams from a slot a copy created (COPY_DATA or RESHARD)", slots[i], sh.Primary))
		}
	}
	tables, err := publishedTables(ctx, src[0], j.Publication)
	if req.Describe != nil {
		tables, err = snapshotTables(ctx, src[0], req.Describe, j.Publication)
	}
	if err != nil {
		return nil, nil, err
	}
	var routed, noIdentity []string
	out := tables[:0]
	for _, t := range tables {
		if err := route(t, j.Destination); err != nil {
			routed = append(routed, err.Error())
			continue
		}
		if !t.HasIdentity {
			noIdentity = append(noIdentity, t.String())
		}
		out = append(out, t)
	}
	tables = out
	problems = append(problems, routed...)
	if len(noIdentity) > 0 && !req.SyncOnly {
		problems = append(problems, fmt.Sprintf("tables without a primary key or replica identity (their updates and deletes cannot be streamed): %s; add a primary key, or ALTER TABLE ... REPLICA IDENTITY FULL", joinList(noIdentity)))
	}
	want := wantEmpty
	switch req.Mode {
	case CheckResume, CheckStream:
		want = wantPresent
	case CheckSchemaFirst:
		want = wantAbsentOrEmpty
	}
	for i, sh := range j.Destination.Shards {
		where := fmt.Sprintf("destination %s", sh.Primary)
		p, err := destinationChecks(ctx, dst[i], where, tables, want)
		if err != nil {
			return nil, nil, err
		}
		problems = append(problems, p...)
		if !req.SyncOnly && (req.Mode == CheckFresh || req.Mode == CheckSchemaFirst) {
			problems = append(problems, originCapacity(ctx, dst[i], where, req.Slot, len(j.Source.Shards))...)
		}
	}
	return tables, problems, nil
}

// originCapacity checks that a destination shard can track the progress
// of the streams to come: one replication origin per source shard, each
// taking one of the server's replication state slots (as many as
// max_replication_slots, shared with its replication slots' count but
// kept apart from them). Without one free, the stream would fail to start
// (53400) once the copy is done. Origins of slot base already there count
// as free. A server that does not show the origins' status to this user
// is not checked.
func originCapacity(ctx context.Context, conn *pgx.Conn, where, slot string, needed int) []string {
	var maxStates, used, ours int
	err := conn.QueryRow(ctx, `SELECT current_setting('max_replication_slots')::int,
		(SELECT count(*) FROM pg_replication_origin_status)::int,
		(SELECT count(*) FROM pg_replication_origin_status WHERE starts_with(external_id, left('reshard_' || $1 || '_', 63)))::int`, slot).
		Scan(&maxStates, &used, &ours)
	if err != nil {
		return nil
	}
	if free := maxStates - used + ours; free < needed {
		return []string{fmt.Sprintf("%s cannot track %d more replication origin(s) (max_replication_slots = %d, %d origins with progress in pg_replication_origin_status): raise max_replication_slots and restart it, or drop origins no stream uses (SELECT pg_replication_origin_drop(external_id) FROM pg_replication_origin_status ...)", where, needed, maxStates, used)}
	}
	return nil
}

// CheckSource verifies one source shard primary: logical WAL, slotsNeeded
// free replication slots and a free WAL sender, and the publication. It
// returns problems, not errors.
func CheckSource(ctx context.Context, conn *pgx.Conn, where, publication string, slotsNeeded int) ([]string, error) {
	var problems []string
	var walLevel string
	var maxSlots, usedSlots, maxSenders, usedSenders int
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'),
		current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)::int,
		current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_replication)::int`).
		Scan(&walLevel, &maxSlots, &usedSlots, &maxSenders, &usedSenders)
	if err != nil {
		return nil, fmt.Errorf("read settings of %s: %w", where, err)
	}
	if walLevel != "logical" {
		problems = append(problems, fmt.Sprintf("%s has wal_level = %s: set wal_level = logical and restart it", where, walLevel))
	}
	if maxSlots-usedSlots < slotsNeeded {
		problems = append(problems, fmt.Sprintf("%s has no free replication slot (max_replication_slots = %d, %d in use): raise max_replication_slots or drop unused slots", where, maxSlots, usedSlots))
	}
	if maxSenders-usedSenders < 1 {
		problems = append(problems, fmt.Sprintf("%s has no free WAL sender (max_wal_senders = %d, %d in use): raise max_wal_senders", where, maxSenders, usedSenders))
	}
	var hasPub bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, publication).Scan(&hasPub); err != nil {
		return nil, err
	}
	if !hasPub {
		problems = append(problems, fmt.Sprintf("publication %q does not exist on %s: CREATE PUBLICATION %s FOR ALL TABLES (or FOR TABLE ...)", publication, where, pgx.Identifier{publication}.Sanitize()))
	}
	return problems, nil
}

// want is what destinationChecks needs of each table.
type want int

const (
	wantEmpty         want = iota // present, compatible, empty
	wantPresent                   // present, compatible
	wantAbsentOrEmpty             // absent, or present, compatible and empty
)

// destinationChecks verifies the tables on one destination shard as w
// needs them. It fills the tables' destination types and widening.
func destinationChecks(ctx context.Context, conn *pgx.Conn, where string, tables []*Table, w want) ([]string, error) {
	var problems, notEmpty, notEmptyOwn, missing []string
	for _, t := range tables {
		cols, err := tableColumns(ctx, conn, t.Qualified())
		if err != nil {
			return nil, err
		}
		if len(cols) == 0 {
			// No columns: absent, or a table of none (CREATE TABLE t ()).
			var exists bool
			if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, t.Qualified()).Scan(&exists); err != nil {
				return nil, fmt.Errorf("check %s on %s: %w", t, where, err)
			}
			switch {
			case !exists:
				if w != wantAbsentOrEmpty {
					missing = append(missing, t.String())
				}
				continue
			case len(t.Columns) > 0:
				problems = append(problems, fmt.Sprintf("%s has no columns on %s", t, where))
				continue
			}
		}
		dst := map[string]columnInfo{}
		for _, c := range cols {
			dst[c.name] = c
		}
		t.Widen = t.Widen[:0]
		for i := range t.Columns {
			c := &t.Columns[i]
			d, ok := dst[c.Name]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("%s.%s is missing on %s", t, c.Name, where))
			case d.generated:
				problems = append(problems, fmt.Sprintf("%s.%s is a generated column on %s but not on the source", t, c.Name, where))
			case d.typ == c.Type:
				c.DstType = d.typ
			case d.typ == "int8" && (c.Type == "int4" || c.Type == "int2"):
				c.DstType = d.typ
				t.Widen = append(t.Widen, i)
			default:
				problems = append(problems, fmt.Sprintf("%s.%s is %s on the source but %s on %s", t, c.Name, c.Type, d.typ, where))
			}
		}
		if t.ExtensionRows != "" {
			var version *string
			if err := conn.QueryRow(ctx, `SELECT (SELECT extversion FROM pg_extension WHERE extname = $1)`, t.Extension).Scan(&version); err != nil {
				return nil, fmt.Errorf("check extension %s on %s: %w", t.Extension, where, err)
			}
			switch {
			case version == nil:
				problems = append(problems, fmt.Sprintf("extension %s is not on %s (its table %s is; run SCHEMA_SYNC PRE first)", t.Extension, where, t))
			case *version != t.ExtensionVersion:
				problems = append(problems, fmt.Sprintf("extension %s is version %s on %s but %s on the source: the rows of %s it ships may differ, and they are not copied; ALTER EXTENSION %s UPDATE TO '%s' on the shards (or update the source's) first",
					t.Extension, *version, where, t.ExtensionVersion, t, pgx.Identifier{t.Extension}.Sanitize(), t.ExtensionVersion))
			}
		}
		if w != wantPresent {
			var any bool
			// (Of an extension's configuration table, only the rows the
			// copy would write: the extension's own are the shard's.)
			own := ""
			if t.ExtensionRows != "" {
				own = " WHERE " + t.onlyOwnRows("")
			}
			if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+t.From()+own+")").Scan(&any); err != nil {
				return nil, fmt.Errorf("check %s on %s: %w", t, where, err)
			}
			switch {
			case any && t.ExtensionRows != "":
				notEmptyOwn = append(notEmptyOwn, t.String()+" WHERE "+t.ExtensionRows)
			case any:
				notEmpty = append(notEmpty, t.String())
			}
		}
	}
	if len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("tables missing on %s: %s (run SCHEMA_SYNC PRE first)", where, joinList(missing)))
	}
	if len(notEmpty) > 0 {
		problems = append(problems, fmt.Sprintf("tables not empty on %s: %s (a fresh copy needs empty tables: TRUNCATE them, or resume the copy that filled them with its slot name)", where, joinList(notEmpty)))
	}
	if len(notEmptyOwn) > 0 {
		problems = append(problems, fmt.Sprintf("extension configuration tables with rows of the database's own on %s: %s (a fresh copy adds those to the extension's rows: DELETE them, as the condition says, or resume the copy that filled them with its slot name)", where, strings.Join(notEmptyOwn, "; ")))
	}
	return problems, nil
}
