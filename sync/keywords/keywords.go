// Package keywords makes SQL written for a server older than PostgreSQL 17
// parse with reshard's parser (PostgreSQL 17's grammar): the words 16 and
// 17 made keywords, written bare by the older server's pg_dump and by its
// users, are quoted where they are identifiers.
package keywords

import (
	"errors"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"
)

// newerKeywords are the words PostgreSQL 16 and 17 made keywords that
// PostgreSQL 17's grammar (reshard's parser) does not accept everywhere an
// identifier goes (pg_get_keywords catcode C or R on 17: no function,
// type or parameter name), with the first major version in which each is
// a keyword at all. An older server's pg_dump quotes only its own
// keywords, so its dump writes them bare (a parameter named json:
// CREATE FUNCTION f(json json)), and they do not parse.
var newerKeywords = map[string]int{
	"json": 16, "json_array": 16, "json_arrayagg": 16, "json_object": 16, "json_objectagg": 16, "system_user": 16,
	"json_exists": 17, "json_query": 17, "json_scalar": 17, "json_serialize": 17, "json_table": 17, "json_value": 17,
	"merge_action": 17,
}

// Parse parses SQL text that a server of major version major (0:
// unknown) took or wrote, quoting the newer keywords first (Quote, then
// QuoteAtError for each place the parser still stops at, up to 1000): it
// returns the parse and the text parsed, whose statements are what to
// run on a newer server.
func Parse(text string, major int) (*pg_query.ParseResult, string, error) {
	text = Quote(text, major)
	tree, err := pg_query.Parse(text)
	for tries := 0; err != nil && tries < 1000; tries++ {
		quoted, ok := QuoteAtError(text, err, major)
		if !ok {
			break
		}
		text = quoted
		tree, err = pg_query.Parse(text)
	}
	return tree, text, err
}

// Quote quotes, in SQL text taken from a server older than PostgreSQL 17
// (a dump, a statement it ran), every bare word that was no keyword at all on that
// server and is one reshard's parser does not take as an identifier: there
// it can only have been an identifier, and quoted (in lower case, as
// PostgreSQL folds it) it means the same on every version.
func Quote(dump string, major int) string {
	if major == 0 || major >= 17 {
		return dump
	}
	lower := strings.ToLower(dump)
	found := false
	for w, since := range newerKeywords {
		if since > major && strings.Contains(lower, w) {
			found = true
			break
		}
	}
	if !found {
		return dump
	}
	res, err := pg_query.Scan(dump)
	if err != nil {
		return dump
	}
	var b strings.Builder
	last := 0
	for _, tok := range res.Tokens {
		if tok.KeywordKind == pg_query.KeywordKind_NO_KEYWORD || tok.KeywordKind == pg_query.KeywordKind_UNRESERVED_KEYWORD {
			continue
		}
		start, end := int(tok.Start), int(tok.End)
		if start < last || end > len(dump) {
			continue
		}
		w := strings.ToLower(dump[start:end])
		if since, ok := newerKeywords[w]; !ok || since <= major {
			continue
		}
		b.WriteString(dump[last:start])
		b.WriteString(`"` + w + `"`)
		last = end
	}
	if last == 0 {
		return dump
	}
	b.WriteString(dump[last:])
	return b.String()
}

// QuoteAtError quotes the bare word of newerKeywords nearest before (or
// at) where a parse error points, in the statement it is in, when the
// dump's server had it as an unreserved keyword (json on PostgreSQL 16:
// its dump writes a parameter named json bare, as it writes IS JSON), so
// that the caller can parse again; ok is false when there is none. Words
// are found by the scanner: string literals and function bodies are never
// touched.
func QuoteAtError(text string, err error, major int) (string, bool) {
	var pe *parser.Error
	if major == 0 || major >= 17 || !errors.As(err, &pe) {
		return text, false
	}
	at, ok := ErrorOffset(text, pe.Cursorpos)
	if !ok {
		return text, false
	}
	// The statement: from the end of the previous one (a ";" ending a
	// line, as pg_dump writes them) to just past the error's token.
	start := StatementStart(text, at)
	end := at
	for end < len(text) && (text[end] == '_' || text[end] >= 'a' && text[end] <= 'z' || text[end] >= 'A' && text[end] <= 'Z' || text[end] >= '0' && text[end] <= '9') {
		end++
	}
	res, serr := pg_query.Scan(text[start:end])
	if serr != nil {
		return text, false
	}
	for i := len(res.Tokens) - 1; i >= 0; i-- {
		tok := res.Tokens[i]
		if tok.KeywordKind == pg_query.KeywordKind_NO_KEYWORD {
			continue
		}
		ts, te := start+int(tok.Start), start+int(tok.End)
		w := strings.ToLower(text[ts:te])
		if _, ok := newerKeywords[w]; ok {
			return text[:ts] + `"` + w + `"` + text[te:], true
		}
	}
	return text, false
}

// ErrorOffset turns a parse error's cursor position (1-based, in
// characters, as PostgreSQL counts it) into a byte offset of text.
func ErrorOffset(text string, cursorpos int) (int, bool) {
	if cursorpos <= 0 {
		return 0, false
	}
	n := 0
	for i := range text {
		n++
		if n == cursorpos {
			return i, true
		}
	}
	return 0, false
}

// StatementStart is where the statement holding byte offset at begins:
// after the previous statement's end (a ";" that ends a line, as pg_dump
// writes them), or at 0.
func StatementStart(text string, at int) int {
	i := strings.LastIndex(text[:at], ";\n")
	if i < 0 {
		return 0
	}
	return i + 2
}
