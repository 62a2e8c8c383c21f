package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
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
