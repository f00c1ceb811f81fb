package verify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/job"
	"github.com/reshard/reshard/sync/slotsnap"
)

// Holder reaches the streams that feed the side VERIFY takes its snapshots
// on second (the destination shards, or after a cutover the old database):
// one stream per shard of the side they read from.
type Holder interface {
	// Hold calls take for the points (take creates the temporary slots),
	// makes the stream reading shard k of its source apply every
	// transaction whose commit record starts before points[k] (exactly
	// the transactions a snapshot exported at points[k] shows: a
	// consistent point is the end of a record, so a commit starting there
	// is not in the snapshot), apply nothing after them, and returns once
	// every stream holds so. release resumes them all and returns how long
	// the streams sat idle holding back changes they had received (the
	// hold's cost to them); it must be called once. An error of take is
	// returned as it is.
	//
	// When a stream has already applied a transaction that commits at or
	// after its point, Hold holds nothing and returns an error for which
	// errors.Is(err, ErrPassed) is true: VERIFY takes a new point (and
	// the holder may pause the streams while take runs, so that it does
	// not happen again).
	Hold(ctx context.Context, take func(context.Context) ([]pglogrepl.LSN, error)) (release func() time.Duration, err error)
}

// ErrPassed is what a Holder's error wraps when a stream has already
// applied past the point it was asked to hold at.
var ErrPassed = errors.New("the stream has already applied past the consistent point")

// point is where one VERIFY compares: the LSN of every shard of the side
// the streams read from (the leaders), and how long the streams were held
// while the other side's snapshots were taken.
type point struct {
	lsns []pglogrepl.LSN
	// hold is how long the streams were held: the time they stood at the
	// point while the snapshots were taken, or longer, the time one sat
	// idle holding back changes it had received (what the hold cost
	// them). take is how long the temporary slots took, reach how long
	// the streams then took to apply up to the point, snapshot how long
	// the followers' snapshots took while held.
	hold, take, reach, snapshot time.Duration
	held                        bool
	retries                     int
}

// holdTimeout bounds the wait for the streams to reach the point (they
// apply what they lag behind it first).
const holdTimeout = 5 * time.Minute

func (p point) String() string {
	parts := make([]string, len(p.lsns))
	for i, l := range p.lsns {
		parts[i] = l.String()
	}
	return strings.Join(parts, ",")
}

// maxPointTries bounds the new points taken when streams had passed.
const maxPointTries = 5

// takePoint puts every session of every server into one consistent point:
// each leader's sessions import the snapshot of a temporary logical slot
// created there (its consistent point is that shard's LSN), the streams are
// held at those LSNs while each follower's first session takes a REPEATABLE
// READ snapshot and exports it, and are released at once; the follower's
// other sessions then import that snapshot. Without a holder (no stream
// feeds the followers) the followers' snapshots are taken right after the
// leaders'.
func takePoint(ctx context.Context, cat *catalog.Catalog, leaders, followers []*server, holder Holder, log hclog.Logger) (point, error) {
	var p point
	for try := 1; ; try++ {
		var release func() time.Duration
		var started, taken, held time.Time
		var err error
		if holder == nil {
			if p.lsns, err = leaderSnapshots(ctx, cat, leaders); err != nil {
				return p, err
			}
		} else {
			var takeErr error
			started = time.Now()
			hctx, cancel := context.WithTimeout(ctx, holdTimeout)
			release, err = holder.Hold(hctx, func(ctx context.Context) ([]pglogrepl.LSN, error) {
				p.lsns, takeErr = leaderSnapshots(ctx, cat, leaders)
				taken = time.Now()
				return p.lsns, takeErr
			})
			cancel()
			held = time.Now()
			if takeErr != nil {
				if release != nil {
					release()
				}
				if rerr := rollbackAll(ctx, leaders); rerr != nil {
					log.Debug("end the snapshots", "error", rerr)
				}
				return p, takeErr
			}
			p.take, p.reach = taken.Sub(started), held.Sub(taken)
			if errors.Is(err, ErrPassed) && try < maxPointTries {
				log.Debug("a stream had passed the consistent point; taking a new one", "lsn", p.String(), "error", err)
				p.retries++
				if rerr := rollbackAll(ctx, leaders); rerr != nil {
					return p, rerr
				}
				continue
			}
			if err != nil {
				if rerr := rollbackAll(ctx, leaders); rerr != nil {
					log.Debug("end the snapshots", "error", rerr)
				}
				return p, job.Wrap("55000", err, "hold the streams at %s: %v", p, err).
					WithHint("the streams must reach the consistent point within %s: wait until SHOW REPLICATION_SLOTS shows little lag", holdTimeout)
			}
			p.held = true
		}
		ids, err := exportSnapshots(ctx, followers)
		if release != nil {
			// The streams stood at the point while the snapshots were
			// taken; one may have sat idle longer (waiting for the others
			// to reach theirs, or paused while the point was taken).
			p.snapshot = time.Since(held)
			p.hold = max(release(), p.snapshot)
		}
		if err != nil {
			return p, err
		}
		g, gctx := errgroup.WithContext(ctx)
		for i, s := range followers {
			g.Go(func() error { return importSnapshot(gctx, s, s.all[1:], ids[i]) })
		}
		return p, g.Wait()
	}
}

