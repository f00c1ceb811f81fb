package copier

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/sharding"
)

// serverVersion is one server taking part in a copy and its
// server_version_num.
type serverVersion struct {
	where   string // "source shard 0 (127.0.0.1:5432)"
	version int
}

// readVersion reads a server's server_version_num.
func readVersion(ctx context.Context, conn *pgx.Conn, where string) (serverVersion, error) {
	var v int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&v); err != nil {
		return serverVersion{}, fmt.Errorf("server version of %s: %w", where, err)
	}
	return serverVersion{where: where, version: v}, nil
}

// majorName renders a server_version_num's major version ("PostgreSQL 17").
func majorName(v int) string { return fmt.Sprintf("PostgreSQL %d", v/10000) }

// chooseFormat decides the COPY format from the configured one and the
// servers involved (every source node read and every destination shard).
// Binary COPY is each type's send/receive representation, which PostgreSQL
// keeps only within a major version ("less portable across PostgreSQL
// versions", as its documentation says of binary COPY and of binary
// logical replication): binary is used when every server runs the same
// major version, else text, and the reason says which versions met.
func chooseFormat(configured sharding.Format, servers []serverVersion) (sharding.Format, string) {
	if configured == sharding.FormatText {
		return sharding.FormatText, "resharding_copy_format = text"
	}
	majors := map[int][]string{}
	for _, s := range servers {
		majors[s.version/10000] = append(majors[s.version/10000], s.where)
	}
	if len(majors) <= 1 {
		for m := range majors {
			return sharding.FormatBinary, fmt.Sprintf("every server runs PostgreSQL %d", m)
		}
		return sharding.FormatBinary, "resharding_copy_format = binary"
	}
	keys := make([]int, 0, len(majors))
	for m := range majors {
		keys = append(keys, m)
	}
	sort.Ints(keys)
	parts := make([]string, len(keys))
	for i, m := range keys {
		parts[i] = fmt.Sprintf("PostgreSQL %d on %s", m, strings.Join(majors[m], ", "))
	}
	return sharding.FormatText, "binary COPY is only compatible within one major version, and the copy involves " + strings.Join(parts, "; ") + ": text instead"
}
