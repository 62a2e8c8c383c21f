package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

func numCPU() int { return runtime.GOMAXPROCS(0) }

func goVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.GoVersion
	}
	return runtime.Version()
}

func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
}

// dialFrom is dial from a source address of its own in 127.0.0.0/8 (i
// picks it), so that many connections look like many clients: the broker
// caps open streams per peer IP (512).
func dialFrom(addr string, i int) (*grpc.ClientConn, error) {
	local := &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+i/250), byte(1+i%250))}
	d := net.Dialer{LocalAddr: local}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
}

// callerCtx adds the bench caller's API key in the deployed configuration.
func callerCtx(ctx context.Context, deployed bool) context.Context {
	if !deployed {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
}

// setup starts an IdP and a broker with tenants t0…t(n-1).
func setup(ctx context.Context, o options, deployed bool, tenants int, latency time.Duration, streamsPerConn int) (*idp, *brokerProc, error) {
	p, err := startIdP(latency, time.Hour)
	if err != nil {
		return nil, nil, err
	}
	b, err := startBroker(ctx, o.bin, brokerSpec{deployed: deployed, tenants: tenants, tenantsDir: o.tenantsDir, tokenURL: p.tokenURL(), streamsPerConn: streamsPerConn, pprof: o.profile != ""})
	if err != nil {
		p.close()
		return nil, nil, err
	}
	return p, b, nil
}

// waitToken polls GetToken until tenant t0 has a token.
func waitToken(ctx context.Context, c tbv1.TokenBrokerServiceClient, scopes []string) (*tbv1.Token, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := c.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: "t0", Scopes: scopes})
		if err == nil {
			return r.GetToken(), nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no token for t0: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fingerprint(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:])
}

func scenarioHit(ctx context.Context, o options) error {
	bare, err := startFloor(ctx)
	if err != nil {
		return err
	}
	defer bare.stop()
	for _, deployed := range []bool{true, false} {
		mode := "open mode (no callers), audit to a file, log level info"
		if deployed {
			mode = "deployed (one API-key caller, audit to a file, log level info)"
		}
		p, b, err := setup(ctx, o, deployed, 1, 0, 0)
		if err != nil {
			return err
		}
		label := map[bool]string{true: "deployed", false: "open"}[deployed]
		err = hitRounds(callerCtx(ctx, deployed), o, b, bare, mode, label)
		if err == nil && o.ghz != "" {
			err = ghzRounds(ctx, o, b, bare, deployed, label)
		}
		b.stop()
		p.close()
		if err != nil {
			return err
		}
	}
	return nil
}

// The three calls of a hit round: the bare grpc-go floor's Check, the
// broker's own Check (its whole interceptor chain, no work) and GetToken.
var hitCalls = []string{"bare", "check", "gettoken"}

func hitRounds(ctx context.Context, o options, b *brokerProc, bare *floorProc, mode, label string) error {
	cc, err := dial(b.addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	bc, err := dial(bare.addr)
	if err != nil {
		return err
	}
	defer bc.Close()
	tb := tbv1.NewTokenBrokerServiceClient(cc)
	if _, err := waitToken(ctx, tb, nil); err != nil {
		return err
	}
	check := func(h healthpb.HealthClient) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := h.Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}
	}
	req := &tbv1.GetTokenRequest{Tenant: "t0"}
	calls := map[string]func(context.Context) error{
		"bare":  check(healthpb.NewHealthClient(bc)),
		"check": check(healthpb.NewHealthClient(cc)),
		"gettoken": func(ctx context.Context) error {
			_, err := tb.GetToken(ctx, req)
			return err
		},
	}
	// Warm every path (connections, pools, caches).
	for _, name := range hitCalls {
		closedLoop(ctx, o.conc, o.dur/5, calls[name])
	}
	fmt.Printf("\n== hit: %s; c=%d, %s per run, %d rounds\n", mode, o.conc, o.dur, o.rounds)
	return hitTable(o, label, "hit", func(round int, name string) (run, error) {
		if round > 0 || o.profile == "" {
			return withCPU(serverPID(b, bare, name), func() (run, error) { return closedLoop(ctx, o.conc, o.dur, calls[name]), nil })
		}
		// The first round also records the server's CPU profile.
		cpuProfile := b.cpuProfile
		if name == "bare" {
			cpuProfile = bare.cpuProfile
		}
		prof := cpuProfile(ctx, o, "hit-"+label+"-"+name, o.dur*4/5)
		r, _ := withCPU(serverPID(b, bare, name), func() (run, error) { return closedLoop(ctx, o.conc, o.dur, calls[name]), nil })
		if err := <-prof; err != nil {
			fmt.Fprintln(os.Stderr, "tbload: profile:", err)
		}
		return r, nil
	})
}