// leaderSnapshots creates a temporary slot exporting its snapshot on every
// leader at once, imports the snapshot into all the leader's sessions and
// drops the slot (by closing its connection): the LSN of each is returned.
func leaderSnapshots(ctx context.Context, cat *catalog.Catalog, leaders []*server) ([]pglogrepl.LSN, error) {
	lsns := make([]pglogrepl.LSN, len(leaders))
	g, gctx := errgroup.WithContext(ctx)
	for i, s := range leaders {
		g.Go(func() error {
			dsn, err := cat.ConnString(s.node, map[string]string{"replication": "database", "application_name": "reshard verify"})
			if err != nil {
				return err
			}
			rc, err := pgconn.Connect(gctx, dsn)
			if err != nil {
				return job.Wrap("08006", err, "%s: %v", job.Unreachable(s.node), err)
			}
			defer rc.Close(context.Background())
			name := slotName()
			// Guarded: see package slotsnap for the rows PostgreSQL would
			// otherwise let a concurrent reader prune from the snapshot.
			res, err := slotsnap.Create(gctx, rc, dsn, name, true)
			if err != nil {
				return job.Wrap(codeOf(err, "XX000"), err, "create the temporary slot %s on %s: %v", name, s, err).
					WithHint("VERIFY needs wal_level = logical and a free replication slot and WAL sender on every shard it takes its consistent point on")
			}
			if lsns[i], err = pglogrepl.ParseLSN(res.ConsistentPoint); err != nil {
				return fmt.Errorf("consistent point %q of %s: %w", res.ConsistentPoint, s, err)
			}
			// The snapshot can be imported only until the replication
			// connection runs its next command: every session now.
			return importSnapshot(gctx, s, s.all, res.SnapshotName)
		})
	}
	return lsns, g.Wait()
}

// exportSnapshots starts a REPEATABLE READ transaction on every follower's
// first session at once and exports its snapshot, in one round trip each.
func exportSnapshots(ctx context.Context, followers []*server) ([]string, error) {
	ids := make([]string, len(followers))
	g, gctx := errgroup.WithContext(ctx)
	for i, s := range followers {
		g.Go(func() error {
			res, err := s.all[0].PgConn().Exec(gctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot()").ReadAll()
			if err == nil && (len(res) != 2 || len(res[1].Rows) != 1) {
				err = errors.New("no snapshot exported")
			}
			if err != nil {
				return job.Wrap(codeOf(err, "XX000"), err, "take the snapshot of %s: %v", s, err)
			}
			ids[i] = string(res[1].Rows[0][0])
			return nil
		})
	}
	return ids, g.Wait()
}

// importSnapshot starts a REPEATABLE READ transaction in snapshot id on
// each of conns (sessions of s), all at once.
func importSnapshot(ctx context.Context, s *server, conns []*pgx.Conn, id string) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range conns {
		g.Go(func() error {
			_, err := c.PgConn().Exec(gctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT "+quote(id)).ReadAll()
			if err != nil {
				return job.Wrap(codeOf(err, "XX000"), err, "import the snapshot on %s: %v", s, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// rollbackAll ends the transaction of every session of servers.
func rollbackAll(ctx context.Context, servers []*server) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range servers {
		g.Go(func() error {
			return s.each(gctx, func(ctx context.Context, c *pgx.Conn) error {
				_, err := c.Exec(ctx, "ROLLBACK")
				return err
			})
		})
	}
	return g.Wait()
}

// codeOf is err's SQLSTATE, or fallback when it carries none.
func codeOf(err error, fallback string) string {
	if c := job.Code(err); c != "" {
		return c
	}
	return fallback
}

// slotName is a fresh temporary slot name.
func slotName() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "reshard_verify_" + hex.EncodeToString(b)
}
