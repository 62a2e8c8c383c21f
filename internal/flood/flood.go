// Package flood bounds the lines a flood of events costs while counting
// every event: per key, a token bucket (golang.org/x/time/rate) lets some
// through; the others are counted and reported with a later line.
package flood

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Config configures a Gate of keys K whose reports need a V (say, the
// fields of the line to write; struct{} if they need none).
type Config[K comparable, V any] struct {
	// Every is how often a key earns a token; Burst is how many tokens
	// it holds (0: every event is held and reported).
	Every time.Duration
	Burst int
	// MaxKeys bounds the keys tracked at once (at least 1); while it is
	// reached, the events of further keys are held under K's zero value.
	MaxKeys int
	// Report, if set, receives a key's held count and its first event's V
	// Every after the first was held (and on Flush), outside the lock; a
	// steady flood of one key costs one line per Every. Without Report,
	// held counts ride on the key's next event let through.
	Report func(k K, v V, held int)
}

// Gate lets events through per key at a rate and counts the others; see
// Config. It is safe for concurrent use. Its only goroutine is the
// timer of a pending report; Flush stops it.
type Gate[K comparable, V any] struct {
	cfg Config[K, V]
	// flushing runs one Flush at a time, so that a Flush returns only
	// once the counts held before it are reported (also by the timer's).
	flushing sync.Mutex
	mu       sync.Mutex
	keys     map[K]*entry[V]
	timer    *time.Timer // pending report; guarded by mu
}

type entry[V any] struct {
	bucket *rate.Limiter
	held   int
	v      V // of the key's first event
}

// New returns a Gate configured by c.
func New[K comparable, V any](c Config[K, V]) *Gate[K, V] {
	c.MaxKeys = max(c.MaxKeys, 1)
	return &Gate[K, V]{cfg: c, keys: map[K]*entry[V]{}}
}

// Allow records an event of k, described by v, and reports whether to
// let it through; without Config.Report, held is the number of k's
// events held back since the last one let through.
func (g *Gate[K, V]) Allow(k K, v V) (pass bool, held int) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.entry(k, v, now)
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

// entry returns k's entry, created with v if need be; at MaxKeys, after
// forgetting idle keys, the zero key's, with V's zero value, which lets
// nothing through.
func (g *Gate[K, V]) entry(k K, v V, now time.Time) *entry[V] {
	if e := g.keys[k]; e != nil {
		return e
	}
	burst := g.cfg.Burst
	if len(g.keys) >= g.cfg.MaxKeys {
		g.forgetIdle(now)
	}
	if len(g.keys) >= g.cfg.MaxKeys {
		k, v, burst = *new(K), *new(V), 0
		if e := g.keys[k]; e != nil {
			return e
		}
	}
	e := &entry[V]{bucket: rate.NewLimiter(rate.Every(g.cfg.Every), burst), v: v}
	g.keys[k] = e
	return e
}

// forgetIdle drops the keys that hold no events and whose bucket is
// full: they are as if never seen.
func (g *Gate[K, V]) forgetIdle(now time.Time) {
	for k, e := range g.keys {
		if e.held == 0 && e.bucket.TokensAt(now) >= float64(e.bucket.Burst()) {
			delete(g.keys, k)
		}
	}
}

// Flush hands every held count to Config.Report now and stops the
// pending report's timer. Report must not call Flush.
func (g *Gate[K, V]) Flush() {
	type count struct {
		k K
		v V
		n int
	}
	var counts []count
	g.flushing.Lock()
	defer g.flushing.Unlock()
	now := time.Now()
	g.mu.Lock()
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	if g.cfg.Report != nil {
		for k, e := range g.keys {
			if e.held > 0 {
				counts = append(counts, count{k, e.v, e.held})
				e.held = 0
				e.bucket.ReserveN(now, 1) // the report's line takes a token
			}
		}
	}
	g.forgetIdle(now)
	g.mu.Unlock()
	for _, c := range counts {
		g.cfg.Report(c.k, c.v, c.n)
	}
}
