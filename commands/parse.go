package commands

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// MaxQueryBytes bounds the size of one admin query.
const MaxQueryBytes = 1 << 20

// CodeCharacterNotInRepertoire is PostgreSQL's SQLSTATE for bytes that are
// not valid in the encoding (NUL, broken UTF-8).
const CodeCharacterNotInRepertoire = "22021"

// Forms is the expected form of every command, used in syntax-error hints.
var forms = map[string]string{
	"SCHEMA_SYNC": "SCHEMA_SYNC PRE|POST|CUTOVER|POST_CUTOVER <source> <destination> <publication>",
	"COPY_DATA":   "COPY_DATA <source> <destination> <publication> [<replication slot>]",
	"REPLICATE":   "REPLICATE <source> <destination> <publication> <replication slot>",
	"RESHARD":     "RESHARD <source> <destination> <publication>",
	"VERIFY":      "VERIFY <source> <destination> <publication>",
	"CUTOVER":     "CUTOVER <task id>",
	"STOP_TASK":   "STOP_TASK <task id>",
	"ABORT_TASK":  "ABORT_TASK <task id> [WITH DATA]",
	"SHOW":        "SHOW SCHEMA_SYNC|TABLE_COPIES|REPLICATION_SLOTS|TASKS|VERIFY|DDL|DATABASES|CONFIG|VERSION",
}

// Form returns the expected form of the command with the given keyword.
func Form(keyword string) string { return forms[strings.ToUpper(keyword)] }

