// Package commands is the admin language of reshard: the grammar that turns
// the text an operator sends (psql, any driver, the CLI) into Command values,
// and the execution of those values into result sets.
package commands

import "strings"

// Command is one parsed admin command.
type Command interface {
	// Keyword is the command's leading keyword, as the operator writes it
	// (SCHEMA_SYNC, SHOW, ...).
	Keyword() string
	// String renders the command back in canonical form.
	String() string
}

// Phase is a schema-sync phase.
type Phase string

// The schema-sync phases, in the order a resharding runs them.
const (
	PhasePre         Phase = "PRE"
	PhasePost        Phase = "POST"
	PhaseCutover     Phase = "CUTOVER"
	PhasePostCutover Phase = "POST_CUTOVER"
)

// Route names the clusters and publication a data command works on.
type Route struct {
	// Source is the cluster data comes from.
	Source string
	// Destination is the cluster data goes to.
	Destination string
	// Publication is the PostgreSQL publication on the source.
	Publication string
}

func (r Route) String() string {
	return quoteIdent(r.Source) + " " + quoteIdent(r.Destination) + " " + quoteIdent(r.Publication)
}

// SchemaSync is SCHEMA_SYNC <phase> <src> <dst> <pub>.
type SchemaSync struct {
	Phase Phase
	Route
	// DryRun and IgnoreErrors come from the CLI (--dry-run,
	// --ignore-errors); the admin grammar has no syntax for them.
	DryRun, IgnoreErrors bool
}

// CopyData is COPY_DATA <src> <dst> <pub> [<slot>].
type CopyData struct {
	Route
	// Slot is the replication slot name; empty means generate one.
	Slot string
	// Foreground and SyncOnly come from the CLI (data-sync, --sync-only):
	// run in the caller, and copy without streaming.
	Foreground, SyncOnly bool
}

// Replicate is REPLICATE <src> <dst> <pub> <slot>.
type Replicate struct {
	Route
	Slot string
	// Foreground comes from the CLI (data-sync --replicate-only).
	Foreground bool
}

// Reshard is RESHARD <src> <dst> <pub>.
type Reshard struct{ Route }

// Verify is VERIFY <src> <dst> <pub>.
type Verify struct {
	Route
	// Foreground comes from the CLI (reshard verify): run in the caller.
	Foreground bool
}

// Cutover is CUTOVER <task>.
type Cutover struct{ Task string }

// StopTask is STOP_TASK <task>.
type StopTask struct{ Task string }

// AbortTask is ABORT_TASK <task> [WITH DATA]: end a migration for good and
// remove what it created (WITH DATA: also the rows copied to the shards).
type AbortTask struct {
	Task     string
	WithData bool
}

// Show is SHOW <name>: a reshard view (SHOW TASKS) or a server setting probe
// (SHOW server_version) that drivers send.
type Show struct {
	// Name is the lower-cased view or setting name.
	Name string
}

// Set is any SET / RESET / DISCARD statement. Drivers send them at connect
// time (JDBC: SET extra_float_digits = 3); they are accepted and ignored.
type Set struct {
	// Verb is SET, RESET or DISCARD.
	Verb string
	// Text is the whole statement as sent.
	Text string
}

// Transaction is BEGIN / START TRANSACTION / COMMIT / END / ROLLBACK /
// ABORT: accepted so that drivers that wrap statements in a transaction
// (psycopg2 without autocommit) work. Admin commands are not transactional.
type Transaction struct {
	// Tag is the command tag PostgreSQL would answer (BEGIN, COMMIT, ROLLBACK).
	Tag string
}

// Empty is a query with nothing but whitespace and comments (pgx's ping).
type Empty struct{}

// Keyword implements Command.
func (SchemaSync) Keyword() string { return "SCHEMA_SYNC" }

// Keyword implements Command.
func (CopyData) Keyword() string { return "COPY_DATA" }

// Keyword implements Command.
func (Replicate) Keyword() string { return "REPLICATE" }

// Keyword implements Command.
func (Reshard) Keyword() string { return "RESHARD" }

// Keyword implements Command.
func (Verify) Keyword() string { return "VERIFY" }

// Keyword implements Command.
func (Cutover) Keyword() string { return "CUTOVER" }

// Keyword implements Command.
func (StopTask) Keyword() string { return "STOP_TASK" }

// Keyword implements Command.
func (AbortTask) Keyword() string { return "ABORT_TASK" }

// Keyword implements Command.
func (Show) Keyword() string { return "SHOW" }

// Keyword implements Command.
func (s Set) Keyword() string { return s.Verb }

// Keyword implements Command.
func (t Transaction) Keyword() string { return t.Tag }

// Keyword implements Command.
func (Empty) Keyword() string { return "" }

func (c SchemaSync) String() string { return "SCHEMA_SYNC " + string(c.Phase) + " " + c.Route.String() }
func (c CopyData) String() string {
	s := "COPY_DATA " + c.Route.String()
	if c.Slot != "" {
		s += " " + quoteIdent(c.Slot)
	}
	return s
}
func (c Replicate) String() string { return "REPLICATE " + c.Route.String() + " " + quoteIdent(c.Slot) }
func (c Reshard) String() string   { return "RESHARD " + c.Route.String() }
func (c Verify) String() string    { return "VERIFY " + c.Route.String() }
func (c Cutover) String() string   { return "CUTOVER " + quoteIdent(c.Task) }
func (c StopTask) String() string  { return "STOP_TASK " + quoteIdent(c.Task) }
func (c AbortTask) String() string {
	if c.WithData {
		return "ABORT_TASK " + quoteIdent(c.Task) + " WITH DATA"
	}
	return "ABORT_TASK " + quoteIdent(c.Task)
}
func (c Show) String() string {
	if q := quoteIdent(c.Name); q == c.Name {
		return "SHOW " + strings.ToUpper(c.Name)
	}
	return "SHOW " + quoteIdent(c.Name)
}
func (c Set) String() string { return c.Text }
func (c Transaction) String() string {
	return c.Tag
}
func (Empty) String() string { return "" }

// quoteIdent renders a name so that parsing it gives the name back: bare
// when it is a lower-case identifier, double-quoted otherwise.
func quoteIdent(s string) string {
	if s == "" {
		return `""`
	}
	bare := true
	for i, r := range s {
		if !(r == '_' || (r >= 'a' && r <= 'z') || (i > 0 && r >= '0' && r <= '9')) {
			bare = false
			break
		}
	}
	if bare && !reservedWord(s) {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

func reservedWord(s string) bool {
	switch s {
	case "all", "and", "any", "as", "select", "from", "where", "table", "user", "order", "group", "default", "null", "true", "false", "to", "with":
		return true
	}
	return false
}
