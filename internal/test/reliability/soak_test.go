package reliability

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// Soak parameters.
const (
	soakTenants  = 50
	soakLifetime = 60 * time.Second
	soakFault    = 5 * time.Second // each fault, then as long healthy
	soakRate     = 100             // GetToken calls per second, over all tenants
	soakFetch    = 2 * time.Second
)

// usage is a process's resource figures.
type usage struct {
	goroutines int
	heap       uint64 // live heap after a GC
	rss        uint64 // resident set, from /proc (0 if unavailable)
}

func measure() usage {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{goroutines: runtime.NumGoroutine(), heap: ms.HeapAlloc, rss: rss()}
}

func (u usage) String() string {
	return fmt.Sprintf("goroutines %d, heap %.1f MiB, RSS %.1f MiB", u.goroutines, mib(u.heap), mib(u.rss))
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// rss reads VmRSS from /proc/self/status (Linux).
func rss() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestSoak runs 50 tenants with 60-s tokens through a fault front whose
// faults rotate (each for 5 s, then 5 s healthy), under a steady GetToken
// load and one watcher per tenant; at the start of each fault every
// tenant's token is reported rejected (InvalidateToken), so that each
// fault meets a refresh of every tenant. It is opt-in: TOKENBROKER_SOAK=1, for
// TOKENBROKER_SOAK_DURATION (default 10m). No call may fail (a token is
// always cached: faults are shorter than the refresh lead), and
// goroutines and heap must return to their starting level.
func TestSoak(t *testing.T) {
	if os.Getenv("TOKENBROKER_SOAK") != "1" {
		t.Skip("opt-in: TOKENBROKER_SOAK=1 [TOKENBROKER_SOAK_DURATION=10m]")
	}
	duration := 10 * time.Minute
	if v := os.Getenv("TOKENBROKER_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("TOKENBROKER_SOAK_DURATION=%q: want a positive Go duration such as 2m", v)
		}
		duration = d
	}

	client := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}, TokenLifetime: soakLifetime})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	front := StartFront(t, idp.URL())
	front.SetRetryAfter(2 * time.Second)
	tenants := make([]broker.Tenant, soakTenants)
	names := make([]string, soakTenants)
	for i := range tenants {
		names[i] = fmt.Sprintf("t%02d", i)
		tenants[i] = Tenant(names[i], front.TokenURL(), client.ID, client.Secret, front.Pool())
	}
	s := StartStack(t, StackConfig{Tenants: tenants, FetchTimeout: soakFetch})
	for _, n := range names {
		if _, err := s.Get(t.Context(), n, 10*time.Second); err != nil {
			t.Fatalf("tenant %s: first token: %v", n, err)
		}
	}

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()

	// One watcher per tenant, re-opened if it ends.
	var updates, watchErrs atomic.Int64
	for _, n := range names {
		wg.Go(func() {
			for ctx.Err() == nil {
				stream, err := s.API.WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: n})
				if err != nil {
					select {
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
					continue
				}
				for {
					if _, err := stream.Recv(); err != nil {
						if ctx.Err() == nil {
							watchErrs.Add(1)
						}
						break
					}
					updates.Add(1)
				}
			}
		})
	}

	// Steady GetToken load over random tenants.
	var calls, failures atomic.Int64
	var failMu sync.Mutex
	failCodes := map[string]int{}
	wg.Go(func() {
		tick := time.NewTicker(time.Second / soakRate)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			n := names[rand.N(len(names))]
			wg.Go(func() {
				_, err := s.Get(ctx, n, 10*time.Second)
				calls.Add(1)
				if err != nil && ctx.Err() == nil {
					failures.Add(1)
					st := status.Convert(err)
					failMu.Lock()
					failCodes[st.Code().String()+": "+st.Message()]++
					failMu.Unlock()
				}
			})
		}
	})

	settle := time.NewTimer(2 * time.Second)
	<-settle.C
	start := measure()
	t.Logf("start: %s", start)

	// Rotate the faults: soakFault of each mode, then soakFault healthy.
	began := time.Now()
	modes := map[Mode]int{}
	var invalidations, invalidateErrs atomic.Int64
	var faultReqs int64
	for i := range max(1, int(duration/(2*soakFault))) {
		m := FaultModes[i%len(FaultModes)]
		modes[m]++
		before := front.Requests()
		front.SetMode(m)
		phase := time.NewTimer(soakFault)
		// A resource server rejects every tenant's token now, so that
		// each fault meets 50 refreshes (forced ones), not only those
		// that fall into it by chance.
		var forced sync.WaitGroup
		for _, n := range names {
			forced.Go(func() {
				tok, err := s.Get(ctx, n, 10*time.Second)
				if err != nil {
					return // counted by the load
				}
				ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				invalidations.Add(1)
				_, err = s.API.InvalidateToken(ictx, &tbv1.InvalidateTokenRequest{Tenant: n, TokenSha256: broker.Fingerprint(tok.GetAccessToken())})
				if err != nil {
					invalidateErrs.Add(1)
				}
			})
		}
		forced.Wait()
		<-phase.C
		front.SetMode(ModePass)
		faultReqs += front.Requests() - before
		if m == ModeInvalidClient {
			// The operator fixes the credentials and reloads.
			if err := s.Broker.SetTenants(tenants); err != nil {
				t.Fatal(err)
			}
		}
		phase.Reset(soakFault)
		<-phase.C
		t.Logf("%s: after %-24s calls %d, failed %d, watch updates %d; %s",
			time.Since(began).Round(time.Second), m, calls.Load(), failures.Load(), updates.Load(), measure())
	}
	final := measure()
	stop()
	wg.Wait()

	t.Logf("end:   %s", final)
	t.Logf("%d GetToken calls, %d failed; %d watch updates, %d watch streams ended early; %d forced refreshes (InvalidateToken) during faults, %d of them failed (expected: the IdP was failing); %d IdP requests (%d during faults); fault phases: %v",
		calls.Load(), failures.Load(), updates.Load(), watchErrs.Load(), invalidations.Load(), invalidateErrs.Load(), front.Requests(), faultReqs, modes)
	if faultReqs == 0 {
		t.Error("no IdP request met a fault: the soak proved nothing")
	}
	if failures.Load() != 0 {
		t.Errorf("%d of %d calls failed though a valid token was always cached: %v", failures.Load(), calls.Load(), failCodes)
	}
	if final.goroutines > start.goroutines+50 {
		t.Errorf("goroutines grew from %d to %d", start.goroutines, final.goroutines)
	}
	if final.heap > start.heap*3/2+16<<20 {
		t.Errorf("live heap grew from %.1f MiB to %.1f MiB", mib(start.heap), mib(final.heap))
	}
}
