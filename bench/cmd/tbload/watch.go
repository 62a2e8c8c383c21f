package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// watchRun is the watch scenario's streams and what they report.
type watchRun struct {
	o       options
	nconn   int
	sctx    context.Context // the streams'; cancel ends them
	cancel  context.CancelFunc
	conns   []*grpc.ClientConn
	t0      atomic.Int64 // unix nanos of the refresh trigger
	opened  sync.WaitGroup
	arrived sync.WaitGroup
	mu      sync.Mutex
	lats    []time.Duration
	failed  atomic.Int64
	firstE  atomic.Pointer[error]
}

func scenarioWatch(ctx context.Context, o options) error {
	spc := o.streamsPerConn
	w := &watchRun{o: o, nconn: (o.streams + spc - 1) / spc, lats: make([]time.Duration, 0, o.streams)}
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
	fmt.Printf("\n== watch: %d WatchToken streams over %d connections (%d per connection, one source address each), deployed configuration\n", o.streams, w.nconn, spc)
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
	w.sctx, w.cancel = context.WithCancel(ctx)
	defer func() {
		w.cancel()
		for _, c := range w.conns {
			_ = c.Close()
		}
	}()
	start := time.Now()
	if err := w.fanOut(ctx, b.addr); err != nil {
		return err
	}
	openTime := time.Since(start)
	m1, err := b.idleMemory(ctx)
	if err != nil {
		return err
	}
	b.snapshot(ctx, o, "watch")
	cpu, err := w.refresh(ctx, b, tb, tok)
	if err != nil {
		return err
	}
	w.report(openTime, m0, m1, cpu)
	return nil
}

func (w *watchRun) fail(err error) {
	w.failed.Add(1)
	w.firstE.CompareAndSwap(nil, &err)
}

func (w *watchRun) err() error {
	if n := w.failed.Load(); n > 0 {
		return fmt.Errorf("%d streams failed, first: %w", n, *w.firstE.Load())
	}
	return nil
}

