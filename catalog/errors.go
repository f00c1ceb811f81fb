package catalog

import (
	"fmt"
	"strings"
)

// ConfigError is a problem in a configuration file. It names the file, the
// key (as a dotted path such as "databases[1].role") and, when known, the
// line.
type ConfigError struct {
	// File is the path of the configuration file.
	File string
	// Line is the 1-based line of the key, or 0 when unknown.
	Line int
	// Key is the dotted path of the offending key.
	Key string
	// Msg says what is wrong.
	Msg string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": %s", e.Key)
	}
	fmt.Fprintf(&b, ": %s", e.Msg)
	return b.String()
}

// ConfigErrors is every problem found in the configuration files.
type ConfigErrors []*ConfigError

func (es ConfigErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// errList collects validation errors for one file.
type errList struct {
	file string
	pos  positions
	errs ConfigErrors
}

func (l *errList) add(key, format string, args ...any) {
	l.errs = append(l.errs, &ConfigError{File: l.file, Line: l.pos.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}