// hitTable runs o.rounds rounds of the hitCalls, in an order that rotates
// from round to round, and prints each round and the ratios' summary:
// GetToken and the broker's Check against the bare floor, and GetToken
// against the broker's Check.
func hitTable(o options, label, tool string, measure func(round int, name string) (run, error)) error {
	ratios := map[string][]float64{}
	for i := range o.rounds {
		got := map[string]run{}
		for k := range hitCalls {
			name := hitCalls[(i+k)%len(hitCalls)]
			r, err := measure(i, name)
			if err != nil {
				return err
			}
			if r.errs > 0 {
				return fmt.Errorf("%s: %d calls failed, first: %w", name, r.errs, r.firstErr)
			}
			got[name] = r
		}
		f, c, g := got["bare"], got["check"], got["gettoken"]
		fmt.Printf("round %d: bare %7.0f/s p99 %-8s | Check %7.0f/s p99 %-8s | GetToken %7.0f/s p50 %-8s p99 %-8s | GetToken/bare %.2fx p99 %.2fx, Check/bare %.2fx, GetToken/Check %.2fx\n",
			i+1, f.rps, f.p99.Round(time.Microsecond), c.rps, c.p99.Round(time.Microsecond), g.rps, g.p50.Round(time.Microsecond), g.p99.Round(time.Microsecond),
			g.rps/f.rps, float64(g.p99)/float64(f.p99), c.rps/f.rps, g.rps/c.rps)
		ratios["get"] = append(ratios["get"], g.rps/f.rps)
		ratios["getp99"] = append(ratios["getp99"], float64(g.p99)/float64(f.p99))
		ratios["check"] = append(ratios["check"], c.rps/f.rps)
		ratios["getcheck"] = append(ratios["getcheck"], g.rps/c.rps)
		ratios["getcheckp99"] = append(ratios["getcheckp99"], float64(g.p99)/float64(c.p99))
		fmt.Printf("         server CPU per call: bare %5.1fµs | Check %5.1fµs | GetToken %5.1fµs | Check/bare %.2fx, GetToken/bare %.2fx\n",
			micros(f.cpuPerCall()), micros(c.cpuPerCall()), micros(g.cpuPerCall()),
			float64(c.cpuPerCall())/float64(f.cpuPerCall()), float64(g.cpuPerCall())/float64(f.cpuPerCall()))
		ratios["cpucheck"] = append(ratios["cpucheck"], float64(c.cpuPerCall())/float64(f.cpuPerCall()))
		ratios["cpuget"] = append(ratios["cpuget"], float64(g.cpuPerCall())/float64(f.cpuPerCall()))
	}
	fmt.Printf("RESULT %s %-8s GetToken/bare req/s median %.2fx min %.2fx (target >= 0.80x); p99 median %.2fx max %.2fx (target <= 1.30x)\n",
		tool, label, median(ratios["get"]), slices.Min(ratios["get"]), median(ratios["getp99"]), slices.Max(ratios["getp99"]))
	fmt.Printf("RESULT %s %-8s Check/bare req/s median %.2fx min %.2fx (target >= 0.90x)\n",
		tool, label, median(ratios["check"]), slices.Min(ratios["check"]))
	fmt.Printf("RESULT %s %-8s GetToken/Check req/s median %.2fx min %.2fx; p99 median %.2fx max %.2fx\n",
		tool, label, median(ratios["getcheck"]), slices.Min(ratios["getcheck"]), median(ratios["getcheckp99"]), slices.Max(ratios["getcheckp99"]))
	fmt.Printf("RESULT %s %-8s server CPU per call vs bare: Check median %.2fx, GetToken median %.2fx\n",
		tool, label, median(ratios["cpucheck"]), median(ratios["cpuget"]))
	return nil
}

