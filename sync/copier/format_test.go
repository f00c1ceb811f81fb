package copier

import (
	"strings"
	"testing"

	"github.com/reshard/reshard/sharding"
)

func TestChooseFormat(t *testing.T) {
	same := []serverVersion{{"source shard 0", 170010}, {"destination shard 0", 170004}, {"destination shard 1", 170010}}
	mixed := []serverVersion{{"source shard 0", 150018}, {"destination shard 0", 170010}, {"destination shard 1", 170010}}
	cases := []struct {
		configured sharding.Format
		servers    []serverVersion
		want       sharding.Format
		reason     []string
	}{
		{sharding.FormatBinary, same, sharding.FormatBinary, []string{"every server runs PostgreSQL 17"}},
		{sharding.FormatText, same, sharding.FormatText, []string{"resharding_copy_format = text"}},
		{sharding.FormatBinary, mixed, sharding.FormatText, []string{"PostgreSQL 15 on source shard 0", "PostgreSQL 17 on destination shard 0, destination shard 1", "text instead"}},
		{sharding.FormatText, mixed, sharding.FormatText, []string{"resharding_copy_format = text"}},
	}
	for _, c := range cases {
		got, reason := chooseFormat(c.configured, c.servers)
		if got != c.want {
			t.Errorf("chooseFormat(%s, %v) = %s (%s), want %s", c.configured, c.servers, got, reason, c.want)
		}
		for _, r := range c.reason {
			if !strings.Contains(reason, r) {
				t.Errorf("chooseFormat(%s, %v) reason %q lacks %q", c.configured, c.servers, reason, r)
			}
		}
	}
}