// fanOut opens the streams and returns once each has its first message.
// Connections open a few at a time, each with all its streams, as clients
// would arrive: a thousand at once starve the broker's handshakes past
// limits.handshake_timeout on a 2-core machine.
func (w *watchRun) fanOut(ctx context.Context, addr string) error {
	spc := w.o.streamsPerConn
	wave := make(chan struct{}, 16)
	for ci := range w.nconn {
		cc, err := dialFrom(addr, ci)
		if err != nil {
			return err
		}
		w.conns = append(w.conns, cc)
		c := tbv1.NewTokenBrokerServiceClient(cc)
		n := min(spc, w.o.streams-ci*spc)
		var connOpen sync.WaitGroup
		connOpen.Add(n)
		w.opened.Add(n)
		w.arrived.Add(n)
		select {
		case wave <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		go func() { connOpen.Wait(); <-wave }()
		for range n {
			go w.stream(c, &connOpen)
		}
	}
	w.opened.Wait()
	return w.err()
}

// stream watches t0 until a newer token version arrives, and records when.
func (w *watchRun) stream(c tbv1.TokenBrokerServiceClient, connOpen *sync.WaitGroup) {
	defer w.arrived.Done()
	st, err := c.WatchToken(w.sctx, &tbv1.WatchTokenRequest{Tenant: "t0"})
	var m *tbv1.WatchTokenResponse
	if err == nil {
		m, err = st.Recv()
	}
	if err != nil {
		w.fail(err) // before Done: fanOut checks failures once all opened
	}
	w.opened.Done()
	connOpen.Done()
	if err != nil {
		return
	}
	v0 := m.GetToken().GetVersion()
	for {
		m, err := st.Recv()
		if err != nil {
			if w.sctx.Err() == nil {
				w.fail(err)
			}
			return
		}
		if m.GetToken().GetVersion() > v0 {
			d := time.Duration(time.Now().UnixNano() - w.t0.Load())
			w.mu.Lock()
			w.lats = append(w.lats, d)
			w.mu.Unlock()
			return
		}
	}
}

// refresh invalidates tok, so the broker fetches a new token and pushes it
// to every stream, and returns the broker's CPU time until all had it (its
// CPU profile with -profile).
func (w *watchRun) refresh(ctx context.Context, b *brokerProc, tb tbv1.TokenBrokerServiceClient, tok *tbv1.Token) (time.Duration, error) {
	var prof <-chan error
	if w.o.profile != "" {
		prof = b.cpuProfile(ctx, w.o, "watch-refresh", 6*time.Second)
		time.Sleep(200 * time.Millisecond) // let the profile start first
	}
	cpu0 := b.cpuTime()
	w.t0.Store(time.Now().UnixNano())
	if _, err := tb.InvalidateToken(ctx, &tbv1.InvalidateTokenRequest{Tenant: "t0", TokenSha256: fingerprint(tok.GetAccessToken())}); err != nil {
		return 0, fmt.Errorf("invalidate: %w", err)
	}
	done := make(chan struct{})
	go func() { w.arrived.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		w.cancel()
		<-done
	}
	cpu := b.cpuTime() - cpu0
	if prof != nil {
		if err := <-prof; err != nil {
			fmt.Fprintln(os.Stderr, "tbload: profile:", err)
		}
	}
	if err := w.err(); err != nil {
		return 0, err
	}
	slices.Sort(w.lats)
	if len(w.lats) != w.o.streams {
		return 0, fmt.Errorf("the refresh reached %d of %d streams in 60s", len(w.lats), w.o.streams)
	}
	return cpu, nil
}

// report prints the memory per idle stream and the refresh's latencies.
func (w *watchRun) report(openTime time.Duration, m0, m1 memory, cpu time.Duration) {
	n, lats := w.o.streams, w.lats
	per := func(a, b int64) float64 { return float64(b-a) / 1024 / float64(n) }
	fmt.Printf("opened in %s; RSS settled %s after the streams opened (two readings 1 s apart within 1%%, at most 10 s)%s\n",
		openTime.Round(time.Millisecond), m1.settle.Round(time.Millisecond), map[bool]string{true: "", false: " -- NOT SETTLED"}[m1.settled])
	fmt.Printf("broker RSS %s -> %s, live heap after a forced GC %s -> %s, goroutine stacks %s -> %s, heap in use (live + garbage) %s -> %s, goroutines %d -> %d\n",
		mib(m0.rss), mib(m1.rss), mib(m0.live), mib(m1.live), mib(m0.stacks), mib(m1.stacks), mib(m0.heapInuse), mib(m1.heapInuse), m0.goroutines, m1.goroutines)
	fmt.Printf("per idle stream: RSS %.1f KiB = live heap %.1f KiB + stacks %.1f KiB (%.1f goroutines) + heap headroom and runtime %.1f KiB\n",
		per(m0.rss, m1.rss), per(m0.live, m1.live), per(m0.stacks, m1.stacks), float64(m1.goroutines-m0.goroutines)/float64(n),
		per(m0.rss, m1.rss)-per(m0.live, m1.live)-per(m0.stacks, m1.stacks))
	fmt.Printf("refresh: the broker used %s of CPU until the last stream had it, %.1f µs per stream (this process, 2 cores shared, receives meanwhile)\n",
		cpu, float64(cpu.Microseconds())/float64(n))
	fmt.Printf("RESULT watch streams=%d conns=%d refresh reached all: p50 %s p99 %s max %s (target max <= 1s); per idle stream: RSS %.1f KiB (target <= 13 KiB), live heap %.1f KiB\n",
		n, w.nconn, pct(lats, 0.5).Round(time.Millisecond), pct(lats, 0.99).Round(time.Millisecond), lats[len(lats)-1].Round(time.Millisecond),
		per(m0.rss, m1.rss), per(m0.live, m1.live))
}
