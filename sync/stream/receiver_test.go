package stream

import (
	"fmt"
	"testing"
)

// The protocol and options follow the source's version: 3 on 15, 4 and
// origin 'none' on 16+, no origin filter for a database that subscribes
// to another (its subscriptions' rows carry an origin and must stream).
func TestPluginOptionsByVersion(t *testing.T) {
	for _, c := range []struct {
		major      int
		subscribed bool
		want       string
	}{
		{15, false, `[proto_version '3' publication_names '"my ""pub"""' streaming 'true']`},
		{16, false, `[proto_version '4' publication_names '"my ""pub"""' streaming 'true' origin 'none']`},
		{18, false, `[proto_version '4' publication_names '"my ""pub"""' streaming 'true' origin 'none']`},
		{17, true, `[proto_version '4' publication_names '"my ""pub"""' streaming 'true']`},
	} {
		got := fmt.Sprint(pluginArgs(PluginOptions(`my "pub"`, c.major, c.subscribed)))
		if got != c.want {
			t.Errorf("PostgreSQL %d (subscribed %v): %s, want %s", c.major, c.subscribed, got, c.want)
		}
	}
}