func commandList() string {
	names := make([]string, 0, len(forms))
	for k := range forms {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

type tokenKind int

const (
	tokWord   tokenKind = iota // identifier or keyword, unquoted
	tokQuoted                  // "double-quoted identifier"
	tokNumber                  // integer constant
	tokString                  // 'string constant'
	tokOther                   // operators, punctuation, parameters, ...
)

type token struct {
	kind  tokenKind
	raw   string // text as written
	value string // identifier value: lower-cased word or unquoted name
	pos   int    // 0-based byte offset in the query
}

// Parse splits a query into admin commands. A query with nothing but
// whitespace and comments gives one Empty command. A failure is an *Error
// carrying the SQLSTATE to answer with; no command of the query runs then,
// as with PostgreSQL, which parses a whole simple query before running it.
func Parse(query string) ([]Command, error) {
	if len(query) > MaxQueryBytes {
		return nil, Errorf(CodeProgramLimitExceeded, "query of %d bytes is longer than the %d bytes allowed", len(query), MaxQueryBytes)
	}
	if i := strings.IndexByte(query, 0); i >= 0 {
		return nil, Errorf(CodeCharacterNotInRepertoire, "invalid byte sequence for encoding \"UTF8\": 0x00 at byte %d", i)
	}
	if !utf8.ValidString(query) {
		return nil, Errorf(CodeCharacterNotInRepertoire, "invalid byte sequence for encoding \"UTF8\"")
	}
	res, err := pg_query.Scan(query)
	if err != nil {
		return nil, Errorf(CodeSyntaxError, "%s", abbreviate(err.Error())).WithHint("check quoting: names use double quotes, \"like \"\"this\"\"\"")
	}
	var (
		cmds []Command
		stmt []token
	)
	flush := func() error {
		if len(stmt) == 0 {
			return nil
		}
		start := stmt[0].pos
		last := stmt[len(stmt)-1]
		text := query[start : last.pos+len(last.raw)]
		cmd, err := parseStatement(stmt, text)
		if err != nil {
			return err
		}
		cmds = append(cmds, cmd)
		stmt = stmt[:0]
		return nil
	}
	for _, t := range res.Tokens {
		if int(t.Start) < 0 || int(t.End) > len(query) || t.Start > t.End {
			return nil, Errorf(CodeSyntaxError, "scanner returned an invalid token range")
		}
		raw := query[t.Start:t.End]
		switch {
		case t.Token == pg_query.Token_SQL_COMMENT || t.Token == pg_query.Token_C_COMMENT:
			continue
		case t.Token == pg_query.Token_ASCII_59:
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		stmt = append(stmt, classify(t, raw))
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if len(cmds) == 0 {
		return []Command{Empty{}}, nil
	}
	return cmds, nil
}

func classify(t *pg_query.ScanToken, raw string) token {
	tok := token{raw: raw, pos: int(t.Start)}
	switch {
	case t.Token == pg_query.Token_IDENT && strings.HasPrefix(raw, `"`):
		tok.kind = tokQuoted
		tok.value = strings.ReplaceAll(raw[1:len(raw)-1], `""`, `"`)
	case t.Token == pg_query.Token_IDENT || t.KeywordKind != pg_query.KeywordKind_NO_KEYWORD:
		tok.kind = tokWord
		tok.value = strings.ToLower(raw)
	case t.Token == pg_query.Token_ICONST:
		tok.kind = tokNumber
		tok.value = raw
	case t.Token == pg_query.Token_SCONST || t.Token == pg_query.Token_USCONST ||
		t.Token == pg_query.Token_BCONST || t.Token == pg_query.Token_XCONST:
		tok.kind = tokString
		tok.value = raw
	default:
		tok.kind = tokOther
		tok.value = raw
	}
	return tok
}

func syntaxErr(keyword string, near token, format string, args ...any) *Error {
	e := Errorf(CodeSyntaxError, format, args...)
	e.Position = near.pos + 1
	if f := Form(keyword); f != "" {
		e.Hint = "expected: " + f
	}
	return e
}

// nameArgs reads exactly the named arguments (min required, up to len(labels)).
func nameArgs(keyword string, toks []token, min int, labels []string) ([]string, *Error) {
	args := toks[1:]
	out := make([]string, 0, len(labels))
	for i, t := range args {
		if i >= len(labels) {
			return nil, syntaxErr(keyword, t, "syntax error at or near %q: %s takes at most %d arguments", abbreviate(t.raw), keyword, len(labels))
		}
		switch t.kind {
		case tokWord, tokQuoted:
			if t.value == "" {
				return nil, syntaxErr(keyword, t, "zero-length name for %s of %s", labels[i], keyword)
			}
			out = append(out, t.value)
		case tokString:
			return nil, syntaxErr(keyword, t, "syntax error at or near %s: %s must be a name, not a string constant", abbreviate(t.raw), labels[i]).
				WithHint("write names bare or in double quotes; expected: %s", Form(keyword))
		default:
			return nil, syntaxErr(keyword, t, "syntax error at or near %q: expected %s", abbreviate(t.raw), labels[i])
		}
	}
	if len(out) < min {
		end := toks[len(toks)-1]
		end.pos += len(end.raw)
		return nil, syntaxErr(keyword, end, "%s is missing %s", keyword, labels[len(out)])
	}
	return out, nil
}

var routeLabels = []string{"<source>", "<destination>", "<publication>"}

func parseStatement(toks []token, text string) (Command, error) {
	first := toks[0]
	if first.kind != tokWord {
		return nil, Errorf(CodeSyntaxError, "syntax error at or near %q: an admin command starts with a keyword", abbreviate(first.raw)).
			WithHint("commands: %s", commandList())
	}
	kw := strings.ToUpper(first.value)
	switch kw {
	case "SCHEMA_SYNC":
		if len(toks) < 2 {
			return nil, syntaxErr(kw, first, "SCHEMA_SYNC is missing the phase")
		}
		p := toks[1]
		var phase Phase
		if p.kind == tokWord {
			switch strings.ToUpper(p.value) {
			case "PRE":
				phase = PhasePre
			case "POST":
				phase = PhasePost
			case "CUTOVER":
				phase = PhaseCutover
			case "POST_CUTOVER":
				phase = PhasePostCutover
			}
		}
		if phase == "" {
			return nil, syntaxErr(kw, p, "unknown schema sync phase %q", abbreviate(p.raw))
		}
		args, err := nameArgs(kw, toks[1:], 3, routeLabels)
		if err != nil {
			return nil, err
		}
		return SchemaSync{Phase: phase, Route: Route{args[0], args[1], args[2]}}, nil
	case "COPY_DATA":
		args, err := nameArgs(kw, toks, 3, append(routeLabels[:3:3], "<replication slot>"))
		if err != nil {
			return nil, err
		}
		c := CopyData{Route: Route{args[0], args[1], args[2]}}
		if len(args) == 4 {
			c.Slot = args[3]
		}
		return c, nil
	case "REPLICATE":
		args, err := nameArgs(kw, toks, 4, append(routeLabels[:3:3], "<replication slot>"))
		if err != nil {
			return nil, err
		}
		return Replicate{Route: Route{args[0], args[1], args[2]}, Slot: args[3]}, nil
	case "RESHARD", "VERIFY":
		args, err := nameArgs(kw, toks, 3, routeLabels)
		if err != nil {
			return nil, err
		}
		r := Route{args[0], args[1], args[2]}
		if kw == "RESHARD" {
			return Reshard{r}, nil
		}
		return Verify{Route: r}, nil
	case "ABORT_TASK":
		if len(toks) >= 4 && toks[2].kind == tokWord && toks[2].value == "with" && toks[3].kind == tokWord && toks[3].value == "data" {
			c, err := parseStatement(toks[:2], text)
			if err != nil {
				return nil, err
			}
			if len(toks) > 4 {
				return nil, syntaxErr(kw, toks[4], "syntax error at or near %q: ABORT_TASK ends after WITH DATA", abbreviate(toks[4].raw))
			}
			a := c.(AbortTask)
			a.WithData = true
			return a, nil
		}
		fallthrough
	case "CUTOVER", "STOP_TASK":
		if len(toks) < 2 {
			return nil, syntaxErr(kw, first, "%s is missing the task id", kw)
		}
		if len(toks) > 2 {
			return nil, syntaxErr(kw, toks[2], "syntax error at or near %q: %s takes one task id", abbreviate(toks[2].raw), kw)
		}
		t := toks[1]
		if t.kind != tokNumber && t.kind != tokWord && t.kind != tokQuoted {
			return nil, syntaxErr(kw, t, "syntax error at or near %q: expected a task id", abbreviate(t.raw))
		}
		switch kw {
		case "CUTOVER":
			return Cutover{Task: t.value}, nil
		case "ABORT_TASK":
			return AbortTask{Task: t.value}, nil
		}
		return StopTask{Task: t.value}, nil
	case "SHOW":
		if len(toks) < 2 {
			return nil, syntaxErr(kw, first, "SHOW is missing what to show")
		}
		if name, ok := showPhrase(toks[1:]); ok {
			return Show{Name: name}, nil
		}
		if len(toks) > 2 {
			return nil, syntaxErr(kw, toks[2], "syntax error at or near %q: SHOW takes one name", abbreviate(toks[2].raw))
		}
		t := toks[1]
		if t.kind != tokWord && t.kind != tokQuoted {
			return nil, syntaxErr(kw, t, "syntax error at or near %q: expected a view or setting name", abbreviate(t.raw))
		}
		return Show{Name: strings.ToLower(t.value)}, nil
	case "SET", "RESET", "DISCARD":
		return Set{Verb: kw, Text: text}, nil
	case "BEGIN", "START":
		if kw == "START" {
			return Transaction{Tag: "START TRANSACTION"}, nil
		}
		return Transaction{Tag: "BEGIN"}, nil
	case "COMMIT", "END":
		return Transaction{Tag: "COMMIT"}, nil
	case "ROLLBACK", "ABORT":
		return Transaction{Tag: "ROLLBACK"}, nil
	}
	if kw == "SELECT" || kw == "WITH" {
		if d, ok := parseDescribeColumns(text); ok {
			return d, nil
		}
		// What SQL clients and BI tools ask on connect (select.go).
		if s, err, ok := parseSelect(text); ok {
			if err != nil {
				err.Position = first.pos + 1
				return nil, err
			}
			return s, nil
		}
	}
	e := Errorf(CodeSyntaxError, "unknown admin command %q", abbreviate(first.raw))
	e.Position = first.pos + 1
	if sqlWords[kw] {
		e.Detail = fmt.Sprintf("reshard's admin database runs admin commands only, not SQL (%s)", kw)
	}
	e.Hint = "commands: " + commandList()
	return nil, e
}

// showPhrases are PostgreSQL's multi-word SHOW forms and the settings they
// show. pgjdbc's Connection.getTransactionIsolation sends the first.
var showPhrases = map[string]string{
	"transaction isolation level": "transaction_isolation",
	"time zone":                   "timezone",
}

// showPhrase recognises the unquoted words of a multi-word SHOW form.
func showPhrase(toks []token) (string, bool) {
	words := make([]string, len(toks))
	for i, t := range toks {
		if t.kind != tokWord {
			return "", false
		}
		words[i] = t.value
	}
	name, ok := showPhrases[strings.Join(words, " ")]
	return name, ok
}

var sqlWords = map[string]bool{
	"SELECT": true, "INSERT": true, "UPDATE": true, "DELETE": true, "CREATE": true, "DROP": true,
	"ALTER": true, "COPY": true, "WITH": true, "VALUES": true, "TABLE": true, "TRUNCATE": true,
	"GRANT": true, "REVOKE": true, "EXPLAIN": true, "ANALYZE": true, "VACUUM": true, "CALL": true,
	"DO": true, "PREPARE": true, "EXECUTE": true, "DEALLOCATE": true, "LISTEN": true, "NOTIFY": true,
}
