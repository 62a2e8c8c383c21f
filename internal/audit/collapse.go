package audit

import (
	"fmt"
	"net"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tokenbroker/tokenbroker/internal/flood"
)

// Bounds on denial lines, whose fields an unauthenticated peer chooses.
const (
	// MaxDeniedFieldBytes caps a denied request's tenant and each scope.
	MaxDeniedFieldBytes = 128
	// MaxDeniedScopes caps the scopes listed on a denial line.
	MaxDeniedScopes = 32
	// MaxDeniedScopesBytes caps the scopes of a denial line in total
	// (their bytes summed, the "…+N more" marker included).
	MaxDeniedScopesBytes = 128
	// maxReasonBytes caps a denial's reason, which quotes the request.
	maxReasonBytes = 512
	// DefaultCollapseInterval is how long LogDenial collects identical
	// denials before it writes one line with their count.
	DefaultCollapseInterval = 10 * time.Second
	// maxCollapseKeys bounds the distinct denials held in one interval
	// (about 64 KiB of lines); the rest are counted on one overflow line.
	maxCollapseKeys = 64
)

// Clip returns s cut to at most max bytes on a UTF-8 boundary, marked
// with "…" when cut.
func Clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func clipDenial(r Record) Record {
	r.Tenant = Clip(r.Tenant, MaxDeniedFieldBytes)
	if len(r.Scopes) > 0 {
		r.Scopes = clipScopes(r.Scopes, MaxDeniedScopesBytes)
	}
	r.Reason = Clip(r.Reason, maxReasonBytes)
	return r
}

// clipScopes returns scopes cut to at most budget bytes in total: the
// scopes that fit, the first that does not clipped into the room left,
// then a "…+N more" marker for those dropped.
func clipScopes(scopes []string, budget int) []string {
	out := make([]string, 0, min(len(scopes), MaxDeniedScopes))
	used := 0
	for i, sc := range scopes {
		if used+len(sc) <= budget && i < MaxDeniedScopes {
			out = append(out, sc)
			used += len(sc)
			continue
		}
		marker := fmt.Sprintf("…+%d more", len(scopes)-i)
		room := budget - used - len(marker)
		if room >= 8 && i < MaxDeniedScopes {
			out = append(out, Clip(sc, room))
			used += len(out[len(out)-1])
			marker = fmt.Sprintf("…+%d more", len(scopes)-i-1)
			if i == len(scopes)-1 {
				return out
			}
		}
		for ; len(out) > 0 && used+len(marker) > budget; out = out[:len(out)-1] {
			used -= len(out[len(out)-1])
		}
		return append(out, marker)
	}
	return out
}

// SetCollapseInterval sets LogDenial's interval; call it before use.
func (l *Logger) SetCollapseInterval(d time.Duration) {
	l.denials = flood.New(flood.Config[string, Record]{Every: d, Burst: 1, MaxKeys: maxCollapseKeys, Report: l.reportDenials})
}

// LogDenial writes a denial (tenant, scopes and reason clipped) unless an
// identical one (same fields, same peer IP) was written in the last
// interval; repeats are written as one line with Count an interval later,
// or at Close. A nil Logger discards r.
func (l *Logger) LogDenial(r Record) error {
	if l == nil {
		return nil
	}
	r = clipDenial(r)
	r.Event = EventDeny
	r.Time = time.Time{}
	if host, _, err := net.SplitHostPort(r.Peer); err == nil {
		r.Peer = host
	}
	if pass, _ := l.denials.Allow(denialKey(&r), r); !pass {
		return nil
	}
	return l.commit(&r)
}

// denialKey returns r's fields but Time and Count, each length-prefixed:
// two denials share a key only if they are identical.
func denialKey(r *Record) string {
	b := make([]byte, 0, 256)
	b = strconv.AppendUint(b, r.Version, 10)
	for _, s := range [...]string{r.Event, r.Method, r.Caller, r.Identity, r.Peer, r.Tenant,
		r.TokenFingerprint, r.RejectedFingerprint, r.Result, r.Code, r.Reason} {
		b = append(strconv.AppendInt(append(b, ';'), int64(len(s)), 10), ':')
		b = append(b, s...)
	}
	for _, s := range r.Scopes {
		b = append(strconv.AppendInt(append(b, '['), int64(len(s)), 10), ':')
		b = append(b, s...)
	}
	return string(b)
}

// reportDenials writes the count of the denials held under a key, on a
// copy of the first of them ("" is the overflow of maxCollapseKeys).
func (l *Logger) reportDenials(key string, r Record, n int) {
	if key == "" {
		r = Record{Event: EventDeny, Result: ResultDenied,
			Reason: "further distinct denials, not itemised: too many in one interval"}
	}
	r.Count = n
	l.mu.Lock()
	// No caller waits: a failing writer fails the next Log too.
	_, _ = l.enqueueLocked(&r)
	l.mu.Unlock()
}
