// Package tests holds reshard's integration tests. They run against real
// PostgreSQL 15 instances started by the pgtest harness, shared by every test
// in the package.
package tests

import (
	"os"
	"testing"

	"github.com/reshard/reshard/tests/pgtest"
)

// cluster holds the PostgreSQL instances shared by the package's tests.
var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m.Run, 3, pgtest.Options{}, &cluster))
}
