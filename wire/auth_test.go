package wire

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/jeroenrinzema/psql-wire/codes"
	psqlerr "github.com/jeroenrinzema/psql-wire/errors"
)

func TestCredentialsCheck(t *testing.T) {
	c, err := newCredentials("admin", "admin", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		user, password string
		ok             bool
	}{
		{"admin", "s3cret", true},
		// Wrong passwords of the same length, differing first or last.
		{"admin", "x3cret", false},
		{"admin", "s3creT", false},
		{"admin", "s3cre\x00", false},
		// Of different lengths: a prefix, an extension, much longer.
		{"admin", "s3cre", false},
		{"admin", strings.Repeat("s3cret", 1000), false},
		{"admin", "s3cret ", false},
		{"admin", "", false},
		{"Admin", "s3cret", false},
		{"", "", false},
		{"root", "s3cret", false},
	}
	for _, tc := range cases {
		if got := c.check(tc.user, tc.password); got != tc.ok {
			t.Errorf("check(%q, %q) = %v, want %v", tc.user, tc.password, got, tc.ok)
		}
	}
}

// TestConnStateSeesTLS: an SSLRequest first (or after a declined
// GSSENCRequest), however the bytes are split across reads, marks the
// connection as TLS; a plain StartupMessage does not.
func TestConnStateSeesTLS(t *testing.T) {
	ssl := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}
	gss := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}
	startup := []byte{0, 0, 0, 9, 0, 3, 0, 0, 0}
	for _, c := range []struct {
		stream []byte
		tls    bool
	}{
		{ssl, true},
		{append(append([]byte{}, gss...), ssl...), true},
		{startup, false},
		{append(append([]byte{}, gss...), startup...), false},
		{append(append([]byte{}, startup...), ssl...), false},
	} {
		for chunk := 1; chunk <= len(c.stream); chunk++ {
			s := &connState{}
			for b := c.stream; len(b) > 0; b = b[min(chunk, len(b)):] {
				s.observe(b[:min(chunk, len(b))])
			}
			if got := usesTLS(clientAddr{state: s}); got != c.tls {
				t.Fatalf("% x in chunks of %d: TLS %v, want %v", c.stream, chunk, got, c.tls)
			}
		}
	}
}

func TestSlogRoutedToHclog(t *testing.T) {
	var buf bytes.Buffer
	l := hclog.New(&hclog.LoggerOptions{Name: "x", Level: hclog.Info, Output: &buf})
	s := newSlogLogger(l).With("conn", 7).WithGroup("g")
	s.Info("hello", "k", "v")
	s.Debug("protocol chatter") // below info: dropped
	s.Error("serving failed", "err", psqlerr.WithCode(errors.New("bad password"), codes.InvalidPassword))
	out := buf.String()
	if !strings.Contains(out, "[INFO]  x: hello: conn=7 g.k=v") {
		t.Fatalf("info line missing or wrong:\n%s", out)
	}
	if strings.Contains(out, "protocol chatter") || strings.Contains(out, "bad password") {
		t.Fatalf("debug chatter or refused-login noise logged at info:\n%s", out)
	}
	if !newSlogLogger(l).Enabled(context.Background(), -4+8) { // slog.LevelError
		t.Fatal("error level disabled")
	}
}
