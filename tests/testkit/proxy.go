package testkit

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards TCP connections from a loopback port to a target address,
// and can cut them the two ways a network fails: Reset closes every open
// connection at once; Blackhole keeps the sockets open but silently drops
// every byte in both directions (as a dead route or a lost NAT entry would),
// including on connections opened while it lasts. Heal ends a blackhole for
// new connections; the blackholed ones stay dead until their owner closes
// them, as in a real network. Throttle slows every connection down to a
// rate, so that work through the proxy lasts long enough for a fault to
// land in it. Counters (Resets, Blackholed, Forwarded) say what a fault
// actually hit.
type Proxy struct {
	target string
	ln     net.Listener

	mu        sync.Mutex
	conns     map[*link]struct{}
	blackhole bool
	closed    bool

	accepted atomic.Int64
	// resets and blackholed count the connections Reset and Blackhole
	// cut; forwarded the bytes passed on, both ways.
	resets, blackholed, forwarded atomic.Int64
	// rate is the throttle in bytes per second per direction of each
	// connection (0: none).
	rate atomic.Int64
}

// link is one proxied connection.
type link struct {
	p              *Proxy
	client, server net.Conn
	dead           atomic.Bool // blackholed: bytes are read and dropped
	cut            atomic.Bool // reset: closed by Reset
}

func (l *link) close() {
	l.client.Close()
	l.server.Close()
}

// NewProxy listens on a free loopback port and forwards to target.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p := &Proxy{target: target, ln: ln, conns: map[*link]struct{}{}}
	go p.accept()
	return p, nil
}

// Port is the port clients connect to.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Accepted is the number of connections accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Resets is the number of connections Reset has cut so far.
func (p *Proxy) Resets() int64 { return p.resets.Load() }

// Blackholed is the number of connections blackholed so far (open when
// Blackhole was called, or opened while it lasted).
func (p *Proxy) Blackholed() int64 { return p.blackholed.Load() }

// Forwarded is the number of bytes passed on so far, both directions.
func (p *Proxy) Forwarded() int64 { return p.forwarded.Load() }

// Throttle limits every connection, new and open, to bytesPerSecond in
// each direction; 0 removes the limit.
func (p *Proxy) Throttle(bytesPerSecond int64) { p.rate.Store(bytesPerSecond) }

// Open is the number of connections currently proxied.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	l := &link{p: p, client: c, server: s}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.close()
		return
	}
	if p.blackhole {
		l.dead.Store(true)
		p.blackholed.Add(1)
	}
	p.conns[l] = struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.pump(s, c) }()
	go func() { defer wg.Done(); l.pump(c, s) }()
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, l)
	p.mu.Unlock()
}

// pump copies from src to dst until either side closes; a blackholed link
// keeps reading and drops what it reads. A throttled link waits after each
// chunk as long as the rate asks.
func (l *link) pump(dst, src net.Conn) {
	defer l.close()
	buf := make([]byte, 32<<10)
	for {
		chunk := buf
		if rate := l.p.rate.Load(); rate > 0 && rate/10 < int64(len(chunk)) {
			// Chunks of a tenth of a second at most, so that a throttled
			// link stays smooth.
			chunk = buf[:max(rate/10, 1)]
		}
		n, err := src.Read(chunk)
		if n > 0 && !l.dead.Load() {
			if _, werr := dst.Write(chunk[:n]); werr != nil {
				return
			}
			l.p.forwarded.Add(int64(n))
			if rate := l.p.rate.Load(); rate > 0 {
				time.Sleep(time.Duration(int64(n) * int64(time.Second) / rate))
			}
		}
		if err != nil {
			return // EOF or a closed socket: the link is over
		}
	}
}

// Reset closes every open connection (clients see a reset or EOF). New
// connections are accepted as before.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for l := range p.conns {
		if l.cut.Swap(true) {
			continue // reset before, still winding down
		}
		n++
		if tc, ok := l.client.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST, not FIN
		}
		l.close()
	}
	p.resets.Add(int64(n))
	return n
}

// Blackhole silently drops every byte of every open connection and of
// connections opened until Heal. It returns how many were open.
func (p *Proxy) Blackhole() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackhole = true
	n := 0
	for l := range p.conns {
		if !l.dead.Swap(true) {
			n++
		}
	}
	p.blackholed.Add(int64(n))
	return len(p.conns)
}

// Heal lets new connections through again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackhole = false
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	for l := range p.conns {
		l.close()
	}
	p.mu.Unlock()
	p.ln.Close()
}
