package audit

import (
	"fmt"
	"net"
	"time"
	"unicode/utf8"
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
	// maxCollapseKeys bounds the distinct denials held in one interval;
	// beyond it, denials are counted on one overflow line. With the clips
	// above, a flood of distinct denials writes at most about 64 × 1 KiB
	// per interval.
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
			marker = fmt.Sprintf("…+%d more", len(scopes)-i-1)
			if i == len(scopes)-1 {
				return out
			}
		}
		for len(out) > 0 && sum(out)+len(marker) > budget {
			out = out[:len(out)-1]
		}
		return append(out, marker)
	}
	return out
}

func sum(ss []string) int {
	n := 0
	for _, s := range ss {
		n += len(s)
	}
	return n
}

// collapser holds the denials of the current interval, under Logger.mu.
type collapser struct {
	interval time.Duration
	seen     map[string]*pending
	timer    *time.Timer
}

type pending struct {
	r     Record // the first denial, peer without port
	count int    // identical denials since the last line
}

// SetCollapseInterval sets LogDenial's interval; call it before use.
func (l *Logger) SetCollapseInterval(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.collapse.interval = d
}

// LogDenial writes a denial (tenant, scopes and reason clipped) unless
// an identical one (same fields, same peer IP) was written in the
// current interval; such repeats are counted and written as one line
// with Count when the interval ends, or at Close. So a flood of refused
// calls costs one audit line per distinct denial per interval. A nil
// Logger discards r.
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
	key := string(appendRecord(nil, &r))
	l.mu.Lock()
	w, err := l.denyLocked(key, r)
	l.mu.Unlock()
	if w == nil || err != nil {
		return err
	}
	<-w.done
	return w.err
}

// denyLocked counts a repeated denial or queues a new one's line,
// returning the batch to wait for (nil when counted).
func (l *Logger) denyLocked(key string, r Record) (*batch, error) {
	if l.closed {
		return nil, fmt.Errorf("audit: logger is closed")
	}
	c := &l.collapse
	if c.seen == nil {
		c.seen = map[string]*pending{}
	}
	if p, ok := c.seen[key]; ok {
		p.count++
		return nil, nil
	}
	if len(c.seen) >= maxCollapseKeys {
		key = ""
		if p, ok := c.seen[key]; ok {
			p.count++
			return nil, nil
		}
		c.seen[key] = &pending{r: Record{Event: EventDeny, Result: ResultDenied,
			Reason: "further distinct denials, not itemised: too many in one interval"}, count: 1}
		return nil, nil
	}
	c.seen[key] = &pending{r: r}
	if c.timer == nil && c.interval > 0 {
		c.timer = time.AfterFunc(c.interval, l.flush)
	}
	return l.queueLocked(r)
}

// queueLocked encodes r and adds it to the current batch (denial lines
// are rare: encoding them under the lock costs nothing that matters).
func (l *Logger) queueLocked(r Record) (*batch, error) {
	return l.enqueueLocked(r.Time, appendRecord(nil, &r))
}

func (l *Logger) flush() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	defer l.mu.Unlock()
	l.flushLocked(false)
}

// flushLocked writes the counts of the interval that ended. Keys without
// repeats are forgotten; the others start a new interval, so that a
// steady flood costs one line per interval. final writes all and stops.
func (l *Logger) flushLocked(final bool) {
	c := &l.collapse
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	for k, p := range c.seen {
		if p.count == 0 {
			delete(c.seen, k)
			continue
		}
		r := p.r
		r.Count = p.count
		// No caller waits: a failing writer fails the next Log too.
		_, _ = l.queueLocked(r)
		p.count = 0
	}
	if final {
		c.seen = nil
		return
	}
	if len(c.seen) > 0 && c.interval > 0 {
		c.timer = time.AfterFunc(c.interval, l.flush)
	}
}
