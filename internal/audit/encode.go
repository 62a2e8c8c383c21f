package audit

import (
	"bytes"
	"context"
	"log/slog"
)

// encoder writes Records as JSON lines through slog's JSON handler,
// without "level" and "msg", into buf. The writer goroutine owns one.
type encoder struct {
	buf   bytes.Buffer
	h     slog.Handler
	attrs []slog.Attr
}

func newEncoder() *encoder {
	e := &encoder{attrs: make([]slog.Attr, 0, 16)}
	e.h = slog.NewJSONHandler(&e.buf, &slog.HandlerOptions{ReplaceAttr: dropLevelAndMsg})
	return e
}

func dropLevelAndMsg(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.LevelKey || a.Key == slog.MessageKey {
		return slog.Attr{}
	}
	return a
}

// add appends r's line to e.buf: {"time":…,"event":…}\n, time in UTC
// and omitted when zero, empty fields omitted.
func (e *encoder) add(r *Record) {
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
	// One group with an empty key is written inline; passing the slice
	// as one attribute spares the slog.Record an allocation.
	rec := slog.NewRecord(r.Time.UTC(), slog.LevelInfo, "", 0)
	rec.AddAttrs(slog.Attr{Value: slog.GroupValue(a...)})
	_ = e.h.Handle(context.Background(), rec) // writes to e.buf, which cannot fail
	clear(a)                                  // keep no reference to r's strings
	e.attrs = a
}

// appendString appends a string attribute unless v is empty (omitempty).
func appendString(a []slog.Attr, key, v string) []slog.Attr {
	if v == "" {
		return a
	}
	return append(a, slog.String(key, v))
}
