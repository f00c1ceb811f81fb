package fault

import (
	"fmt"
	"math/rand"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// seeds fix the random kill moments: each run of the suite kills at the
// same points. RESHARD_FAULT_SEEDS (comma-separated) replays others.
var seeds = seedList()

func seedList() []int64 {
	s := os.Getenv("RESHARD_FAULT_SEEDS")
	if s == "" {
		return []int64{1, 2, 3, 4, 5}
	}
	var out []int64
	for _, f := range strings.Split(s, ",") {
		var n int64
		fmt.Sscan(strings.TrimSpace(f), &n)
		out = append(out, n)
	}
	return out
}

// bigOrders is the size of the copy scenarios' source: large enough that a
// copy takes seconds on a small machine, so faults land in the middle.
const bigOrders = 120_000

var (
	bigOnce sync.Once
	bigSrc  db
)

// bigSource is the source shared by the copy and POST scenarios (they only
// read it).
func bigSource(t *testing.T) db {
	bigOnce.Do(func() { bigSrc = newSource(t, "fault_big", bigOrders) })
	if bigSrc.inst == nil {
		t.Fatal("big source not created")
	}
	return bigSrc
}

// TestKillDuringCopy: reshard is killed with SIGKILL at a seeded moment of
// the copy (when a seeded fraction of the rows has reached the shards);
// the same command run again finishes the copy exactly.
func TestKillDuringCopy(t *testing.T) {
	src := bigSource(t)
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			r := rand.New(rand.NewSource(seed))
			e := newEnv(t, fmt.Sprintf("kcopy%d", seed), src, "")
			e.schemaPre(t)
			e.slowCopy(t)
			total := e.sourceRows(t)
			target := int64(float64(total) * (0.05 + 0.85*r.Float64()))
			p := e.start(t, e.dataSync(true))
			waitFor(t, 3*time.Minute, fmt.Sprintf("%d of %d rows copied", target, total), func() bool {
				if done, err := p.Exited(); done {
					t.Fatalf("copy ended (%v) before the kill:\n%s", err, lastLines(p.Output(), 20))
				}
				return e.copiedRows(t) >= target
			})
			inject(t, "SIGKILL of reshard", p.Kill)
			copied := e.copiedRows(t)
			if copied >= total {
				t.Fatalf("the kill came after the copy (%d of %d rows on the shards)", copied, total)
			}
			hit(t, killed(p), "reshard killed with %d of %d rows on the shards (target %d)", copied, total, target)
			p.Kill()
			restarts.Add(1)
			out := e.run(t, e.dataSync(true))
			if !strings.Contains(out, e.slot) {
				t.Fatalf("the second run did not report the copy:\n%s", out)
			}
			e.verify(t)
		})
	}
}

// postIndexesValid counts, over both shards, the POST indexes that exist
// and are valid.
func (e *env) postIndexesValid(t *testing.T) int {
	t.Helper()
	n := 0
	for _, d := range e.dst {
		var c int
		fmt.Sscan(d.one(t, `SELECT count(*)::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = ANY($1) AND i.indisvalid AND i.indisready`, postIndexes), &c)
		n += c
	}
	return n
}

func (e *env) checkPostIndexes(t *testing.T) {
	t.Helper()
	if n := e.postIndexesValid(t); n != len(postIndexes)*len(e.dst) {
		t.Fatalf("%d of %d POST indexes valid on the shards", n, len(postIndexes)*len(e.dst))
	}
	for _, idx := range postIndexes {
		want := e.src.one(t, `SELECT indexdef FROM pg_indexes WHERE indexname = $1`, idx)
		for k, d := range e.dst {
			if got := d.one(t, `SELECT indexdef FROM pg_indexes WHERE indexname = $1`, idx); got != want {
				t.Fatalf("shard %d: index %s is %q, source %q", k, idx, got, want)
			}
		}
	}
}

