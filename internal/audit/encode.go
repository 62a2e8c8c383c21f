package audit

import (
	"bytes"
	"encoding/json"
)

// encoder writes Records as JSON lines into buf by Record's json tags
// (encoding/json: a quarter cheaper than slog's JSON handler, which
// calls a ReplaceAttr per field to drop level and msg). The writer
// goroutine owns one.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

func newEncoder() *encoder {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}

// add appends r's line to e.buf, its time in UTC. It fails only for a
// time that JSON cannot hold (a year past 9999), and then writes nothing.
func (e *encoder) add(r *Record) error {
	r.Time = r.Time.UTC()
	return e.enc.Encode(r)
}
