// Package ddl carries the application's schema changes through a
// migration. On each source shard, event triggers (ddl_command_end and
// sql_drop) record every DDL statement — its text, command tag, the
// objects it touched and the search_path it ran with — in the table
// reshard.ddl, which the route's publication carries, so each statement
// reaches the stream inside its own source transaction, at its place among
// the row changes. The stream's DDL stage decodes such a row (Captured),
// turns it into what runs on the destination shards with schema sync's
// rules (Plan), and applies it there.
package ddl

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Schema and Table name the captured-statement table on a source shard.
const (
	Schema = "reshard"
	Table  = "ddl"
)

// The event triggers and their functions.
const (
	triggerEnd  = "reshard_ddl_command_end"
	triggerDrop = "reshard_ddl_sql_drop"
	funcEnd     = "reshard.ddl_command_end"
	funcDrop    = "reshard.ddl_sql_drop"
)

// OwnEventTrigger tells whether an event trigger is one of reshard's
// (schema sync leaves them out of the shards' schema).
func OwnEventTrigger(name string) bool { return name == triggerEnd || name == triggerDrop }

// captureOff is the setting reshard's own sessions set so that what they
// run on a source (installing, removing) is not captured.
const captureOff = "SET LOCAL reshard.ddl_capture = off"

// tableDDL creates the captured-statement table. Only reshard (its owner)
// writes to it, through the SECURITY DEFINER trigger functions: a row in it
// is DDL that runs on every shard.
const tableDDL = `
CREATE SCHEMA IF NOT EXISTS reshard;
CREATE TABLE IF NOT EXISTS reshard.ddl (
	id bigserial PRIMARY KEY,
	captured_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	command_tag text NOT NULL,
	object_type text,
	objects jsonb NOT NULL DEFAULT '[]',
	statement text NOT NULL,
	nth int NOT NULL DEFAULT 1,
	search_path text NOT NULL DEFAULT '',
	username text NOT NULL DEFAULT session_user,
	error text
);
REVOKE ALL ON SCHEMA reshard FROM PUBLIC;
REVOKE ALL ON reshard.ddl FROM PUBLIC`

