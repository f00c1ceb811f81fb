package wire

import (
	"encoding/binary"
	"net"
	"sync"
)

// Startup packet codes of the requests a client may send before its
// StartupMessage (PostgreSQL protocol, section 55.2).
const (
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
)

// tlsListener wraps accepted connections so the authentication step can
// tell whether the client's session runs over TLS.
type tlsListener struct{ net.Listener }

// Accept returns the next connection, watched by a peekConn.
func (l tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &peekConn{Conn: c, state: &connState{}}, nil
}

// peekConn watches the first bytes the client sends: an SSLRequest (after
// an optional GSSENCRequest, which the server declines) means the session
// continues over TLS, since the server answers it with a TLS handshake.
type peekConn struct {
	net.Conn
	state *connState
}

func (c *peekConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.state.observe(p[:n])
	return n, err
}

// RemoteAddr carries the connection's state to the session's context
// (psql-wire stores the remote address there).
func (c *peekConn) RemoteAddr() net.Addr {
	return clientAddr{Addr: c.Conn.RemoteAddr(), state: c.state}
}

// clientAddr is a client's address with its connection's state.
type clientAddr struct {
	net.Addr
	state *connState
}

// connState records what the client's first packets asked for.
type connState struct {
	mu      sync.Mutex
	decided bool
	tls     bool
	head    []byte
}

func (s *connState) observe(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.decided {
		return
	}
	s.head = append(s.head, b...)
	for len(s.head) >= 8 {
		length, code := binary.BigEndian.Uint32(s.head), binary.BigEndian.Uint32(s.head[4:])
		if length == 8 && code == gssEncRequestCode {
			s.head = s.head[8:]
			continue
		}
		s.tls = length == 8 && code == sslRequestCode
		s.decided, s.head = true, nil
	}
}

// usesTLS reports whether the connection behind addr asked for TLS (and,
// the server having a certificate, got it: its startup message could not
// have been read otherwise).
func usesTLS(addr net.Addr) bool {
	a, ok := addr.(clientAddr)
	if !ok {
		return false
	}
	a.state.mu.Lock()
	defer a.state.mu.Unlock()
	return a.state.tls
}
