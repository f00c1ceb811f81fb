package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/reshard/reshard/tests/pgtest"
)

// WriteConfig writes config as pgdog.toml into dir, with a users.toml that
// makes pgtest's user the schema_admin of the clusters "src" and "dst",
// and returns both paths.
func WriteConfig(t testing.TB, dir, config string) (cfgPath, usersPath string) {
	t.Helper()
	users := fmt.Sprintf("[[users]]\nname = %q\ndatabase = \"src\"\npassword = %q\nschema_admin = true\n\n[[users]]\nname = %q\ndatabase = \"dst\"\npassword = %q\nschema_admin = true\n",
		pgtest.User, pgtest.Password, pgtest.User, pgtest.Password)
	cfgPath, usersPath = filepath.Join(dir, "pgdog.toml"), filepath.Join(dir, "users.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(usersPath, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, usersPath
}
