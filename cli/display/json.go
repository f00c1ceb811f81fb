package display

import (
	"bytes"
	"encoding/json"
	"io"
	"sync"
	"time"
)

// JSON writes one JSON object per line per event: {"event": kind, "time":
// RFC 3339 time, ...fields}. Snapshots themselves are not written; the
// watcher's progress and lag events sample them.
type JSON struct {
	mu  sync.Mutex
	out io.Writer
	err error
}

// NewJSON returns a JSON sink writing to out.
func NewJSON(out io.Writer) *JSON { return &JSON{out: out} }

// Event writes ev as one line.
func (j *JSON) Event(ev Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return
	}
	line, err := encodeEvent(ev)
	if err == nil {
		_, err = j.out.Write(line)
	}
	j.err = err
}

// Update is a no-op: progress reaches JSON output as events.
func (j *JSON) Update(Snapshot, string) {}

// Close is a no-op.
func (j *JSON) Close() {}

// Err is the first write error, if any.
func (j *JSON) Err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

func encodeEvent(ev Event) ([]byte, error) {
	head, err := json.Marshal(struct {
		Event string    `json:"event"`
		Time  time.Time `json:"time"`
	}{ev.Kind, ev.At.UTC()})
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Write(head[:len(head)-1])
	if len(ev.Fields) > 0 {
		rest, err := json.Marshal(ev.Fields)
		if err != nil {
			return nil, err
		}
		buf.WriteByte(',')
		buf.Write(rest[1:])
	} else {
		buf.WriteByte('}')
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}
