package display

import (
	"io"
	"sync"
)

// Writer is an io.Writer whose destination can be switched: the CLI's
// logger writes through one, so that log lines print above the progress
// bars while they are drawn.
type Writer struct {
	mu  sync.Mutex
	out io.Writer
}

// NewWriter returns a Writer writing to out.
func NewWriter(out io.Writer) *Writer { return &Writer{out: out} }

// Write writes p to the current destination.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	out := w.out
	w.mu.Unlock()
	return out.Write(p)
}

// Swap makes out the destination and returns the previous one.
func (w *Writer) Swap(out io.Writer) io.Writer {
	w.mu.Lock()
	defer w.mu.Unlock()
	prev := w.out
	w.out = out
	return prev
}
