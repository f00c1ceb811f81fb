package catalog

import (
	"fmt"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// positions maps a dotted key path ("general.port", "databases[2].role") to
// the 1-based line where it is written, so that validation errors can point
// at the offending line of the file.
type positions map[string]int

// indexPositions walks a TOML document and records the line of every key and
// of every table header. Parse errors are left to the decoder to report.
func indexPositions(data []byte) positions {
	pos := positions{}
	counts := map[string]int{} // array-table path -> elements seen
	var p unstable.Parser
	p.Reset(data)
	current := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			parts, line := keyParts(&p, e.Key())
			path := joinArrayPath(parts, counts)
			if e.Kind == unstable.ArrayTable {
				base := strings.Join(parts, ".")
				n := counts[base]
				counts[base] = n + 1
				path = fmt.Sprintf("%s[%d]", path, n)
			}
			current = path
			if line > 0 {
				pos[path] = line
			}
		case unstable.KeyValue:
			parts, line := keyParts(&p, e.Key())
			path := strings.Join(parts, ".")
			if current != "" {
				path = current + "." + path
			}
			if line > 0 {
				pos[path] = line
			}
		}
	}
	return pos
}

// joinArrayPath joins a table header's parts, indexing every prefix that is
// an array of tables by its latest element ([[sharded_tables.mapping]] lives
// inside the last [[sharded_tables]]).
func joinArrayPath(parts []string, counts map[string]int) string {
	var b strings.Builder
	for i, part := range parts {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(part)
		prefix := strings.Join(parts[:i+1], ".")
		if n, ok := counts[prefix]; ok && i < len(parts)-1 {
			fmt.Fprintf(&b, "[%d]", n-1)
		}
	}
	return b.String()
}

func keyParts(p *unstable.Parser, it unstable.Iterator) ([]string, int) {
	var parts []string
	line := 0
	for it.Next() {
		n := it.Node()
		parts = append(parts, string(n.Data))
		if line == 0 && n.Raw.Length > 0 {
			line = p.Shape(n.Raw).Start.Line
		}
	}
	return parts, line
}

// line returns the line of path, or of its closest enclosing table.
func (ps positions) line(path string) int {
	for path != "" {
		if l, ok := ps[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// pathAt returns the indexed path ("databases[3].port") of the key written
// on line, falling back to the decoder's plain dotted key.
func (ps positions) pathAt(line int, key []string) string {
	plain := strings.Join(key, ".")
	if len(key) == 0 {
		return plain
	}
	last := key[len(key)-1]
	for p, l := range ps {
		if l == line && (p == last || strings.HasSuffix(p, "."+last)) {
			return p
		}
	}
	return plain
}
