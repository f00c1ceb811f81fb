package cutover

import (
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reshard/reshard/catalog"
)

// budget is the time a cutover (or rollback) may spend waiting: for the
// lag to fall under cutover_traffic_stop_threshold, for the writers in
// progress to let go of the tables, for the stream to drain under the
// locks. What happens once it is spent is cutover_timeout_action's:
// "abort" (force false) gives up and unblocks; "cutover" (force true)
// goes on, never at the cost of a change: writes are blocked anyway, the
// application sessions holding the tables are ended, and the drain waits
// for every change however long it takes (STOP_TASK ends the wait and
// unblocks).
type budget struct {
	deadline time.Time
	timeout  time.Duration
	force    bool
	log      hclog.Logger
}

// newBudget starts the budget of g's cutover_timeout now.
func newBudget(g catalog.General, log hclog.Logger) budget {
	timeout := time.Duration(g.CutoverTimeout) * time.Millisecond
	return budget{
		deadline: time.Now().Add(timeout),
		timeout:  timeout,
		force:    g.CutoverTimeoutAction == catalog.CutoverTimeoutCutover,
		log:      log,
	}
}

// spent tells whether cutover_timeout has passed.
func (b budget) spent() bool { return time.Now().After(b.deadline) }
