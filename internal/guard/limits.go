package guard

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rateLimiter is a ratelimit.Limiter with one token bucket per caller.
// Buckets are keyed by caller name, so there are at most as many as
// callers in the policies seen.
type rateLimiter struct {
	g     *Guard // audits refusals
	limit rate.Limit
	burst int
	mu    sync.Mutex
	by    map[string]*rate.Limiter
}

func newRateLimiter(limit rate.Limit, burst int) *rateLimiter {
	return &rateLimiter{limit: limit, burst: burst, by: map[string]*rate.Limiter{}}
}

// Limit implements ratelimit.Limiter.
func (r *rateLimiter) Limit(ctx context.Context) error {
	c, ok := CallerFromContext(ctx)
	if !ok {
		return fmt.Errorf("no authenticated caller")
	}
	r.mu.Lock()
	l, ok := r.by[c.Name]
	if !ok {
		l = rate.NewLimiter(r.limit, r.burst)
		r.by[c.Name] = l
	}
	r.mu.Unlock()
	if l.Allow() {
		return nil
	}
	err := fmt.Errorf("caller %q is over its rate limit of %g calls/s (burst %d); slow down or ask for a higher limits.requests_per_second",
		c.Name, float64(r.limit), r.burst)
	// The middleware turns err into RESOURCE_EXHAUSTED; audit it as such.
	r.g.deny(ctx, c, "", nil, status.Error(codes.ResourceExhausted, err.Error()))
	return err
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

func (g *Guard) limitStreams(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	c, err := mustCaller(ctx)
	if err != nil {
		return err
	}
	if !g.streams.acquire(c.Name, g.limits.MaxStreamsPerCaller) {
		err := status.Errorf(codes.ResourceExhausted,
			"caller %q already has %d open streams, its limit (limits.max_streams_per_caller); close some first", c.Name, g.limits.MaxStreamsPerCaller)
		g.deny(ctx, c, "", nil, err)
		return err
	}
	defer g.streams.release(c.Name)
	return handler(srv, ss)
}