// TestKillDuringPost: reshard is killed with SIGKILL while SCHEMA_SYNC POST
// builds indexes (at a seeded index build); running POST again leaves every
// index valid and equal to the source's, and the data exact.
func TestKillDuringPost(t *testing.T) {
	src := bigSource(t)
	e := newEnv(t, "kpost", src, "")
	e.schemaPre(t)
	e.run(t, e.dataSync(true))
	post := e.args("schema-sync", "--data-sync-complete")
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			r := rand.New(rand.NewSource(seed))
			for _, d := range e.dst {
				d.exec(t, "DROP INDEX IF EXISTS "+strings.Join(postIndexes, ", "))
			}
			// Kill during an index build once k indexes are done.
			k := r.Intn(len(postIndexes))
			p := e.start(t, post)
			waitFor(t, 3*time.Minute, fmt.Sprintf("an index build of POST after %d indexes", k), func() bool {
				if done, err := p.Exited(); done {
					t.Fatalf("POST ended (%v) before the kill:\n%s", err, lastLines(p.Output(), 20))
				}
				building := false
				for _, d := range e.dst {
					if d.one(t, `SELECT count(*)::text FROM pg_stat_progress_create_index WHERE datname = current_database()`) != "0" {
						building = true
					}
				}
				return building && e.postIndexesValid(t) >= k
			})
			inject(t, "SIGKILL of reshard", p.Kill)
			valid := e.postIndexesValid(t)
			if valid >= len(postIndexes)*len(e.dst) {
				t.Fatalf("the kill came after POST finished")
			}
			hit(t, killed(p), "reshard killed during an index build: %d of %d indexes valid", valid, len(postIndexes)*len(e.dst))
			p.Kill()
			restarts.Add(1)
			e.run(t, post)
			e.checkPostIndexes(t)
		})
	}
	e.verify(t)
}

// TestKillWhileStreaming: under a write load, reshard is killed with
// SIGKILL five times at seeded moments while it streams (after a seeded
// number of source writes), and the same command is run again each time;
// once the load stops, the shards equal the source.
func TestKillWhileStreaming(t *testing.T) {
	src := newSource(t, "fault_kstream", 20_000)
	e := newEnv(t, "kstream", src, "")
	e.schemaPre(t)
	w := startWriter(t, src, 1)
	start := w.counts()
	p := e.start(t, e.dataSync(false))
	waitStreaming(t, p, 3*time.Minute)
	for _, seed := range seeds {
		r := rand.New(rand.NewSource(seed))
		before := w.counts()
		w.waitWrites(t, before, int64(100+r.Intn(1500)), time.Minute)
		if done, err := p.Exited(); done {
			t.Fatalf("reshard exited (%v) while streaming:\n%s", err, lastLines(p.Output(), 30))
		}
		inject(t, "SIGKILL of reshard", p.Kill)
		hit(t, killed(p), "seed %d: reshard killed while streaming, %s since the previous start", seed, w.counts().minus(before))
		restarts.Add(1)
		p = e.start(t, e.dataSync(false))
		waitStreaming(t, p, 3*time.Minute)
	}
	w.waitWrites(t, w.counts(), 300, time.Minute)
	w.halt(t)
	checkWrites(t, "the write load of the scenario", w.counts().minus(start))
	e.waitSame(t, 3*time.Minute)
}

// slowCopy makes the shards take a millisecond per 10 orders rows written
// (a trigger that fires under session_replication_role = replica too), so
// that the copy lasts seconds however fast the machine is and a kill at a
// seeded fraction of it lands in the middle.
func (e *env) slowCopy(t *testing.T) {
	t.Helper()
	for _, d := range e.dst {
		d.exec(t, `CREATE FUNCTION slow_copy() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				IF NEW.id % 10 = 0 THEN PERFORM pg_sleep(0.001); END IF;
				RETURN NEW;
			END $$;
			CREATE TRIGGER slow_copy BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION slow_copy();
			ALTER TABLE orders ENABLE ALWAYS TRIGGER slow_copy;`)
	}
}