// functionsDDL are the trigger functions. They run as their owner (a
// superuser: SECURITY DEFINER), so any role's DDL is recorded while no role
// can write to reshard.ddl itself. The caller's search_path is read first
// (it is recorded: the statement's unqualified names resolve through it on
// the shards) and replaced by pg_catalog for the rest of the function, so
// the caller's schemas cannot shadow what the function calls.
//
// A statement's row carries nth, its place among the DDL commands of one
// client query (a simple query can hold several statements; current_query()
// is then all of them): the session counts them per statement_timestamp().
// Commands run by an extension's script, on temporary objects, or on
// reshard's own objects are not recorded, nor a CREATE or DROP that
// changed nothing (IF NOT EXISTS, IF EXISTS), though each counts in nth;
// neither is anything run with reshard.ddl_capture = off (reshard's own
// sessions). A failure to record
// still records the statement with its error, so the stream stops there
// instead of silently missing it.
const functionsDDL = `
CREATE OR REPLACE FUNCTION reshard.ddl_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
DECLARE
	caller_path text := pg_catalog.current_setting('search_path');
BEGIN
	PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
	PERFORM set_config('reshard.ddl_dropped', coalesce((
		SELECT jsonb_agg(jsonb_build_object('type', object_type, 'schema', schema_name, 'name', object_name,
			'identity', object_identity, 'original', original, 'temporary', is_temporary))
		FROM pg_event_trigger_dropped_objects())::text, '[]'), true);
	PERFORM set_config('search_path', caller_path, true);
END
$fn$;

CREATE OR REPLACE FUNCTION reshard.ddl_command_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
DECLARE
	caller_path text := pg_catalog.current_setting('search_path');
	created jsonb;
	dropped jsonb;
	objs jsonb;
	commands int;
	in_ext int;
	key text;
	n int;
BEGIN
	PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
	BEGIN
		dropped := coalesce(nullif(current_setting('reshard.ddl_dropped', true), ''), '[]')::jsonb;
		PERFORM set_config('reshard.ddl_dropped', '', true);
		IF coalesce(current_setting('reshard.ddl_capture', true), '') = 'off' THEN
			PERFORM set_config('search_path', caller_path, true);
			RETURN;
		END IF;
		SELECT count(*), count(*) FILTER (WHERE in_extension),
			coalesce(jsonb_agg(jsonb_build_object('type', object_type, 'schema', schema_name, 'identity', object_identity, 'tag', command_tag))
				FILTER (WHERE NOT in_extension), '[]')
			INTO commands, in_ext, created
			FROM pg_event_trigger_ddl_commands();
		IF commands > 0 AND in_ext = commands THEN
			-- an extension's script: CREATE/ALTER EXTENSION itself is recorded
			PERFORM set_config('search_path', caller_path, true);
			RETURN;
		END IF;
		-- The command's place in its query counts every DDL command,
		-- the ones left out below too (the shards find the statement by
		-- it among the query's DDL statements).
		key := statement_timestamp()::text;
		IF current_setting('reshard.ddl_query', true) IS DISTINCT FROM key THEN
			n := 1;
		ELSE
			n := coalesce(nullif(current_setting('reshard.ddl_nth', true), '')::int, 0) + 1;
		END IF;
		PERFORM set_config('reshard.ddl_query', key, false);
		PERFORM set_config('reshard.ddl_nth', n::text, false);
		IF commands = 0 AND jsonb_array_length(dropped) = 0 AND (tg_tag LIKE 'CREATE %' OR tg_tag LIKE 'DROP %') THEN
			-- it changed nothing: CREATE ... IF NOT EXISTS of an object
			-- that exists, DROP ... IF EXISTS of one that does not
			PERFORM set_config('search_path', caller_path, true);
			RETURN;
		END IF;
		objs := created || coalesce((SELECT jsonb_agg(d) FROM jsonb_array_elements(dropped) d
			WHERE NOT coalesce((d->>'temporary')::bool, false)), '[]');
		IF (jsonb_array_length(created) > 0 OR jsonb_array_length(dropped) > 0)
			AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(created || dropped) o
				WHERE coalesce(o->>'schema', '') NOT IN ('reshard', 'pg_temp')
				  AND coalesce(o->>'schema', '') NOT LIKE 'pg\_temp\_%'
				  AND NOT coalesce((o->>'temporary')::bool, false)) THEN
			-- only temporary objects, or reshard's own
			PERFORM set_config('search_path', caller_path, true);
			RETURN;
		END IF;
		INSERT INTO reshard.ddl (command_tag, object_type, objects, statement, nth, search_path)
			VALUES (tg_tag, objs->0->>'type', objs, current_query(), n, caller_path);
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO reshard.ddl (command_tag, statement, search_path, error)
			VALUES (tg_tag, coalesce(current_query(), ''), caller_path, SQLSTATE || ': ' || SQLERRM);
	END;
	PERFORM set_config('search_path', caller_path, true);
END
$fn$;

REVOKE ALL ON FUNCTION reshard.ddl_sql_drop() FROM PUBLIC;
REVOKE ALL ON FUNCTION reshard.ddl_command_end() FROM PUBLIC`

