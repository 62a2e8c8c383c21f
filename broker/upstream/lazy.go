package upstream

import "sync"

// lazyScrubber builds a client's scrubber on first use: only failures need
// it, and its compiled pattern costs kilobytes per client, which a broker
// with thousands of tenants would otherwise hold for nothing.
type lazyScrubber struct {
	once  sync.Once
	creds []Credential
	sc    *scrubber
}

func (l *lazyScrubber) get() *scrubber {
	l.once.Do(func() { l.sc = newScrubber(l.creds) })
	return l.sc
}

func (l *lazyScrubber) description(s string) string { return l.get().description(s) }

func (l *lazyScrubber) echoes(s string) bool { return l.get().echoes(s) }

func (l *lazyScrubber) host(h string) string { return l.get().host(h) }
