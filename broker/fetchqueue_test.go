package broker_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
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

// TestQueuedFetchTimeoutCountsFromQueueing: behind a hung host, a queued
// request's timeout runs while it waits, so the queue fails in time
// instead of taking one timeout per request in turn.
func TestQueuedFetchTimeoutCountsFromQueueing(t *testing.T) {
	f := newHeldFetcher() // never released: the host hangs
	b, err := broker.New(broker.Config{Tenants: hostTenants(2, f), Limits: limits.Limits{MaxIdPRequestsPerHost: 1}, FetchTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	<-f.started
	<-f.started // the second, after the first timed out
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.deadlines[1].Sub(f.deadlines[0]); d > 100*time.Millisecond {
		t.Errorf("the queued request's deadline is %s after the first's; want both counted from when they were queued", d)
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
