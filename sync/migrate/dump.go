package migrate

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/sync/job"
)

// dumpDDL holds, on destination shard 0, the source schema a RESHARD's
// PRE dumped at its slot's snapshot, until its POST planned from it.
const dumpDDL = `CREATE SCHEMA IF NOT EXISTS reshard;
CREATE TABLE IF NOT EXISTS reshard.schema_dumps (
	slot text PRIMARY KEY,
	dump text NOT NULL,
	saved_at timestamptz NOT NULL DEFAULT now()
)`

// saveDump records the dump of the migration whose slot is slot.
func saveDump(ctx context.Context, j *job.Job, slot, dump string) error {
	conn, err := j.ConnectDestination(ctx, 0)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, dumpDDL); err != nil {
		return fmt.Errorf("destination shard 0: create reshard.schema_dumps: %w", err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO reshard.schema_dumps (slot, dump) VALUES ($1, $2)
		ON CONFLICT (slot) DO UPDATE SET dump = excluded.dump, saved_at = now()`, slot, dump); err != nil {
		return fmt.Errorf("destination shard 0: save the schema dump: %w", err)
	}
	return nil
}

// loadDump reads the dump saveDump recorded ("" when there is none).
func loadDump(ctx context.Context, j *job.Job, slot string) (string, error) {
	conn, err := j.ConnectDestination(ctx, 0)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var dump string
	err = conn.QueryRow(ctx, `SELECT dump FROM reshard.schema_dumps WHERE slot = $1`, slot).Scan(&dump)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) && !isUndefinedTable(err) {
		return "", fmt.Errorf("destination shard 0: read the schema dump: %w", err)
	}
	return dump, nil
}

// forgetDump removes the dump once POST planned from it.
func forgetDump(ctx context.Context, j *job.Job, slot string) error {
	conn, err := j.ConnectDestination(ctx, 0)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `DELETE FROM reshard.schema_dumps WHERE slot = $1`, slot); err != nil && !isUndefinedTable(err) {
		return fmt.Errorf("destination shard 0: remove the schema dump: %w", err)
	}
	return nil
}

// isUndefinedTable tells whether err is PostgreSQL's 42P01 (no
// reshard.schema_dumps: nothing was saved there).
func isUndefinedTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42P01"
}
