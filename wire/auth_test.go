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
	c := newCredentials("admin", "admin", "s3cret")
	cases := []struct {
		user, password string
		ok             bool
	}{
		{"admin", "s3cret", true},
		{"admin", "s3cre", false},
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
