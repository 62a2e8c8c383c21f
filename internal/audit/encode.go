package audit

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"time"
)

// encoder writes a Record as a JSON line through slog's JSON handler,
// without "level" and "msg". A handler writes to one buffer, so encoders
// are pooled, each with its handler, buffer and attribute slice.
type encoder struct {
	buf   bytes.Buffer
	h     slog.Handler
	attrs []slog.Attr
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{attrs: make([]slog.Attr, 0, 16)}
	e.h = slog.NewJSONHandler(&e.buf, &slog.HandlerOptions{ReplaceAttr: dropLevelAndMsg})
	return e
}}

func dropLevelAndMsg(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.LevelKey || a.Key == slog.MessageKey {
		return slog.Attr{}
	}
	return a
}

// encode returns r as a JSON line without its time: {"event":…}\n. The
// result is valid until the encoder's next use.
func (e *encoder) encode(r *Record) []byte {
	a := append(e.attrs[:0], slog.String("event", r.Event))
	a = appendString(a, "method", r.Method)
	a = appendString(a, "caller", r.Caller)
	a = appendString(a, "identity", r.Identity)
	a = appendString(a, "peer", r.Peer)
	a = appendString(a, "tenant", r.Tenant)
	if len(r.Scopes) > 0 {
		a = append(a, slog.Any("scopes", r.Scopes))
	}
	a = appendString(a, "token_fingerprint", r.TokenFingerprint)
	a = appendString(a, "rejected_fingerprint", r.RejectedFingerprint)
	if r.Version != 0 {
		a = append(a, slog.Uint64("version", r.Version))
	}
	a = append(a, slog.String("result", r.Result))
	a = appendString(a, "code", r.Code)
	a = appendString(a, "reason", r.Reason)
	if r.Count != 0 {
		a = append(a, slog.Int("count", r.Count))
	}
	e.attrs = a
	// One group with an empty key is written inline; passing the slice
	// as one attribute spares the Record an allocation.
	rec := slog.NewRecord(time.Time{}, slog.LevelInfo, "", 0)
	rec.AddAttrs(slog.Attr{Value: slog.GroupValue(a...)})
	e.buf.Reset()
	_ = e.h.Handle(context.Background(), rec) // writes to e.buf, which cannot fail
	clear(a)                                  // keep no reference to r's strings
	return e.buf.Bytes()
}

// appendString appends a string attribute unless v is empty (omitempty).
func appendString(a []slog.Attr, key, v string) []slog.Attr {
	if v == "" {
		return a
	}
	return append(a, slog.String(key, v))
}

// appendLine appends a line of time t and body enc (encode's result) to
// b: the time goes first, as {"time":"…", in UTC.
func appendLine(b []byte, t time.Time, enc []byte) []byte {
	b = append(b, `{"time":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `",`...)
	return append(b, enc[1:]...)
}
