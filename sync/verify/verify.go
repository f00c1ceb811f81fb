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

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/progress"
)

// Request is one verification.
type Request struct {
	Catalog *catalog.Catalog
	// Source and Destination are cluster names; Publication is on the source.
	Source, Destination, Publication string
	Task                             string
	Registry                         *progress.Registry
	Logger                           hclog.Logger
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
func Run(ctx context.Context, req Request) (*Result, error) {
	log := req.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log = log.Named("verify")
	if req.Parallel <= 0 {
		req.Parallel = 4
	}
	if req.DetailLimit == 0 {
		req.DetailLimit = 2_000_000
	}
	if req.Registry == nil {
		req.Registry = progress.NewRegistry()
	}
	src, ok := req.Catalog.Cluster(req.Source)
	if !ok {
		return nil, fmt.Errorf("database %q is not configured", req.Source)
	}
	dst, ok := req.Catalog.Cluster(req.Destination)
	if !ok {
		return nil, fmt.Errorf("database %q is not configured", req.Destination)
	}
	var srcDSN, dstDSN []string
	for _, sh := range src.Shards {
		d, err := req.Catalog.ConnString(sh.Primary, nil)
		if err != nil {
			return nil, err
		}
		srcDSN = append(srcDSN, d)
	}
	for _, sh := range dst.Shards {
		d, err := req.Catalog.ConnString(sh.Primary, nil)
		if err != nil {
			return nil, err
		}
		dstDSN = append(dstDSN, d)
	}
	conn, err := pgx.Connect(ctx, srcDSN[0])
	if err != nil {
		return nil, fmt.Errorf("connect to source: %w", err)
	}
	tables, err := copier.Tables(ctx, conn, req.Publication, dst)
	conn.Close(context.Background())
	if err != nil {
		return nil, err
	}
	for _, t := range tables {
		req.Registry.SetVerify(progress.VerifyRow{Task: req.Task, Schema: t.Schema, Table: t.Name, Status: "running"})
	}
	res := &Result{Tables: len(tables)}
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, req.Parallel)
	var wg sync.WaitGroup
	for _, t := range tables {
		wg.Add(1)
		go func(t *copier.Table) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			row, err := verifyTable(ctx, &req, log, t, srcDSN, dstDSN)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("verify %s: %w", t, err)
				}
				row = progress.VerifyRow{Task: req.Task, Schema: t.Schema, Table: t.Name, Status: "error: " + err.Error()}
			}
			if row.Status != "match" {
				res.Mismatched++
			}
			req.Registry.SetVerify(row)
		}(t)
	}
	wg.Wait()
	return res, firstErr
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
	err = conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), coalesce(sum(hashtext(x::text)::numeric), 0)::text FROM ONLY %s x`, t.Qualified())).Scan(&s.count, &s.checksum)
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
	return fmt.Sprintf(`SELECT count(*) FROM ONLY %s WHERE NOT satisfies_hash_partition('pg_temp.reshard_verify_hp_%s'::regclass, %d, %d, %s::%s)`,
		t.Qualified(), typ, shards, shard, pgx.Identifier{t.ShardColumn}.Sanitize(), typ)
}

func verifyTable(ctx context.Context, req *Request, log hclog.Logger, t *copier.Table, srcDSN, dstDSN []string) (progress.VerifyRow, error) {
	row := progress.VerifyRow{Task: req.Task, Schema: t.Schema, Table: t.Name}
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
		rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT %s, hashtext(x::text) FROM ONLY %s x`, keyExpr, t.Qualified()))
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
