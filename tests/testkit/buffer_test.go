package testkit

import (
	"strings"
	"testing"
	"time"
)

func TestBufferWaitFor(t *testing.T) {
	var b Buffer
	go func() {
		for _, s := range []string{"one ", "two ", "three"} {
			time.Sleep(10 * time.Millisecond)
			_, _ = b.Write([]byte(s))
		}
	}()
	if !b.WaitFor(time.Minute, nil, func(s string) bool { return strings.Contains(s, "three") }) {
		t.Fatalf("WaitFor missed a write: %q", b.String())
	}
	if b.WaitFor(50*time.Millisecond, nil, func(s string) bool { return strings.Contains(s, "four") }) {
		t.Fatal("WaitFor held for text never written")
	}
	stop := make(chan struct{})
	close(stop)
	if b.WaitFor(time.Minute, stop, func(s string) bool { return strings.Contains(s, "four") }) {
		t.Fatal("WaitFor held after stop for text never written")
	}
}
