package wire

import (
	"context"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
	psqlerr "github.com/jeroenrinzema/psql-wire/errors"
)

// slogToHclog routes psql-wire's slog output into an hclog logger, so the
// admin server logs like every other component.
type slogToHclog struct {
	log   hclog.Logger
	attrs []any
	group string
}

// newSlogLogger returns a *slog.Logger writing to l.
func newSlogLogger(l hclog.Logger) *slog.Logger {
	return slog.New(&slogToHclog{log: l})
}

func (h *slogToHclog) Enabled(_ context.Context, level slog.Level) bool {
	switch {
	case level >= slog.LevelError:
		return h.log.IsError()
	case level >= slog.LevelWarn:
		return h.log.IsWarn()
	case level >= slog.LevelInfo:
		return h.log.IsInfo()
	default:
		// psql-wire logs every protocol message at debug level: keep that
		// for trace, it drowns reshard's own debug output otherwise.
		return h.log.IsTrace()
	}
}

func (h *slogToHclog) Handle(_ context.Context, r slog.Record) error {
	args := append([]any(nil), h.attrs...)
	refusedLogin := false
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok {
			code := string(psqlerr.GetCode(err))
			refusedLogin = refusedLogin || strings.HasPrefix(code, "28") || code == "3D000"
		}
		args = append(args, h.key(a.Key), a.Value.Any())
		return true
	})
	if refusedLogin {
		// The admin server already logged the refusal as a warning.
		h.log.Debug(r.Message, args...)
		return nil
	}
	switch {
	case r.Level >= slog.LevelError:
		h.log.Error(r.Message, args...)
	case r.Level >= slog.LevelWarn:
		h.log.Warn(r.Message, args...)
	case r.Level >= slog.LevelInfo:
		h.log.Info(r.Message, args...)
	default:
		h.log.Trace(r.Message, args...)
	}
	return nil
}

func (h *slogToHclog) key(k string) string {
	if h.group == "" {
		return k
	}
	return h.group + "." + k
}

func (h *slogToHclog) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &slogToHclog{log: h.log, group: h.group, attrs: append([]any(nil), h.attrs...)}
	for _, a := range attrs {
		n.attrs = append(n.attrs, h.key(a.Key), a.Value.Any())
	}
	return n
}

func (h *slogToHclog) WithGroup(name string) slog.Handler {
	g := name
	if h.group != "" {
		g = h.group + "." + name
	}
	return &slogToHclog{log: h.log, attrs: h.attrs, group: g}
}
