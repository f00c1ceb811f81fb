package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/reshard/reshard/cli/display"
	"github.com/reshard/reshard/commands"
)

// sink is where a command's progress goes: JSON events with --json, live
// bars when stderr is a terminal, nothing otherwise (the engine logs a
// line per event).
func (e *env) sink() display.Sink {
	switch {
	case e.json:
		return e.jsonOut()
	case isTerminal(e.stderr):
		return display.NewTerminal(e.stderr, e.name, e.logOut)
	}
	return nil
}

func (e *env) jsonOut() *display.JSON {
	if e.events == nil {
		e.events = display.NewJSON(e.stdout)
	}
	return e.events
}

// isTerminal tells whether w is a terminal that can redraw lines (not
// TERM=dumb).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) && os.Getenv("TERM") != "dumb"
}

// finish prints the command's result and error, as text or as the last
// JSON events.
func (e *env) finish(err error, code int) {
	if e.json {
		out := e.jsonOut()
		if err != nil {
			out.Event(display.Event{Kind: display.EventError, At: time.Now(), Fields: errorFields(err)})
		}
		f := map[string]any{"command": e.name, "exit_code": code}
		if e.result != nil {
			f["tag"] = e.result.Tag
			f["rows"] = resultRows(e.result)
		}
		out.Event(display.Event{Kind: display.EventResult, At: time.Now(), Fields: f})
		return
	}
	if e.result != nil {
		printResult(e.stdout, e.result)
	}
	if err == nil {
		return
	}
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "reshard %s: %s\n", e.name, err)
	case e.logJSON:
		e.log.Error(e.name+" failed", "error", err.Error())
	default:
		printError(e.stderr, err)
	}
}

// errorFields describes an error for a JSON error event.
func errorFields(err error) map[string]any {
	f := map[string]any{"message": err.Error()}
	var ce *commands.Error
	if errors.As(err, &ce) {
		f["message"], f["sqlstate"] = ce.Message, ce.Code
		if ce.Detail != "" {
			f["detail"] = ce.Detail
		}
		if ce.Hint != "" {
			f["hint"] = ce.Hint
		}
	}
	return f
}

// resultRows turns a result set into one JSON object per row.
func resultRows(res *commands.Result) []map[string]any {
	rows := make([]map[string]any, 0, len(res.Rows))
	for _, row := range res.Rows {
		m := make(map[string]any, len(row))
		for i, v := range row {
			if i < len(res.Columns) {
				m[res.Columns[i].Name] = v
			}
		}
		rows = append(rows, m)
	}
	return rows
}

// printResult prints a result set as an aligned table (or its tag alone).
func printResult(w io.Writer, res *commands.Result) {
	if len(res.Columns) == 0 {
		if res.Tag != "" {
			fmt.Fprintln(w, res.Tag)
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	names := make([]string, len(res.Columns))
	for i, c := range res.Columns {
		names[i] = c.Name
	}
	fmt.Fprintln(tw, strings.Join(names, "\t"))
	for _, row := range res.Rows {
		cells := make([]string, len(row))
		for i, v := range row {
			cells[i] = formatValue(v)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
	if len(res.Rows) == 1 {
		fmt.Fprintln(w, "(1 row)")
	} else {
		fmt.Fprintf(w, "(%d rows)\n", len(res.Rows))
	}
}

func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case time.Time:
		return x.Format(time.RFC3339)
	default:
		return fmt.Sprint(x)
	}
}

// printError prints an error the way psql would: severity, SQLSTATE, detail, hint.
func printError(w io.Writer, err error) {
	var ce *commands.Error
	if errors.As(err, &ce) {
		fmt.Fprintf(w, "ERROR:  %s (SQLSTATE %s)\n", ce.Message, ce.Code)
		if ce.Detail != "" {
			fmt.Fprintf(w, "DETAIL:  %s\n", ce.Detail)
		}
		if ce.Hint != "" {
			fmt.Fprintf(w, "HINT:  %s\n", ce.Hint)
		}
		return
	}
	fmt.Fprintf(w, "reshard: %s\n", err)
}

// printDryRun prints a schema-sync dry run as a SQL script per shard.
func printDryRun(w io.Writer, cmd commands.SchemaSync, res *commands.Result) {
	shard := int64(-1)
	for _, row := range res.Rows {
		if s := row[0].(int64); s != shard {
			shard = s
			fmt.Fprintf(w, "\n-- SCHEMA_SYNC %s: %s shard %d\n", cmd.Phase, cmd.Destination, shard)
		}
		sql := row[2].(string)
		if strings.HasPrefix(sql, "--") {
			fmt.Fprintf(w, "%s\n", sql) // a note (a widened column), not a statement
			continue
		}
		fmt.Fprintf(w, "%s;\n", sql)
	}
	if len(res.Rows) == 0 {
		fmt.Fprintf(w, "-- SCHEMA_SYNC %s: nothing to run\n", cmd.Phase)
	}
}
