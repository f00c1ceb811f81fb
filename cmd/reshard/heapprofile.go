package main

import (
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"time"
)

// watchHeap writes a heap profile to path each time the heap's live and
// not yet swept objects reach a new high (10% past the last one written),
// so that the file holds the profile of the peak when the process ends
// (its in-use figures are those of the last collection before it)
// (RESHARD_HEAPPROFILE, used by bench-stream-memory to show where the
// memory goes). It returns a function that stops the watch.
func watchHeap(path string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var high uint64
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > high+high/10 {
				high = v
				if f, err := os.Create(path); err == nil {
					_ = pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}
