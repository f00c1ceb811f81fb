package testkit

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// echoServer accepts connections and echoes what it reads until the test
// ends; it returns its address.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func newTestProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := NewProxy(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(p.Port()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads it back within wait; it returns what came
// back and the read's error.
func roundTrip(c net.Conn, msg []byte, wait time.Duration) ([]byte, error) {
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	got := make([]byte, len(msg))
	n, err := io.ReadFull(c, got)
	return got[:n], err
}

// waitOpen waits until the proxy has n connections registered (a dialled
// connection is registered once the proxy has reached the target).
func waitOpen(t *testing.T, p *Proxy, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); p.Open() != n; {
		if time.Now().After(deadline) {
			t.Fatalf("proxy has %d open connections, want %d", p.Open(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// forwarded is p.Forwarded once it reaches want or 10 s have passed. The
// pump counts a chunk after its Write returned, which can be just after the
// echo reached the test's side, so the counter may trail the bytes read.
func forwarded(p *Proxy, want int64) int64 {
	for deadline := time.Now().Add(10 * time.Second); p.Forwarded() < want && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	return p.Forwarded()
}

func TestProxyForwards(t *testing.T) {
	p := newTestProxy(t)
	c := dial(t, p)
	msg := bytes.Repeat([]byte("reshard "), 10_000)
	got, err := roundTrip(c, msg, 10*time.Second)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through the proxy: %d of %d bytes back, err %v", len(got), len(msg), err)
	}
	if p.Accepted() != 1 || p.Open() != 1 {
		t.Fatalf("accepted %d, open %d; want 1 and 1", p.Accepted(), p.Open())
	}
	if f := forwarded(p, int64(2*len(msg))); f != int64(2*len(msg)) {
		t.Fatalf("forwarded %d bytes, want %d (both ways)", f, 2*len(msg))
	}
	if p.Resets() != 0 || p.Blackholed() != 0 {
		t.Fatalf("no fault injected, yet resets %d, blackholed %d", p.Resets(), p.Blackholed())
	}
}

func TestProxyReset(t *testing.T) {
	p := newTestProxy(t)
	a, b := dial(t, p), dial(t, p)
	for _, c := range []net.Conn{a, b} {
		if _, err := roundTrip(c, []byte("ping"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.Reset(); n != 2 {
		t.Fatalf("Reset cut %d connections, want 2", n)
	}
	if p.Resets() != 2 {
		t.Fatalf("Resets() = %d, want 2", p.Resets())
	}
	// A reset connection fails: the read sees a reset or EOF, never a
	// timeout (the connection is gone, not silent).
	_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := a.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read on a reset connection: %v, want a reset or EOF", err)
	}
	// Reset is counted once per connection, however often it is called.
	p.Reset()
	if p.Resets() != 2 {
		t.Fatalf("a second Reset counted connections already cut: Resets() = %d", p.Resets())
	}
	// New connections go through.
	c := dial(t, p)
	if got, err := roundTrip(c, []byte("again"), 10*time.Second); err != nil || string(got) != "again" {
		t.Fatalf("a connection after the reset: %q, %v", got, err)
	}
	waitOpen(t, p, 1)
}

func TestProxyBlackhole(t *testing.T) {
	p := newTestProxy(t)
	old := dial(t, p)
	if _, err := roundTrip(old, []byte("ping"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := p.Blackhole(); n != 1 {
		t.Fatalf("Blackhole saw %d open connections, want 1", n)
	}
	// Silent: the write succeeds, nothing comes back, the connection
	// stays open (a timeout, not an error).
	_, err := roundTrip(old, []byte("lost"), 300*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read on a blackholed connection: %v, want a timeout", err)
	}
	// A connection opened during the blackhole is silent too.
	during := dial(t, p)
	waitOpen(t, p, 2)
	if _, err := roundTrip(during, []byte("lost"), 300*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read on a connection opened during the blackhole: %v, want a timeout", err)
	}
	if p.Blackholed() != 2 {
		t.Fatalf("Blackholed() = %d, want 2", p.Blackholed())
	}
	// Blackholing again does not count the same connections twice.
	p.Blackhole()
	if p.Blackholed() != 2 {
		t.Fatalf("a second Blackhole counted dead connections again: %d", p.Blackholed())
	}
	p.Heal()
	after := dial(t, p)
	if got, err := roundTrip(after, []byte("healed"), 10*time.Second); err != nil || string(got) != "healed" {
		t.Fatalf("a connection after Heal: %q, %v", got, err)
	}
	// The blackholed ones stay dead after Heal.
	if _, err := roundTrip(old, []byte("still lost"), 300*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a blackholed connection came back after Heal: %v", err)
	}
}

func TestProxyThrottle(t *testing.T) {
	p := newTestProxy(t)
	c := dial(t, p)
	const rate = 100 << 10 // 100 KiB/s each way
	p.Throttle(rate)
	msg := bytes.Repeat([]byte{'x'}, 50<<10)
	start := time.Now()
	got, err := roundTrip(c, msg, time.Minute)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("throttled echo: %d of %d bytes, %v", len(got), len(msg), err)
	}
	// A lower bound only (the throttle sleeps at least this long; a slow
	// machine can only make it longer): 50 KiB at 100 KiB/s is 0.5 s.
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Fatalf("50 KiB through a 100 KiB/s throttle took %s", el)
	}
	p.Throttle(0)
	big := bytes.Repeat([]byte{'y'}, 4<<20)
	go func() { _, _ = c.Write(big) }()
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	back := make([]byte, len(big))
	if _, err := io.ReadFull(c, back); err != nil || !bytes.Equal(back, big) {
		t.Fatalf("unthrottled echo of 4 MiB: %v", err)
	}
	if f := forwarded(p, int64(2*(len(msg)+len(big)))); f != int64(2*(len(msg)+len(big))) {
		t.Fatalf("forwarded %d bytes, want %d", f, 2*(len(msg)+len(big)))
	}
}

func TestProxyClose(t *testing.T) {
	p, err := NewProxy(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p)
	if _, err := roundTrip(c, []byte("ping"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after Close: %v, want the connection closed", err)
	}
	if _, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p.Port()), time.Second); err == nil {
		t.Fatal("the proxy still accepts connections after Close")
	}
}
