package testkit

import (
	"bytes"
	"sync"
	"time"
)

// Buffer is a bytes.Buffer that a process's output goroutines (or a
// logger) write while a test reads it. A test can wait for what is
// written (WaitFor) without polling: every write wakes the waiters.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	// changed is closed (and replaced) by every write.
	changed chan struct{}
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
	return n, err
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// snapshot is what was written so far and a channel closed by the next
// write.
func (b *Buffer) snapshot() (string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	return b.buf.String(), b.changed
}

// WaitFor waits until cond holds of everything written so far, checking it
// after each write, for at most timeout or until stop is closed (nil: never).
// It reports whether cond held.
func (b *Buffer) WaitFor(timeout time.Duration, stop <-chan struct{}, cond func(string) bool) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s, changed := b.snapshot()
		if cond(s) {
			return true
		}
		select {
		case <-changed:
		case <-stop:
			s, _ := b.snapshot()
			return cond(s)
		case <-timer.C:
			return false
		}
	}
}