// Problem is what preflight found on one source shard that stops DDL
// capture, or "" when it can be installed.
func Problem(ctx context.Context, conn *pgx.Conn, where, publication string) (string, error) {
	var super bool
	var user string
	if err := conn.QueryRow(ctx, `SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&user, &super); err != nil {
		return "", fmt.Errorf("%s: read the role: %w", where, err)
	}
	if !super {
		return fmt.Sprintf(`[general] resharding_ddl = "replicate" needs a superuser on the source to install its event triggers: %s is reached as %q, which is not one; connect as a superuser (users.toml server_user) or set resharding_ddl = "stop"`, where, user), nil
	}
	var insert bool
	err := conn.QueryRow(ctx, `SELECT pubinsert FROM pg_publication WHERE pubname = $1`, publication).Scan(&insert)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil // reported by the other checks
	}
	if err != nil {
		return "", fmt.Errorf("%s: read publication %q: %w", where, publication, err)
	}
	if !insert {
		return fmt.Sprintf(`[general] resharding_ddl = "replicate" needs publication %q on %s to publish inserts (it carries the captured statements as rows of reshard.ddl)`, publication, where), nil
	}
	return "", nil
}

// Install installs DDL capture on one source shard: the captured-statement
// table, the trigger functions and the event triggers, and adds the table
// to the publication when the publication lists its tables (FOR ALL TABLES
// carries it already). It can be run again: it replaces what is there.
func Install(ctx context.Context, conn *pgx.Conn, publication string) error {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadWrite})
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck
	steps := []string{captureOff, tableDDL, functionsDDL}
	for _, sql := range steps {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("install DDL capture: %w", err)
		}
	}
	for _, t := range []struct{ name, event, fn string }{{triggerDrop, "sql_drop", funcDrop}, {triggerEnd, "ddl_command_end", funcEnd}} {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = $1)`, t.name).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE EVENT TRIGGER %s ON %s EXECUTE FUNCTION %s()`, t.name, t.event, t.fn)); err != nil {
				return fmt.Errorf("install DDL capture: create event trigger %s: %w", t.name, err)
			}
		}
	}
	var all, member bool
	err = tx.QueryRow(ctx, `SELECT p.puballtables, EXISTS (SELECT 1 FROM pg_publication_rel r WHERE r.prpubid = p.oid AND r.prrelid = 'reshard.ddl'::regclass)
		FROM pg_publication p WHERE p.pubname = $1`, publication).Scan(&all, &member)
	if err != nil {
		return fmt.Errorf("install DDL capture: read publication %q: %w", publication, err)
	}
	if !all && !member {
		if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER PUBLICATION %s ADD TABLE reshard.ddl`, pgx.Identifier{publication}.Sanitize())); err != nil {
			return fmt.Errorf("install DDL capture: add reshard.ddl to publication %q: %w", publication, err)
		}
	}
	return tx.Commit(ctx)
}

// Installed tells whether DDL capture is installed on the database behind
// conn (both event triggers and the table).
func Installed(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var n int
	err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_event_trigger WHERE evtname = ANY($1) AND to_regclass('reshard.ddl') IS NOT NULL`,
		[]string{triggerEnd, triggerDrop}).Scan(&n)
	return n == 2, err
}

// Remove removes DDL capture from one source shard: the event triggers,
// their functions and the captured statements (taken out of the
// publication first). The reshard schema goes too when nothing else of
// reshard's is left in it. Removing what is not there is not an error.
func Remove(ctx context.Context, conn *pgx.Conn) error {
	// After a cutover the old database is read-only by default.
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadWrite})
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck
	if _, err := tx.Exec(ctx, captureOff); err != nil {
		return err
	}
	steps := []string{
		"DROP EVENT TRIGGER IF EXISTS " + triggerEnd,
		"DROP EVENT TRIGGER IF EXISTS " + triggerDrop,
	}
	rows, err := tx.Query(ctx, `SELECT p.pubname FROM pg_publication p JOIN pg_publication_rel r ON r.prpubid = p.oid
		WHERE r.prrelid = to_regclass('reshard.ddl')`)
	if err != nil {
		return fmt.Errorf("remove DDL capture: %w", err)
	}
	for rows.Next() {
		var pub string
		if err := rows.Scan(&pub); err != nil {
			rows.Close()
			return err
		}
		steps = append(steps, fmt.Sprintf("ALTER PUBLICATION %s DROP TABLE reshard.ddl", pgx.Identifier{pub}.Sanitize()))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	steps = append(steps,
		"DROP TABLE IF EXISTS reshard.ddl",
		"DROP FUNCTION IF EXISTS "+funcEnd+"()",
		"DROP FUNCTION IF EXISTS "+funcDrop+"()")
	for _, sql := range steps {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("remove DDL capture: %s: %w", sql, err)
		}
	}
	// The schema goes when it is empty (a destination shard keeps its
	// state there).
	if _, err := tx.Exec(ctx, `DO $$BEGIN
		IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'reshard')
		   AND NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'reshard')
		   AND NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'reshard')
		   AND NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'reshard') THEN
			DROP SCHEMA reshard;
		END IF;
	END$$`); err != nil {
		return fmt.Errorf("remove DDL capture: drop schema reshard: %w", err)
	}
	return tx.Commit(ctx)
}
