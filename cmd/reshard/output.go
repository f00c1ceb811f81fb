package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/reshard/reshard/commands"
)

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
	fmt.Fprintf(w, "(%d rows)\n", len(res.Rows))
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
		fmt.Fprintf(w, "%s;\n", row[2])
	}
	if len(res.Rows) == 0 {
		fmt.Fprintf(w, "-- SCHEMA_SYNC %s: nothing to run\n", cmd.Phase)
	}
}
