package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/tests/pgtest"
	"github.com/reshard/reshard/tests/testkit"
)

// shardNode is one destination shard of a benchmark: an instance and a
// database on it.
type shardNode struct {
	inst *pgtest.Instance
	db   string
}

// writeConfig writes pgdog.toml and users.toml into dir for a source
// cluster "src" (database srcDB on src) and a destination "dst" made of the
// shards, sharded by column when it is not empty. It returns both paths.
func writeConfig(b *testing.B, dir string, port int, src *pgtest.Instance, srcDB string, shards []shardNode, column, general string) (string, string) {
	b.Helper()
	cfg := fmt.Sprintf("[general]\nport = %d\n%s\n[admin]\npassword = \"x\"\n[[databases]]\nname = \"src\"\nhost = \"127.0.0.1\"\nport = %d\ndatabase_name = %q\n",
		port, general, src.Port, srcDB)
	for k, s := range shards {
		cfg += fmt.Sprintf("[[databases]]\nname = \"dst\"\nhost = \"127.0.0.1\"\nport = %d\ndatabase_name = %q\nshard = %d\n", s.inst.Port, s.db, k)
	}
	if column != "" {
		cfg += fmt.Sprintf("[[sharded_tables]]\ndatabase = \"dst\"\ncolumn = %q\n", column)
	}
	return testkit.WriteConfig(b, dir, cfg)
}

// waitSubscriptionSynced waits until every table of the subscriptions in
// conn's database has finished its initial copy.
func waitSubscriptionSynced(b *testing.B, conn *pgx.Conn) {
	b.Helper()
	for {
		var pending int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_subscription_rel WHERE srsubstate NOT IN ('r', 's')`).Scan(&pending); err != nil {
			b.Fatal(err)
		}
		if pending == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