func scenarioWatch(ctx context.Context, o options) error {
	spc := o.streamsPerConn
	nconn := (o.streams + spc - 1) / spc
	p, err := startIdP(0, time.Hour)
	if err != nil {
		return err
	}
	defer p.close()
	// pprof always: a forced GC gives the live heap of the idle streams.
	b, err := startBroker(ctx, o.bin, brokerSpec{deployed: true, tenants: 1, tokenURL: p.tokenURL(), streamsPerConn: spc, pprof: true})
	if err != nil {
		return err
	}
	defer b.stop()
	ctx = callerCtx(ctx, true)
	fmt.Printf("\n== watch: %d WatchToken streams over %d connections (%d per connection, one source address each), deployed configuration\n", o.streams, nconn, spc)
	first, err := dial(b.addr)
	if err != nil {
		return err
	}
	defer first.Close()
	tb := tbv1.NewTokenBrokerServiceClient(first)
	tok, err := waitToken(ctx, tb, nil)
	if err != nil {
		return err
	}
	m0, err := b.idleMemory(ctx)
	if err != nil {
		return err
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		t0      atomic.Int64 // unix nanos of the refresh trigger
		opened  sync.WaitGroup
		arrived sync.WaitGroup
		mu      sync.Mutex
		lats    = make([]time.Duration, 0, o.streams)
		failed  atomic.Int64
		firstE  atomic.Pointer[error]
	)
	fail := func(err error) {
		failed.Add(1)
		firstE.CompareAndSwap(nil, &err)
	}
	conns := make([]*grpc.ClientConn, nconn)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	// Connections open a few at a time, each with all its streams, as
	// clients would arrive: a thousand connections opening at once each
	// with a hundred streams starve the broker's TLS-less handshakes past
	// their timeout (limits.handshake_timeout) on a 2-core machine.
	start := time.Now()
	wave := make(chan struct{}, 16)
	for ci := range nconn {
		cc, err := dialFrom(b.addr, ci)
		if err != nil {
			return err
		}
		conns[ci] = cc
		c := tbv1.NewTokenBrokerServiceClient(cc)
		n := min(spc, o.streams-ci*spc)
		var connOpen sync.WaitGroup
		connOpen.Add(n)
		opened.Add(n)
		arrived.Add(n)
		select {
		case wave <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		go func() { connOpen.Wait(); <-wave }()
		for range n {
			go func() {
				defer arrived.Done()
				st, err := c.WatchToken(sctx, &tbv1.WatchTokenRequest{Tenant: "t0"})
				if err != nil {
					fail(err)
					opened.Done()
					connOpen.Done()
					return
				}
				m, err := st.Recv()
				opened.Done()
				connOpen.Done()
				if err != nil {
					fail(err)
					return
				}
				v0 := m.GetToken().GetVersion()
				for {
					m, err := st.Recv()
					if err != nil {
						if sctx.Err() == nil {
							fail(err)
						}
						return
					}
					if m.GetToken().GetVersion() > v0 {
						d := time.Duration(time.Now().UnixNano() - t0.Load())
						mu.Lock()
						lats = append(lats, d)
						mu.Unlock()
						return
					}
				}
			}()
		}
	}
	opened.Wait()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d streams failed, first: %w", n, *firstE.Load())
	}
	openTime := time.Since(start)
	m1, err := b.idleMemory(ctx)
	if err != nil {
		return err
	}
	b.snapshot(ctx, o, "watch")

	// The refresh: one InvalidateToken, so the broker fetches a new token
	// and pushes it to every stream. Its CPU profile with -profile.
	var prof <-chan error
	if o.profile != "" {
		prof = b.cpuProfile(ctx, o, "watch-refresh", 6*time.Second)
		time.Sleep(200 * time.Millisecond) // let the profile start first
	}
	cpu0 := b.cpuTime()
	t0.Store(time.Now().UnixNano())
	if _, err := tb.InvalidateToken(ctx, &tbv1.InvalidateTokenRequest{Tenant: "t0", TokenSha256: fingerprint(tok.GetAccessToken())}); err != nil {
		return fmt.Errorf("invalidate: %w", err)
	}
	done := make(chan struct{})
	go func() { arrived.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cancel()
		<-done
	}
	cpu := b.cpuTime() - cpu0
	if prof != nil {
		if err := <-prof; err != nil {
			fmt.Fprintln(os.Stderr, "tbload: profile:", err)
		}
	}
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d streams failed, first: %w", n, *firstE.Load())
	}
	slices.Sort(lats)
	if len(lats) != o.streams {
		return fmt.Errorf("the refresh reached %d of %d streams in 60s", len(lats), o.streams)
	}
	per := func(a, b int64) float64 { return float64(b-a) / 1024 / float64(o.streams) }
	fmt.Printf("opened in %s; RSS settled %s after the streams opened (two readings 1 s apart within 1%%, at most 10 s)%s\n",
		openTime.Round(time.Millisecond), m1.settle.Round(time.Millisecond), map[bool]string{true: "", false: " -- NOT SETTLED"}[m1.settled])
	fmt.Printf("broker RSS %s -> %s, live heap after a forced GC %s -> %s, goroutine stacks %s -> %s, heap in use (live + garbage) %s -> %s, goroutines %d -> %d\n",
		mib(m0.rss), mib(m1.rss), mib(m0.live), mib(m1.live), mib(m0.stacks), mib(m1.stacks), mib(m0.heapInuse), mib(m1.heapInuse), m0.goroutines, m1.goroutines)
	fmt.Printf("per idle stream: RSS %.1f KiB = live heap %.1f KiB + stacks %.1f KiB (%.1f goroutines) + heap headroom and runtime %.1f KiB\n",
		per(m0.rss, m1.rss), per(m0.live, m1.live), per(m0.stacks, m1.stacks), float64(m1.goroutines-m0.goroutines)/float64(o.streams),
		per(m0.rss, m1.rss)-per(m0.live, m1.live)-per(m0.stacks, m1.stacks))
	fmt.Printf("refresh: the broker used %s of CPU until the last stream had it, %.1f µs per stream (this process, 2 cores shared, receives meanwhile)\n",
		cpu, float64(cpu.Microseconds())/float64(o.streams))
	fmt.Printf("RESULT watch streams=%d conns=%d refresh reached all: p50 %s p99 %s max %s (target max <= 1s); per idle stream: RSS %.1f KiB (target <= 13 KiB), live heap %.1f KiB\n",
		o.streams, nconn, pct(lats, 0.5).Round(time.Millisecond), pct(lats, 0.99).Round(time.Millisecond), lats[len(lats)-1].Round(time.Millisecond),
		per(m0.rss, m1.rss), per(m0.live, m1.live))
	return nil
}

