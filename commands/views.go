package commands

import "sort"

// The columns of every SHOW view, in DESIGN §1 order.
var (
	schemaSyncColumns = cols(
		"database", TypeText, "user", TypeText, "shard", TypeInt8, "kind", TypeText,
		"sync_state", TypeText, "started_at", TypeTimestamptz, "elapsed", TypeText,
		"elapsed_ms", TypeInt8, "table_schema", TypeText, "table_name", TypeText, "sql", TypeText)
	tableCopiesColumns = cols(
		"schema", TypeText, "table", TypeText, "status", TypeText, "rows", TypeInt8,
		"rows_human", TypeText, "bytes", TypeInt8, "bytes_human", TypeText,
		"bytes_per_sec", TypeInt8, "bytes_per_sec_human", TypeText, "elapsed", TypeText,
		"elapsed_ms", TypeInt8, "sql", TypeText, "total_bytes_estimate", TypeInt8,
		"percent", TypeFloat8, "eta", TypeText, "source_node", TypeText, "format", TypeText)
	replicationSlotsColumns = cols(
		"host", TypeText, "port", TypeInt8, "database_name", TypeText, "name", TypeText,
		"lsn", TypeText, "lag", TypeText, "lag_bytes", TypeInt8, "copy_data", TypeBool,
		"last_transaction", TypeTimestamptz, "last_transaction_ms", TypeInt8,
		"retained_wal", TypeText, "retained_wal_bytes", TypeInt8, "active", TypeBool)
	tasksColumns = cols(
		"id", TypeText, "kind", TypeText, "source", TypeText, "destination", TypeText,
		"publication", TypeText, "state", TypeText, "started_at", TypeTimestamptz,
		"elapsed", TypeText, "error", TypeText)
	verifyColumns = cols(
		"task", TypeText, "schema", TypeText, "table", TypeText, "status", TypeText,
		"source_rows", TypeInt8, "destination_rows", TypeInt8, "missing", TypeInt8,
		"extra", TypeInt8, "different", TypeInt8, "misplaced", TypeInt8, "rows_compared", TypeInt8,
		"percent", TypeFloat8, "eta", TypeText, "elapsed_ms", TypeInt8, "shard_rows", TypeText,
		"consistent_lsn", TypeText, "hold_ms", TypeInt8)
	ddlColumns = cols(
		"task", TypeText, "slot", TypeText, "source_shard", TypeInt8, "id", TypeInt8,
		"captured_at", TypeTimestamptz, "command_tag", TypeText, "statement", TypeText,
		"state", TypeText, "applied_shards", TypeText, "pending_shards", TypeText,
		"applied_at", TypeTimestamptz, "applied_sql", TypeText, "note", TypeText, "error", TypeText)
	databasesColumns = cols(
		"name", TypeText, "host", TypeText, "port", TypeInt8, "database_name", TypeText,
		"role", TypeText, "shard", TypeInt8, "resharding_only", TypeBool)
	configColumns  = cols("name", TypeText, "value", TypeText)
	versionColumns = cols("version", TypeText)
	taskIDColumns  = cols("task_id", TypeText)
	// schemaSyncResultColumns answer SCHEMA_SYNC: one row per shard.
	schemaSyncResultColumns = cols(
		"database", TypeText, "shard", TypeInt8, "phase", TypeText, "statements", TypeInt8,
		"applied", TypeInt8, "already_present", TypeInt8, "failed", TypeInt8,
		"elapsed_ms", TypeInt8, "notes", TypeText)
	// schemaSyncDryRunColumns answer a dry run: every statement per shard.
	schemaSyncDryRunColumns = cols("shard", TypeInt8, "phase", TypeText, "sql", TypeText)
)

// views maps SHOW names to their columns.
var views = map[string][]Column{
	"schema_sync":       schemaSyncColumns,
	"table_copies":      tableCopiesColumns,
	"replication_slots": replicationSlotsColumns,
	"tasks":             tasksColumns,
	"verify":            verifyColumns,
	"ddl":               ddlColumns,
	"databases":         databasesColumns,
	"config":            configColumns,
	"version":           versionColumns,
}

// Views returns the names of the SHOW views, sorted, in lower case.
// Executor.Columns gives each one's columns.
func Views() []string {
	names := make([]string, 0, len(views))
	for name := range views {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Setting is the value SHOW name answers for a server setting drivers
// probe ("server_version": "15.0"), and whether there is one.
func Setting(name string) (string, bool) {
	v, ok := settings[name]
	return v, ok
}

// settings are the server settings drivers and tools probe with SHOW; the
// admin server answers them the way PostgreSQL 15 would.
var settings = map[string]string{
	"server_version":                "15.0",
	"server_version_num":            "150000",
	"server_encoding":               "UTF8",
	"client_encoding":               "UTF8",
	"standard_conforming_strings":   "on",
	"transaction_isolation":         "read committed",
	"default_transaction_isolation": "read committed",
	"transaction_read_only":         "off",
	"default_transaction_read_only": "off",
	"datestyle":                     "ISO, MDY",
	"intervalstyle":                 "postgres",
	"timezone":                      "UTC",
	"integer_datetimes":             "on",
	"is_superuser":                  "off",
	"max_identifier_length":         "63",
	"search_path":                   "\"$user\", public",
	"lc_collate":                    "C.UTF-8",
	"lc_ctype":                      "C.UTF-8",
	"extra_float_digits":            "3",
	"statement_timeout":             "0",
}
