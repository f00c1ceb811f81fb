package commands

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// docTypeNames are the short PostgreSQL names of the column types, as docs/views.md
// writes them.
var docTypeNames = map[Type]string{TypeBool: "bool", TypeInt8: "int8", TypeInt4: "int4", TypeText: "text",
	TypeFloat8: "float8", TypeTimestamptz: "timestamptz"}

// TestViewsDocumented: docs/views.md has a section for every SHOW view that
// lists its columns in order with their types, and no other columns.
func TestViewsDocumented(t *testing.T) {
	data, err := os.ReadFile("../docs/views.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for name, columns := range views {
		heading := "## SHOW " + strings.ToUpper(name) + "\n"
		i := strings.Index(doc, heading)
		if i < 0 {
			t.Errorf("docs/views.md has no %q section", strings.TrimSpace(heading))
			continue
		}
		section := doc[i+len(heading):]
		if j := strings.Index(section, "\n## "); j >= 0 {
			section = section[:j]
		}
		var documented []string
		for _, line := range strings.Split(section, "\n") {
			cells := strings.Split(line, "|")
			if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
				continue
			}
			documented = append(documented, strings.TrimSpace(cells[1])+" "+strings.TrimSpace(cells[2]))
		}
		var want []string
		for _, c := range columns {
			typ, ok := docTypeNames[c.Type]
			if !ok {
				t.Fatalf("type %d of %s.%s has no name here", c.Type, name, c.Name)
			}
			want = append(want, fmt.Sprintf("`%s` `%s`", c.Name, typ))
		}
		if strings.Join(documented, ", ") != strings.Join(want, ", ") {
			t.Errorf("SHOW %s columns\n documented: %s\n   in code: %s", strings.ToUpper(name), strings.Join(documented, ", "), strings.Join(want, ", "))
		}
	}
}
