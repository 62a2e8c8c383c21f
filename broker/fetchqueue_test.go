package broker_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// heldFetcher holds every request until release is closed (or its context
// ends), and records how many ran at once and their deadlines.
type heldFetcher struct {
	release chan struct{}

	mu        sync.Mutex
	inflight  int
	peak      int
	calls     int
	deadlines []time.Time
	started   chan struct{} // one send per request, non-blocking
}

func newHeldFetcher() *heldFetcher {
	return &heldFetcher{release: make(chan struct{}), started: make(chan struct{}, 1000)}
}

func (f *heldFetcher) Fetch(ctx context.Context, _ []string) (upstream.Grant, error) {
	f.mu.Lock()
	f.inflight++
	f.calls++
	f.peak = max(f.peak, f.inflight)
	dl, _ := ctx.Deadline()
	f.deadlines = append(f.deadlines, dl)
	f.mu.Unlock()
	f.started <- struct{}{}
	defer func() {
		f.mu.Lock()
		f.inflight--
		f.mu.Unlock()
	}()
	select {
	case <-f.release:
		return upstream.Grant{AccessToken: "tok", ExpiresIn: time.Hour, ExpiresInSet: true}, nil
	case <-ctx.Done():
		return upstream.Grant{}, ctx.Err()
	}
}

func hostTenants(n int, f broker.Fetcher) []broker.Tenant {
	ts := make([]broker.Tenant, n)
	for i := range ts {
		ts[i] = broker.Tenant{Name: fmt.Sprintf("t%d", i), TokenURL: "http://127.0.0.1:1/token", Fetcher: f}
	}
	return ts
}

// TestFetchesPerHostQueueWithoutGoroutines: tenants of one host fetch at
// most Limits.MaxIdPRequestsPerHost at a time, the others wait in order
// without a goroutine each, and every tenant gets its token.
func TestFetchesPerHostQueueWithoutGoroutines(t *testing.T) {
	const bound, n = 3, 200
	f := newHeldFetcher()
	before := runtime.NumGoroutine()
	ready := make(chan string, n)
	b, err := broker.New(broker.Config{Tenants: hostTenants(n, f), Limits: limits.Limits{MaxIdPRequestsPerHost: bound},
		OnTenantHealth: func(name string, serving bool) {
			if serving {
				ready <- name
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for range bound {
		<-f.started
	}
	if g := runtime.NumGoroutine() - before; g > bound+10 {
		t.Errorf("%d tenants waiting for %d request slots run %d more goroutines; want about %d", n, bound, g, bound)
	}
	close(f.release)
	for range n {
		select {
		case <-ready:
		case <-time.After(10 * time.Second):
			t.Fatal("not every tenant became READY")
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.peak != bound || f.calls != n {
		t.Errorf("peak concurrent requests %d, calls %d; want %d and %d", f.peak, f.calls, bound, n)
	}
}

// TestQueuedCallerWaitsAtMostTheTimeout: behind a hung host, a caller
// of a queued request gets UNAVAILABLE ("no answer") within the attempt's
// timeout of its call; the request itself, once sent, gets the whole
// timeout from its start, not from when it was queued.
func TestQueuedCallerWaitsAtMostTheTimeout(t *testing.T) {
	f := newHeldFetcher() // never released: the host hangs
	const timeout = 300 * time.Millisecond
	b, err := broker.New(broker.Config{Tenants: hostTenants(2, f), Limits: limits.Limits{MaxIdPRequestsPerHost: 1}, FetchTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	<-f.started
	start := time.Now()
	_, err = b.Token(t.Context(), "t1", nil, 0)
	if took := time.Since(start); err == nil || took > timeout+200*time.Millisecond {
		t.Errorf("the queued caller got %v after %s; want no answer within %s", err, took, timeout)
	}
	<-f.started // the second request, sent when the first timed out
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.deadlines[1].Sub(f.deadlines[0]); d < timeout*3/4 {
		t.Errorf("the queued request's deadline is %s after the first's; want its timeout counted from its start (%s later)", d, timeout)
	}
}

// TestStartBehindASlowHostSendsEveryRequest: many tenants of one host,
// more than its slots can serve within one timeout, all get their token
// (before, the requests queued longest expired unsent, were retried, and
// a 50,000-tenant start took minutes more).
func TestStartBehindASlowHostSendsEveryRequest(t *testing.T) {
	f := &slowFetcher{delay: 100 * time.Millisecond}
	const n = 8
	ready := make(chan string, n)
	b, err := broker.New(broker.Config{Tenants: hostTenants(n, f), Limits: limits.Limits{MaxIdPRequestsPerHost: 2}, FetchTimeout: 250 * time.Millisecond,
		OnTenantHealth: func(tenant string, serving bool) {
			if serving {
				ready <- tenant
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for range n {
		select {
		case <-ready:
		case <-time.After(10 * time.Second):
			t.Fatal("not every tenant got its token")
		}
	}
	if got := f.calls.Load(); got != n {
		t.Errorf("%d requests for %d tenants, want one each", got, n)
	}
}

// slowFetcher answers every request after delay.
type slowFetcher struct {
	delay time.Duration
	calls atomic.Int64
}

func (f *slowFetcher) Fetch(ctx context.Context, _ []string) (upstream.Grant, error) {
	f.calls.Add(1)
	t := time.NewTimer(f.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return upstream.Grant{AccessToken: "tok", ExpiresIn: time.Hour, ExpiresInSet: true}, nil
	case <-ctx.Done():
		return upstream.Grant{}, ctx.Err()
	}
}

// TestQueuedFetchOfRemovedTenantIsNotSent: a tenant removed while its
// request waits for a slot sends no request.
func TestQueuedFetchOfRemovedTenantIsNotSent(t *testing.T) {
	f := newHeldFetcher()
	b, err := broker.New(broker.Config{Tenants: hostTenants(2, f), Limits: limits.Limits{MaxIdPRequestsPerHost: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	<-f.started
	f.mu.Lock()
	running := f.calls
	f.mu.Unlock()
	if running != 1 {
		t.Fatalf("%d requests running with one slot", running)
	}
	if err := b.SetTenants(nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls != 1 {
		t.Errorf("%d requests sent; want 1: the removed tenant's queued request must not go out", f.calls)
	}
}
