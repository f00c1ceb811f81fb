package stream

import (
	"strings"
	"testing"
)

// identityRelation is t(id GENERATED ALWAYS, ticket GENERATED ALWAYS, v)
// keyed by id.
func identityRelation(identity uint8) *relation {
	r := &relation{schema: "public", name: "t", qualified: `"public"."t"`, columns: []string{"id", "ticket", "v"},
		key: []int{0}, identity: identity, types: []string{"integer", "bigint", "text"},
		always: []bool{true, true, false}, anyAlways: true}
	r.plan = newPlan(r)
	return r
}

func vals(s ...string) []value {
	out := make([]value, len(s))
	for i, v := range s {
		switch v {
		case "~":
			out[i] = value{toasted: true}
		case "":
			out[i] = value{null: true}
		default:
			out[i] = value{data: []byte(v)}
		}
	}
	return out
}

func TestIdentitySet(t *testing.T) {
	r := identityRelation('d')
	for _, c := range []struct {
		name      string
		rel       *relation
		old, new  []value
		set       string // which columns are set: s set, - left out
		replace   bool
		sqlHas    string
		sqlHasNot string
	}{
		// The key unchanged (no old key sent): id left out; ticket, outside
		// the key, may have changed.
		{"key unchanged", r, nil, vals("1", "7", "x"), "-ss", true, "OVERRIDING SYSTEM VALUE SELECT d.\"id\", $1::bigint, $2::text FROM d", ""},
		// An old key sent with the same ticket: both known.
		{"old row, same", identityRelation('f'), vals("1", "7", "a"), vals("1", "7", "b"), "--s", false, `UPDATE "public"."t" SET "v" = $1 WHERE`, `"ticket" =`},
		{"old row, new id", identityRelation('f'), vals("1", "7", "a"), vals("2", "7", "a"), "s-s", true, "DELETE FROM", ""},
		{"ticket toasted", r, nil, vals("1", "~", "x"), "--s", false, `SET "v" = $1 WHERE "id" = $2`, ""},
	} {
		ch := &change{rel: c.rel, kind: opUpdate, oldRow: c.old, newRow: c.new}
		row, replace := identitySet(ch)
		var set strings.Builder
		for _, v := range row {
			if v.toasted {
				set.WriteByte('-')
			} else {
				set.WriteByte('s')
			}
		}
		if set.String() != c.set || replace != c.replace {
			t.Errorf("%s: set %s replace %v, want %s %v", c.name, set.String(), replace, c.set, c.replace)
			continue
		}
		key, err := keyOf(c.rel, ch)
		if err != nil {
			t.Fatal(err)
		}
		sql := c.rel.plan.update(row, key)
		if replace {
			sql = c.rel.plan.replace(row, key)
		}
		if !strings.Contains(sql, c.sqlHas) || (c.sqlHasNot != "" && strings.Contains(sql, c.sqlHasNot)) {
			t.Errorf("%s: %s\nwant it to have %q and not %q", c.name, sql, c.sqlHas, c.sqlHasNot)
		}
		// The source's row must keep its new values: the change itself is
		// not touched.
		if ch.newRow[0].toasted && c.new[0].data != nil {
			t.Errorf("%s: the change's new row was modified", c.name)
		}
	}
	if got := r.plan.insert(3); !strings.Contains(got, `("id", "ticket", "v") OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3)`) {
		t.Errorf("insert: %s", got)
	}
}