func heapPer(h0, h1 int64, n int) float64 {
	if h0 < 0 || h1 < 0 {
		return -1
	}
	return float64(h1-h0) / 1024 / float64(n)
}

func mib(n int64) string {
	if n < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// allReady pages through ListTenants and reports whether every tenant's
// default token is READY.
func allReady(ctx context.Context, c tbv1.TokenBrokerServiceClient, want int) (int, error) {
	ready, seen, page := 0, 0, ""
	for {
		r, err := c.ListTenants(ctx, &tbv1.ListTenantsRequest{PageSize: 1000, PageToken: page})
		if err != nil {
			return 0, err
		}
		for _, t := range r.GetTenants() {
			seen++
			if t.GetStatus().GetState() == tbv1.TokenState_TOKEN_STATE_READY {
				ready++
			}
		}
		if page = r.GetNextPageToken(); page == "" {
			break
		}
	}
	if seen != want {
		return ready, fmt.Errorf("ListTenants shows %d tenants, want %d", seen, want)
	}
	return ready, nil
}

func scenarioTenants(ctx context.Context, o options) error {
	layout := "the config file"
	if o.tenantsDir {
		layout = "a tenants_dir, one file each"
	}
	fmt.Printf("\n== tenants: %d tenants in %s, one token endpoint with %s latency, deployed configuration\n", o.tenants, layout, o.idpLatency)
	ctx = callerCtx(ctx, true)
	// Baseline: the same broker with one tenant.
	p1, b1, err := setup(ctx, o, true, 1, o.idpLatency, 0)
	if err != nil {
		return err
	}
	cc1, err := dial(b1.addr)
	if err == nil {
		_, err = waitToken(ctx, tbv1.NewTokenBrokerServiceClient(cc1), nil)
		_ = cc1.Close()
	}
	time.Sleep(2 * time.Second)
	rss1, heap1 := b1.rss(), b1.liveHeap()
	b1.stop()
	p1.close()
	if err != nil {
		return err
	}

	p, b, err := setup(ctx, o, true, o.tenants, o.idpLatency, 0)
	if err != nil {
		return err
	}
	defer p.close()
	defer b.stop()
	cc, err := dial(b.addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	c := tbv1.NewTokenBrokerServiceClient(cc)
	var readyAt, readyServing time.Duration
	deadline := time.Now().Add(120 * time.Second)
	// The broker's /readyz (one pass over its tenants) tells when every
	// tenant has settled, and is asked only once the IdP was asked for
	// every tenant; a full ListTenants, which confirms that all are READY,
	// makes the broker build and sort every tenant's state for each page
	// of 1,000: at 50,000 tenants, seconds that would compete with the
	// ramp it measures.
	for {
		for p.total.Load() < int64(o.tenants) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if b.readyz(ctx) {
			readyAt, readyServing = time.Since(b.start), time.Since(b.serving)
			n, err := allReady(ctx, c, o.tenants)
			if err != nil {
				return err
			}
			if n == o.tenants {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not every tenant READY after 120s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	first, last := p.window()
	time.Sleep(2 * time.Second)
	rssT, heapT := b.rss(), b.liveHeap()
	b.snapshot(ctx, o, "tenants")
	fmt.Printf("IdP: %d requests, peak %d concurrent, answers from %s to %s after broker start (served at %s); broker RSS 1 tenant %s, %d tenants %s; live heap %s -> %s\n",
		p.total.Load(), p.peak.Load(), first.Sub(b.start).Round(time.Millisecond), last.Sub(b.start).Round(time.Millisecond), b.serving.Sub(b.start).Round(time.Millisecond),
		mib(rss1), o.tenants, mib(rssT), mib(heap1), mib(heapT))
	fmt.Printf("RESULT tenants=%d all READY %s after broker start, %s after it served (target <= 5s at 10000, <= 25s at 50000); per idle tenant: RSS %.1f KiB (target <= 8 KiB), live heap %.1f KiB; peak concurrent IdP requests %d\n",
		o.tenants, readyAt.Round(time.Millisecond), readyServing.Round(time.Millisecond), float64(rssT-rss1)/1024/float64(o.tenants-1), heapPer(heap1, heapT, o.tenants-1), p.peak.Load())
	return nil
}

func scenarioCoalesce(ctx context.Context, o options) error {
	fmt.Printf("\n== coalesce: %d concurrent calls, deployed configuration, IdP latency 100ms\n", o.coalesceN)
	p, b, err := setup(ctx, o, true, 1, 100*time.Millisecond, o.coalesceN)
	if err != nil {
		return err
	}
	defer p.close()
	defer b.stop()
	ctx = callerCtx(ctx, true)
	nconn := (o.coalesceN + 999) / 1000
	clients := make([]tbv1.TokenBrokerServiceClient, nconn)
	for i := range clients {
		cc, err := dial(b.addr)
		if err != nil {
			return err
		}
		defer cc.Close()
		clients[i] = tbv1.NewTokenBrokerServiceClient(cc)
	}
	if _, err := waitToken(ctx, clients[0], nil); err != nil {
		return err
	}
	// Connect every client before the burst.
	for _, c := range clients {
		if _, err := c.ListTenants(ctx, &tbv1.ListTenantsRequest{}); err != nil {
			return err
		}
	}
	scopes := []string{"cold"}
	burst := func(call func(tbv1.TokenBrokerServiceClient) (*tbv1.Token, error)) (map[string]int, error) {
		var wg sync.WaitGroup
		gate := make(chan struct{})
		var mu sync.Mutex
		versions := map[string]int{}
		var errs []error
		for i := range o.coalesceN {
			c := clients[i%nconn]
			wg.Go(func() {
				<-gate
				t, err := call(c)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				versions[fingerprint(t.GetAccessToken())[:12]]++
			})
		}
		close(gate)
		wg.Wait()
		if len(errs) > 0 {
			return nil, fmt.Errorf("%d calls failed, first: %w", len(errs), errs[0])
		}
		return versions, nil
	}
	before := p.requests("cold")
	toks, err := burst(func(c tbv1.TokenBrokerServiceClient) (*tbv1.Token, error) {
		r, err := c.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: "t0", Scopes: scopes})
		return r.GetToken(), err
	})
	if err != nil {
		return err
	}
	getReqs := p.requests("cold") - before
	cur, err := clients[0].GetToken(ctx, &tbv1.GetTokenRequest{Tenant: "t0", Scopes: scopes})
	if err != nil {
		return err
	}
	fp := fingerprint(cur.GetToken().GetAccessToken())
	before = p.requests("cold")
	inv, err := burst(func(c tbv1.TokenBrokerServiceClient) (*tbv1.Token, error) {
		r, err := c.InvalidateToken(ctx, &tbv1.InvalidateTokenRequest{Tenant: "t0", Scopes: scopes, TokenSha256: fp})
		return r.GetToken(), err
	})
	if err != nil {
		return err
	}
	invReqs := p.requests("cold") - before
	fmt.Printf("RESULT coalesce n=%d: GetToken on a cold key -> %d IdP request(s), %d distinct token(s); InvalidateToken of one fingerprint -> %d IdP request(s), %d distinct token(s) (target 1 and 1)\n",
		o.coalesceN, getReqs, len(toks), invReqs, len(inv))
	if getReqs != 1 || invReqs != 1 {
		return errors.New("coalescing is not exact")
	}
	return nil
}
