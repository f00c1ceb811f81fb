package migrate

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/copier"
	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/sync/task"
)

// WatchInterval is how often Watch looks at every server's slots.
const WatchInterval = 5 * time.Second

// Watch looks at the replication slots of every primary of the catalog
// every interval until ctx ends, and keeps the list of reshard's slots that
// are left inactive (holding WAL that nothing reads) in the registry (SHOW
// REPLICATION_SLOTS, SHOW TASKS, metrics), logging each when it is first
// seen. A slot is reshard's when a migration this process knows created it,
// or its name starts with reshard_. A slot of a running migration counts
// only while the migration streams from it, and only once it was inactive
// at two looks in a row (a stream reconnecting is inactive for a moment).
func (e *Engine) Watch(ctx context.Context, interval time.Duration) {
	prev := map[string]bool{}
	for {
		prev = e.watchOnce(ctx, prev)
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// slotOwner is a migration's claim on a slot name.
type slotOwner struct {
	task      string
	running   bool
	streaming bool
}

func (e *Engine) owners() map[string]slotOwner {
	out := map[string]slotOwner{}
	e.mu.Lock()
	ms := make([]*migration, 0, len(e.migrations))
	for _, m := range e.migrations {
		ms = append(ms, m)
	}
	e.mu.Unlock()
	for _, m := range ms {
		st := m.state()
		src, ok1 := e.cat.Cluster(st.Source)
		dst, ok2 := e.cat.Cluster(st.Destination)
		if !ok1 || !ok2 {
			continue
		}
		o := slotOwner{task: st.ID}
		if t, ok := e.tasks.Get(st.ID); ok && t.Running() {
			o.running = true
			o.streaming = t.Row().State == task.StateStreaming || t.Row().State == task.StateReverseStreaming
		}
		for _, fb := range st.forwardBases() {
			for _, n := range copier.SlotNames(fb, len(src.Shards)) {
				out[n] = o
			}
			for _, n := range copier.SlotNames(reverseBase(fb), len(dst.Shards)) {
				out[n] = o
			}
		}
	}
	return out
}

// watchOnce looks once; prev are the slots inactive at the last look
// (by node and name), and it returns this look's.
func (e *Engine) watchOnce(ctx context.Context, prev map[string]bool) map[string]bool {
	owners := e.owners()
	seen := map[string]bool{}
	var list []progress.InactiveSlot
	done := map[string]bool{}
	for _, cl := range e.cat.Clusters() {
		for _, sh := range cl.Shards {
			n := sh.Primary
			id := n.Addr() + "/" + n.Database
			if done[id] {
				continue
			}
			done[id] = true
			slots, err := inactiveSlots(ctx, e.cat, n)
			if err != nil {
				e.log.Debug("could not look at the slots", "node", n.String(), "error", err)
				continue
			}
			for _, s := range slots {
				o, claimed := owners[s.Name]
				if !claimed && !strings.HasPrefix(s.Name, "reshard_") {
					continue
				}
				key := id + "/" + s.Name
				seen[key] = true
				if claimed && o.running && (!o.streaming || !prev[key]) {
					continue
				}
				s.Task = o.task
				list = append(list, s)
			}
		}
	}
	e.mu.Lock()
	was := map[string]bool{}
	for _, s := range e.inactive {
		was[fmt.Sprintf("%s:%d/%s/%s", s.Host, s.Port, s.Database, s.Name)] = true
	}
	e.inactive = list
	e.mu.Unlock()
	for _, s := range list {
		if !was[fmt.Sprintf("%s:%d/%s/%s", s.Host, s.Port, s.Database, s.Name)] {
			e.log.Warn("a replication slot of reshard's is inactive: it retains WAL until a stream uses it again or it is dropped (ABORT_TASK removes a migration's slots)",
				"slot", s.Name, "host", s.Host, "port", s.Port, "database", s.Database, "task", s.Task, "retained_wal_bytes", s.RetainedBytes)
		}
	}
	e.reg.SetInactiveSlots(list)
	return seen
}

// inactiveSlots lists the logical slots of node's database that no
// session uses.
func inactiveSlots(ctx context.Context, cat *catalog.Catalog, n *catalog.Node) ([]progress.InactiveSlot, error) {
	dsn, err := cat.ConnString(n, nil)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, cat.NetworkTimeout())
	defer cancel()
	conn, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(cctx, `SELECT slot_name, COALESCE((pg_current_wal_lsn() - restart_lsn)::bigint, 0),
		COALESCE((pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, 0), COALESCE(confirmed_flush_lsn::text, '')
		FROM pg_replication_slots WHERE database = current_database() AND slot_type = 'logical' AND NOT active AND NOT temporary
		ORDER BY slot_name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []progress.InactiveSlot
	for rows.Next() {
		s := progress.InactiveSlot{Host: n.Host, Port: n.Port, Database: n.Database}
		if err := rows.Scan(&s.Name, &s.RetainedBytes, &s.LagBytes, &s.Confirmed); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// InactiveSlots are the slots of task id that the last look found
// inactive.
func (e *Engine) InactiveSlots(id string) []progress.InactiveSlot {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []progress.InactiveSlot
	for _, s := range e.inactive {
		if s.Task == id {
			out = append(out, s)
		}
	}
	return out
}
