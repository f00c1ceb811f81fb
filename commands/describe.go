package commands

import (
	"fmt"
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// DescribeColumns answers psql's \gdesc. psql describes the statement
// through the extended protocol, then asks the server to name the column
// types with
//
//	SELECT name AS "Column", pg_catalog.format_type(tp, tpm) AS "Type"
//	FROM (VALUES ('id', '25'::pg_catalog.oid, -1), ...) s(name, tp, tpm)
//
// That one query shape is recognised and answered; other SQL is refused.
type DescribeColumns struct {
	// Headers are the two output column names ("Column", "Type").
	Headers [2]string
	// Columns are the described columns: name and type OID.
	Columns []Column
	// Modifiers are the columns' type modifiers (-1 for none).
	Modifiers []int32
}

// Keyword implements Command.
func (DescribeColumns) Keyword() string { return "SELECT" }

// String renders the query as psql sends it.
func (c DescribeColumns) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "SELECT name AS %s, pg_catalog.format_type(tp, tpm) AS %s\nFROM (VALUES ",
		quoteAlways(c.Headers[0]), quoteAlways(c.Headers[1]))
	for i, col := range c.Columns {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "(%s, '%d'::pg_catalog.oid, %d)", quoteLiteral(col.Name), col.Type, c.Modifiers[i])
	}
	b.WriteString(") s(name, tp, tpm)")
	return b.String()
}

func quoteAlways(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// typeNames are format_type's names of the types reshard's results use.
var typeNames = map[Type]string{
	TypeBool:        "boolean",
	TypeName:        "name",
	TypeInt8:        "bigint",
	TypeInt2:        "smallint",
	TypeInt4:        "integer",
	TypeText:        "text",
	TypeOid:         "oid",
	TypeFloat8:      "double precision",
	TypeTimestamptz: "timestamp with time zone",
}

// FormatType is PostgreSQL's format_type for the types reshard's results
// use ("bigint", "timestamp with time zone", ...), and "???" for others, as
// PostgreSQL answers for an OID it does not know.
func FormatType(t Type) string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return "???"
}

func (c DescribeColumns) columns() []Column {
	return cols(c.Headers[0], TypeText, c.Headers[1], TypeText)
}

func (c DescribeColumns) rows() [][]any {
	rows := make([][]any, len(c.Columns))
	for i, col := range c.Columns {
		rows[i] = []any{col.Name, FormatType(col.Type)}
	}
	return rows
}

// parseDescribeColumns recognises psql's \gdesc query.
func parseDescribeColumns(sql string) (DescribeColumns, bool) {
	var d DescribeColumns
	tree, err := pg_query.Parse(sql)
	if err != nil || len(tree.Stmts) != 1 {
		return d, false
	}
	sel := tree.Stmts[0].GetStmt().GetSelectStmt()
	if sel == nil || len(sel.TargetList) != 2 || len(sel.FromClause) != 1 || sel.WhereClause != nil ||
		len(sel.GroupClause) != 0 || len(sel.SortClause) != 0 || sel.LimitCount != nil || len(sel.DistinctClause) != 0 {
		return d, false
	}
	name, typ := sel.TargetList[0].GetResTarget(), sel.TargetList[1].GetResTarget()
	if name == nil || typ == nil || columnRef(name.Val) != "name" || name.Name == "" || typ.Name == "" {
		return d, false
	}
	d.Headers = [2]string{name.Name, typ.Name}
	fn := typ.Val.GetFuncCall()
	if fn == nil || len(fn.Args) != 2 || columnRef(fn.Args[0]) != "tp" || columnRef(fn.Args[1]) != "tpm" {
		return d, false
	}
	if n := names(fn.Funcname); n != "pg_catalog.format_type" && n != "format_type" {
		return d, false
	}
	from := sel.FromClause[0].GetRangeSubselect()
	if from == nil || from.Alias == nil || names(from.Alias.Colnames) != "name.tp.tpm" {
		return d, false
	}
	values := from.Subquery.GetSelectStmt()
	if values == nil || len(values.ValuesLists) == 0 {
		return d, false
	}
	for _, l := range values.ValuesLists {
		items := l.GetList().GetItems()
		if len(items) != 3 {
			return d, false
		}
		colName := items[0].GetAConst().GetSval()
		cast := items[1].GetTypeCast()
		mod := items[2].GetAConst().GetIval()
		if colName == nil || cast == nil || mod == nil {
			return d, false
		}
		if n := names(cast.GetTypeName().GetNames()); n != "pg_catalog.oid" && n != "oid" {
			return d, false
		}
		oidText := cast.Arg.GetAConst().GetSval()
		if oidText == nil {
			return d, false
		}
		oid, err := strconv.ParseUint(oidText.Sval, 10, 32)
		if err != nil {
			return d, false
		}
		d.Columns = append(d.Columns, Column{Name: colName.Sval, Type: Type(oid)})
		d.Modifiers = append(d.Modifiers, mod.Ival)
	}
	return d, true
}

// columnRef is the name of an unqualified column reference, or "".
func columnRef(n *pg_query.Node) string {
	ref := n.GetColumnRef()
	if ref == nil || len(ref.Fields) != 1 {
		return ""
	}
	return ref.Fields[0].GetString_().GetSval()
}

// names joins a qualified name's parts with dots.
func names(parts []*pg_query.Node) string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = p.GetString_().GetSval()
	}
	return strings.Join(out, ".")
}
