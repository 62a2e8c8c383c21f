package reliability

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// Issue 19.2 and 19.3: what may start an identity-provider request while a
// key has no valid token. Callers and watchers are demand for an early
// attempt, at most one per broker.CallerRetryInterval; a Retry-After
// silences every attempt of the key.

// failingStack is a broker behind gRPC whose one tenant, acme, fetches
// through a Front that is in mode from the start, so that no token is
// ever cached before the test switches the Front.
func failingStack(t *testing.T, mode Mode) (*Stack, *Front) {
	t.Helper()
	client := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	front := StartFront(t, idp.URL())
	front.SetMode(mode)
	s := StartStack(t, StackConfig{
		Tenants:      []broker.Tenant{Tenant("acme", front.TokenURL(), client.ID, client.Secret, front.Pool())},
		FetchTimeout: fetchTimeout,
	})
	return s, front
}

// callAt5PerSecond calls GetToken for acme five times a second until the
// test ends or stop is called, and counts the calls and their codes.
func callAt5PerSecond(t *testing.T, s *Stack) (stop func() map[codes.Code]int) {
	ctx, cancel := context.WithCancel(t.Context())
	var mu sync.Mutex
	seen := map[codes.Code]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			_, err := s.Get(ctx, "acme", callTimeout)
			if ctx.Err() != nil {
				return
			}
			mu.Lock()
			seen[status.Code(err)]++
			mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	stop = func() map[codes.Code]int {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestRetryAfterBindsCallers: after an outage long enough to grow the
// backoff past the Retry-After, a 429 with Retry-After: 3 must still
// silence the key for 3 s each time, although callers ask five times a
// second: at most ceil(elapsed/3s)+1 requests.
func TestRetryAfterBindsCallers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 17 s")
	}
	const retryAfter, window = 3 * time.Second, 12 * time.Second
	s, front := failingStack(t, Mode503)
	stop := callAt5PerSecond(t, s)
	// The outage: callers' early attempts (one a second) fail, and each
	// failure doubles the backoff, to well past the Retry-After.
	for deadline := time.Now().Add(20 * time.Second); front.Requests() < 5; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d requests during the outage", front.Requests())
		}
	}
	front.SetRetryAfter(retryAfter)
	front.SetMode(Mode429)
	req0, start := front.Requests(), time.Now()
	time.Sleep(window) // the measured window
	n, elapsed := front.Requests()-req0, time.Since(start)
	seen := stop()
	bound := int64(math.Ceil(elapsed.Seconds()/retryAfter.Seconds())) + 1
	t.Logf("callers at 5/s: %d IdP requests in %s under 429 Retry-After %s (bound %d); call codes %v", n, elapsed.Round(100*time.Millisecond), retryAfter, bound, seen)
	if n > bound {
		t.Errorf("%d IdP requests in %s under Retry-After %s, want at most %d", n, elapsed.Round(100*time.Millisecond), retryAfter, bound)
	}
	if seen[codes.OK] > 0 || seen[codes.Unavailable] == 0 {
		t.Errorf("call codes %v, want UNAVAILABLE only", seen)
	}
}

// TestWatchersAloneDriveRecovery: a tenant with only WatchToken clients
// recovers when the IdP does, not when its backoff timer fires: a watched
// key without a valid token retries at most once per
// CallerRetryInterval, as a caller's request would make it.
func TestWatchersAloneDriveRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 6 s")
	}
	s, front := failingStack(t, Mode503)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := s.API.WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan time.Time, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			if m.GetStatus().GetState() == tbv1.TokenState_TOKEN_STATE_READY {
				ready <- time.Now()
				return
			}
		}
	}()
	// Four failed attempts: without watchers as demand, the backoff
	// timer's next one would be about 8 s away.
	began := time.Now()
	for deadline := began.Add(20 * time.Second); front.Requests() < 4; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d requests while failing", front.Requests())
		}
	}
	failing := time.Since(began)
	front.SetMode(ModePass)
	cleared := time.Now()
	var took time.Duration
	select {
	case at := <-ready:
		took = at.Sub(cleared)
	case <-time.After(15 * time.Second): // a bound for a broken test
		took = -1
	}
	t.Logf("4 failed attempts in %s with only a watcher; READY %s after the IdP recovered", failing.Round(10*time.Millisecond), took.Round(10*time.Millisecond))
	if took < 0 || took > broker.CallerRetryInterval+time.Second {
		t.Errorf("READY %s after the IdP recovered (-1: not within 15 s), want within %s", took, broker.CallerRetryInterval+time.Second)
	}
	if perSecond := float64(4) / failing.Seconds(); failing < 3*broker.CallerRetryInterval*4/5 {
		t.Errorf("4 attempts in %s (%.1f/s): the watcher drove the IdP faster than once per %s", failing, perSecond, broker.CallerRetryInterval)
	}
}
