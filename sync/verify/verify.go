// Package verify is the proof stage of resharding: it compares every table
// of the publication between the source and the destination shards — row
// counts, an order-independent checksum of every row computed inside
// PostgreSQL, and that every row sits on the shard the sharding function
// gives it — and narrows a mismatch down to the differing primary keys.
package verify

import (
	"context"
	"fmt"
	"math/big"
	"sort"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/progress"
)

// Request is one verification of a job's publication.
type Request struct {
	// Parallel bounds tables verified at once (default 4).
	Parallel int
	// DetailLimit bounds the rows fetched to narrow a mismatch down to
	// keys (default 2,000,000 per table).
	DetailLimit int64
}

// Result sums up a verification.
type Result struct {
	Tables, Mismatched int
}

// maxLoggedKeys caps the keys logged per table and kind.
const maxLoggedKeys = 20

// Run verifies every table. It compares the data as it is now: run it once
// the stream has caught up and writes to the source are paused, or expect
// differences that are only lag.
func Run(ctx context.Context, j *job.Job, req Request) (*Result, error) {
	log := j.Logger("verify")
	if req.Parallel <= 0 {
		req.Parallel = 4
	}
	if req.DetailLimit == 0 {
		req.DetailLimit = 2_000_000
	}
	srcDSN, dstDSN := j.SourceDSN, j.DestinationDSN
	conn, err := j.ConnectSource(ctx, 0)
	if err != nil {
		return nil, err
	}
	tables, err := copier.Tables(ctx, conn, j.Publication, j.Destination)
	conn.Close(context.Background())
	if err != nil {
		return nil, err
	}
	for _, t := range tables {
		j.Registry.SetVerify(progress.VerifyRow{Task: j.Task, Schema: t.Schema, Table: t.Name, Status: "running"})
	}
	res := &Result{Tables: len(tables)}
	var mu sync.Mutex
	// Every table is verified even when one fails; the first failure is
	// returned.
	var g errgroup.Group
	g.SetLimit(req.Parallel)
	for _, t := range tables {
		g.Go(func() error {
			row, err := verifyTable(ctx, j.Task, &req, log, t, srcDSN, dstDSN)
			if err != nil {
				row = progress.VerifyRow{Task: j.Task, Schema: t.Schema, Table: t.Name, Status: "error: " + err.Error()}
				err = fmt.Errorf("verify %s: %w", t, err)
			}
			mu.Lock()
			if row.Status != "match" {
				res.Mismatched++
			}
			mu.Unlock()
			j.Registry.SetVerify(row)
			return err
		})
	}
	return res, g.Wait()
}

// sums is a node's count and checksum of a table.
type sums struct {
	count     int64
	checksum  string
	misplaced int64
}

