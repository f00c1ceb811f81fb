package main

import (
	"os"
	"runtime/debug"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/stream"
)

// memoryHeadroom is what a reshard process may hold beyond
// resharding_stream_memory: the transactions being routed and applied,
// the connections' buffers, the runtime and the binary's own pages. The
// process's peak RSS stays within the setting plus 64 MB
// (bench-stream-memory): the other 24 MB are for what the limit does not
// count (the binary's pages) and the lag before freed memory is returned.
const memoryHeadroom = 40 << 20

// setMemoryLimit sets the Go runtime's soft memory limit from cat's
// resharding_stream_memory (plus memoryHeadroom), so that the collector
// runs before the heap outgrows it instead of letting it double (GOGC)
// past the changes the stream holds. GOMEMLIMIT in the environment, when
// set, is kept instead.
func setMemoryLimit(cat *catalog.Catalog) {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return
	}
	limit := cat.Config.General.ReshardingStreamMemory
	if limit == 0 {
		limit = stream.DefaultStreamMemory
	}
	debug.SetMemoryLimit(limit + memoryHeadroom)
}
