// Package clients is the client matrix: psql, pgx (simple, extended and
// cached-statement modes), pgjdbc, psycopg2 and node-postgres each connect to
// a real admin server whose views have rows from a real RESHARD and VERIFY,
// run every SHOW view and a command, and report the column names and types
// their driver sees. The test checks them against the columns the commands
// package declares, and the values against pgx's. Every driver logs in with
// SCRAM-SHA-256, without TLS and, to a server that requires it, with TLS.
package clients

import (
	"os"
	"testing"

	"github.com/reshard/reshard/tests/pgtest"
)

// cluster holds the PostgreSQL instances: the source and two shards.
var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m.Run, 3, pgtest.Options{}, &cluster))
}