func tableSums(ctx context.Context, dsn string, t *copier.Table, placement string) (sums, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return sums{}, err
	}
	defer conn.Close(context.Background())
	var s sums
	err = conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), coalesce(sum(hashtext(x::text)::numeric), 0)::text FROM %s x`, t.From())).Scan(&s.count, &s.checksum)
	if err != nil {
		return s, err
	}
	if placement != "" {
		if _, err := conn.Exec(ctx, placementParent(t)); err != nil {
			return s, err
		}
		if err := conn.QueryRow(ctx, placement).Scan(&s.misplaced); err != nil {
			return s, err
		}
	}
	return s, nil
}

// keyType is the type the sharding key is hashed as.
func keyType(t *copier.Table) string {
	switch t.Router.Function().DataType() {
	case sharding.Text, sharding.Varchar:
		return "text"
	case sharding.UUID:
		return "uuid"
	}
	return "bigint" // integers of every width hash as int8
}

// placementParent creates, in the session, a hash-partitioned parent of
// the key's type for satisfies_hash_partition.
func placementParent(t *copier.Table) string {
	typ := keyType(t)
	return fmt.Sprintf(`CREATE TEMP TABLE IF NOT EXISTS reshard_verify_hp_%s (k %s) PARTITION BY HASH (k)`, typ, typ)
}

func placementQuery(t *copier.Table, shards, shard int) string {
	typ := keyType(t)
	return fmt.Sprintf(`SELECT count(*) FROM %s WHERE NOT satisfies_hash_partition('pg_temp.reshard_verify_hp_%s'::regclass, %d, %d, %s::%s)`,
		t.From(), typ, shards, shard, pgx.Identifier{t.ShardColumn}.Sanitize(), typ)
}

func verifyTable(ctx context.Context, task string, req *Request, log hclog.Logger, t *copier.Table, srcDSN, dstDSN []string) (progress.VerifyRow, error) {
	row := progress.VerifyRow{Task: task, Schema: t.Schema, Table: t.Name}
	srcShards := srcDSN
	if t.Omni {
		srcShards = srcDSN[:1] // omni tables are the same on every source shard
	}
	var src sums
	srcTotal := new(big.Int)
	for _, d := range srcShards {
		s, err := tableSums(ctx, d, t, "")
		if err != nil {
			return row, err
		}
		src.count += s.count
		srcTotal.Add(srcTotal, bigOf(s.checksum))
	}
	row.SourceRows = src.count
	match := true
	dstTotal := new(big.Int)
	for k, d := range dstDSN {
		placement := ""
		if !t.Omni && !t.Mapped {
			placement = placementQuery(t, len(dstDSN), k)
		}
		s, err := tableSums(ctx, d, t, placement)
		if err != nil {
			return row, err
		}
		// An omni table's destination_rows is what each shard holds (the
		// fewest, if they differ); a sharded table's, all shards together.
		if t.Omni {
			if k == 0 || s.count < row.DestinationRows {
				row.DestinationRows = s.count
			}
		} else {
			row.DestinationRows += s.count
		}
		row.Misplaced += s.misplaced
		f := bigOf(s.checksum)
		if t.Omni {
			if s.count != src.count || f.Cmp(srcTotal) != 0 {
				match = false
			}
		} else {
			dstTotal.Add(dstTotal, f)
		}
	}
	if !t.Omni && (row.DestinationRows != src.count || dstTotal.Cmp(srcTotal) != 0) {
		match = false
	}
	if row.Misplaced > 0 {
		match = false
	}
	if match {
		row.Status = "match"
		return row, nil
	}
	row.Status = "mismatch"
	if len(t.PK) == 0 {
		log.Warn("table differs; without a primary key the differing rows cannot be named", "table", t.String())
		return row, nil
	}
	if src.count > req.DetailLimit || row.DestinationRows > req.DetailLimit {
		log.Warn("table differs; too large to list the differing keys", "table", t.String(), "source_rows", src.count)
		return row, nil
	}
	return narrow(ctx, log, t, srcShards, dstDSN, row)
}

// narrow fetches every row's key and hash and names the differing keys.
func narrow(ctx context.Context, log hclog.Logger, t *copier.Table, srcDSN, dstDSN []string, row progress.VerifyRow) (progress.VerifyRow, error) {
	keyExpr := ""
	for i, c := range t.PK {
		if i > 0 {
			keyExpr += " || ',' || "
		}
		keyExpr += pgx.Identifier{c}.Sanitize() + "::text"
	}
	fetch := func(dsn string, into map[string]int32) error {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT %s, hashtext(x::text) FROM %s x`, keyExpr, t.From()))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k string
			var h int32
			if err := rows.Scan(&k, &h); err != nil {
				return err
			}
			into[k] = h
		}
		return rows.Err()
	}
	src := map[string]int32{}
	for _, d := range srcDSN {
		if err := fetch(d, src); err != nil {
			return row, err
		}
	}
	var missing, extra, different []string
	if t.Omni {
		for _, d := range dstDSN {
			dst := map[string]int32{}
			if err := fetch(d, dst); err != nil {
				return row, err
			}
			m, e, df := compare(src, dst)
			missing, extra, different = append(missing, m...), append(extra, e...), append(different, df...)
		}
	} else {
		dst := map[string]int32{}
		for _, d := range dstDSN {
			if err := fetch(d, dst); err != nil {
				return row, err
			}
		}
		missing, extra, different = compare(src, dst)
	}
	row.Missing, row.Extra, row.Different = int64(len(missing)), int64(len(extra)), int64(len(different))
	for _, kind := range []struct {
		name string
		keys []string
	}{{"missing", missing}, {"extra", extra}, {"different", different}} {
		if len(kind.keys) == 0 {
			continue
		}
		sort.Strings(kind.keys)
		shown := kind.keys
		if len(shown) > maxLoggedKeys {
			shown = shown[:maxLoggedKeys]
		}
		log.Warn("rows differ", "table", t.String(), "kind", kind.name, "count", len(kind.keys), "keys", shown)
	}
	return row, nil
}

// bigOf parses an integer sum as PostgreSQL prints it.
func bigOf(s string) *big.Int {
	v, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return new(big.Int)
	}
	return v
}

func compare(src, dst map[string]int32) (missing, extra, different []string) {
	for k, h := range src {
		d, ok := dst[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case d != h:
			different = append(different, k)
		}
	}
	for k := range dst {
		if _, ok := src[k]; !ok {
			extra = append(extra, k)
		}
	}
	return
}
