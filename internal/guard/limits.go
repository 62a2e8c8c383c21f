package guard

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
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

// bucketsOf returns token buckets of rps and burst; a negative rps
// means no limit, a negative burst an unbounded one.
func bucketsOf(rps float64, burst int) *buckets {
	if rps < 0 {
		return &buckets{limit: rate.Inf}
	}
	if burst < 0 {
		burst = math.MaxInt32
	}
	return &buckets{limit: rate.Limit(rps), burst: burst, by: map[string]*rate.Limiter{}}
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

// maxCounted is the number of keys a counter tracks at once: a flood
// from that many source addresses is refused, not remembered.
const maxCounted = 1 << 16

// counter counts what each key (a caller, a peer IP) holds open.
type counter[K comparable] struct {
	mu sync.Mutex
	n  map[K]int
}

func newCounter[K comparable]() *counter[K] { return &counter[K]{n: map[K]int{}} }

// acquire counts one more for key, unless key holds max already or is
// new while the counter tracks maxCounted keys.
func (c *counter[K]) acquire(key K, max int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n[key]
	if n >= max || n == 0 && len(c.n) >= maxCounted {
		return false
	}
	c.n[key] = n + 1
	return true
}

// release counts one less for key, forgetting it at zero.
func (c *counter[K]) release(key K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.n[key]; n > 1 {
		c.n[key] = n - 1
	} else {
		delete(c.n, key)
	}
}

// len returns the number of keys that hold something.
func (c *counter[K]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.n)
}
