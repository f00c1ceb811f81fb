package keywords

import (
	"strings"
	"testing"
)

// A statement a PostgreSQL 15 or 16 server ran, naming things by words 17
// made keywords, parses with them quoted (literals and function bodies
// untouched); from 17, or from a server of unknown version, it is parsed
// as it is.
func TestParseQuotesWordsOfNewerServers(t *testing.T) {
	const stmt = `CREATE FUNCTION f(json json, json_table text DEFAULT 'json json') RETURNS json LANGUAGE sql AS $$ SELECT json $$; SELECT (v IS JSON) AS ok FROM t`
	for _, c := range []struct {
		major int
		want  []string // in the text parsed; nil: parse error
	}{
		// 15: every such word is an identifier, and IS JSON did not exist.
		{15, nil},
		// 16: json was an unreserved keyword (IS JSON): only where the
		// parser stops at it is it quoted (RETURNS json parses as the
		// type).
		{16, []string{`f("json" "json", "json_table" text DEFAULT 'json json') RETURNS json LANGUAGE`, `$$ SELECT json $$`, `(v IS JSON)`}},
		{17, nil},
		{0, nil},
	} {
		_, text, err := Parse(stmt, c.major)
		if c.want == nil {
			if err == nil {
				t.Errorf("PostgreSQL %d: parsed: %s", c.major, text)
			}
			continue
		}
		if err != nil {
			t.Errorf("PostgreSQL %d: %v", c.major, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(text, w) {
				t.Errorf("PostgreSQL %d: the text parsed has no %s: %s", c.major, w, text)
			}
		}
	}
	// Without IS JSON, a 15 statement parses with every word quoted.
	_, text, err := Parse(`CREATE FUNCTION f(json json, merge_action text) RETURNS json LANGUAGE sql AS $$ SELECT json $$`, 15)
	if err != nil || !strings.Contains(text, `f("json" "json", "merge_action" text) RETURNS "json"`) || !strings.Contains(text, `$$ SELECT json $$`) {
		t.Errorf("PostgreSQL 15: %v: %s", err, text)
	}
}
