package guard

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxBuckets is the number of token buckets a table holds before it
// forgets the full ones, which behave exactly as new ones would.
const maxBuckets = 4096

// buckets is a table of token buckets by key.
type buckets struct {
	limit rate.Limit
	burst int
	mu    sync.Mutex
	by    map[string]*rate.Limiter
}

func newBuckets(limit rate.Limit, burst int) *buckets {
	return &buckets{limit: limit, burst: burst, by: map[string]*rate.Limiter{}}
}

// allow takes a token from key's bucket.
func (b *buckets) allow(key string) bool {
	if b.limit == rate.Inf {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.by[key]
	if !ok {
		if len(b.by) >= maxBuckets {
			now := time.Now()
			for k, l := range b.by {
				if l.TokensAt(now) >= float64(b.burst) {
					delete(b.by, k)
				}
			}
		}
		l = rate.NewLimiter(b.limit, b.burst)
		b.by[key] = l
	}
	return l.Allow()
}

// rateKey is the bucket of c: its name, or in open mode (everyone is
// "loopback") its connection, so that one client cannot slow the others.
func rateKey(c *Caller) string {
	if c.open {
		return "conn " + c.Peer
	}
	return c.Name
}

// limitCall takes a token from c's bucket of calls; past the limit it
// audits and returns RESOURCE_EXHAUSTED.
func (g *Guard) limitCall(ctx context.Context, c *Caller) error {
	if g.rates.allow(rateKey(c)) {
		return nil
	}
	err := status.Errorf(codes.ResourceExhausted, "caller %q is over its rate limit of %g calls/s (burst %d); slow down or ask for a higher limits.requests_per_second",
		c.Name, float64(g.rates.limit), g.rates.burst)
	g.deny(ctx, c, "", nil, err)
	return err
}

// limitInvalidation applies the stricter per-caller limit on
// InvalidateToken, the call that makes the broker ask the IdP.
func (g *Guard) limitInvalidation(c *Caller) error {
	if g.invalidations.allow(rateKey(c)) {
		return nil
	}
	return status.Errorf(codes.ResourceExhausted,
		"caller %q is over its InvalidateToken limit of %g calls/s (burst %d); keep using the current token and retry later, or ask for a higher limits.invalidations_per_second",
		c.Name, float64(g.invalidations.limit), g.invalidations.burst)
}

// streamCounter counts open streams per caller.
type streamCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (s *streamCounter) acquire(name string, max int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if max >= 0 && s.n[name] >= max {
		return false
	}
	s.n[name]++
	return true
}

func (s *streamCounter) release(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[name]--; s.n[name] <= 0 {
		delete(s.n, name)
	}
}

// acquireStream takes one of c's concurrent streams; at the limit it
// audits and returns RESOURCE_EXHAUSTED. Release it with
// g.streams.release(c.Name).
func (g *Guard) acquireStream(ctx context.Context, c *Caller) error {
	if g.streams.acquire(c.Name, g.limits.MaxStreamsPerCaller) {
		return nil
	}
	err := status.Errorf(codes.ResourceExhausted,
		"caller %q already has %d open streams, its limit (limits.max_streams_per_caller); close some first", c.Name, g.limits.MaxStreamsPerCaller)
	g.deny(ctx, c, "", nil, err)
	return err
}
