// Package flood bounds the lines a flood of events costs while counting
// every event: per key, a token bucket (golang.org/x/time/rate) lets
// some events through, and the ones it holds back are counted and
// reported with a later line. The audit trail collapses repeated
// denials with it, the server its request log and its refusals of
// unverified API keys.
package flood

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Config configures a Gate.
type Config[K comparable] struct {
	// Every is how often a key earns a token; Burst is how many tokens
	// it holds (0: every event is held and reported).
	Every time.Duration
	Burst int
	// MaxKeys bounds the keys tracked at once (at least 1); while it is
	// reached, the events of further keys are held under K's zero value.
	MaxKeys int
	// Report, if set, receives the held counts Every after the first one
	// was held (and on Flush). Each report takes a token of its key, and
	// a key lets no event through while it has held ones, so that a
	// steady flood of one key costs one line per Every. Without Report,
	// held counts ride on the key's next event let through. Report runs
	// outside the Gate's lock.
	Report func(k K, held int)
}

// Gate lets events through per key at a rate and counts the others; see
// Config. It is safe for concurrent use. Its only goroutine is the
// timer of a pending report; Flush stops it.
type Gate[K comparable] struct {
	cfg   Config[K]
	mu    sync.Mutex
	keys  map[K]*entry
	timer *time.Timer // pending report; guarded by mu
}

type entry struct {
	bucket *rate.Limiter
	held   int
}

// New returns a Gate configured by c.
func New[K comparable](c Config[K]) *Gate[K] {
	c.MaxKeys = max(c.MaxKeys, 1)
	return &Gate[K]{cfg: c, keys: map[K]*entry{}}
}

// Allow records an event of k and reports whether to let it through;
// without Config.Report, held is the number of k's events held back
// since the last one let through.
func (g *Gate[K]) Allow(k K) (pass bool, held int) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.entry(k, now)
	if (g.cfg.Report == nil || e.held == 0) && e.bucket.AllowN(now, 1) {
		held, e.held = e.held, 0
		return true, held
	}
	e.held++
	if g.cfg.Report != nil && g.timer == nil {
		g.timer = time.AfterFunc(g.cfg.Every, g.Flush)
	}
	return false, 0
}

// entry returns k's entry, created if need be; at MaxKeys, after
// forgetting idle keys, the zero key's, which lets nothing through.
func (g *Gate[K]) entry(k K, now time.Time) *entry {
	if e := g.keys[k]; e != nil {
		return e
	}
	burst := g.cfg.Burst
	if len(g.keys) >= g.cfg.MaxKeys {
		g.forgetIdle(now)
	}
	if len(g.keys) >= g.cfg.MaxKeys {
		var zero K
		if e := g.keys[zero]; e != nil {
			return e
		}
		k, burst = zero, 0
	}
	e := &entry{bucket: rate.NewLimiter(rate.Every(g.cfg.Every), burst)}
	g.keys[k] = e
	return e
}

// forgetIdle drops the keys that hold no events and whose bucket is
// full: they are as if never seen.
func (g *Gate[K]) forgetIdle(now time.Time) {
	for k, e := range g.keys {
		if e.held == 0 && e.bucket.TokensAt(now) >= float64(e.bucket.Burst()) {
			delete(g.keys, k)
		}
	}
}

// Flush hands every held count to Config.Report now and stops the
// pending report's timer.
func (g *Gate[K]) Flush() {
	type count struct {
		k K
		n int
	}
	var counts []count
	now := time.Now()
	g.mu.Lock()
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	if g.cfg.Report != nil {
		for k, e := range g.keys {
			if e.held > 0 {
				counts = append(counts, count{k, e.held})
				e.held = 0
				e.bucket.ReserveN(now, 1) // the report's line takes a token
			}
		}
	}
	g.forgetIdle(now)
	g.mu.Unlock()
	for _, c := range counts {
		g.cfg.Report(c.k, c.n)
	}
}
