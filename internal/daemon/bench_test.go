package daemon_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokenbroker/tokenbroker/broker/config"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
)

// The deployed configuration of the load harness (bench/cmd/tbload) in
// one process: one API-key caller, the audit trail in a file, metrics
// on, log level info. A cache hit should cost about what the floor, an
// empty health check on the same server, costs; compare allocs/op and
// CPU profiles side by side:
//
//	go test -run '^$' -bench 'Deployed' -benchmem -count 5 ./internal/daemon/ | benchstat -

func startDeployed(b *testing.B) (context.Context, *daemon.Daemon) {
	return startDeployedWith(b, "")
}

// startDeployedWith is startDeployed with more limits: lines under limits:.
func startDeployedWith(b *testing.B, limits string) (context.Context, *daemon.Daemon) {
	b.Helper()
	client := devidp.NewClient()
	idp, err := devidp.Start(b.Context(), devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { idp.Close() })
	dir := b.TempDir()
	key := brokertest.RandomKey(b)
	if err := os.WriteFile(filepath.Join(dir, "idp.secret"), []byte(client.Secret), 0o600); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "broker.yaml")
	yaml := fmt.Sprintf(`listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
tenants:
  - name: acme
    token_url: %s
    client_id: %s
    client_secret_file: idp.secret
callers:
  - name: bench
    api_key_sha256: %s
    tenants: ["*"]
audit:
  path: audit.log
limits:
  requests_per_second: 1000000
  burst: 1000000
%s`, idp.TokenURL(), client.ID, brokertest.SHA256Hex(key), limits)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil)) // info
	cfg, err := config.LoadWith(path, config.Options{Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	d := brokertest.Run(b, cfg, daemon.Options{Logger: log})
	return brokertest.Bearer(b.Context(), key), d
}

func BenchmarkDeployedGetTokenHit(b *testing.B) {
	ctx, d := startDeployed(b)
	c := apiOf(b, d)
	req := &tbv1.GetTokenRequest{Tenant: "acme"}
	if _, err := c.GetToken(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(25) // 50 concurrent calls on 2 cores, as tbload -c 50
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.GetToken(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDeployedFloor is GetToken's baseline: grpc.health.v1 Check
// on the same server and connection kind.
func BenchmarkDeployedFloor(b *testing.B) {
	ctx, d := startDeployed(b)
	h := healthpb.NewHealthClient(dialOf(b, d))
	req := &healthpb.HealthCheckRequest{}
	b.ReportAllocs()
	b.SetParallelism(25) // 50 concurrent calls on 2 cores, as tbload -c 50
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Check(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDeployedBare is the floor of both: grpc-go with no
// interceptors, limits or options serving the same Check (tbload's bare).
func BenchmarkDeployedBare(b *testing.B) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	h := healthpb.NewHealthClient(dialAddr(b, lis.Addr().String()))
	ctx := brokertest.Bearer(b.Context(), brokertest.RandomKey(b)) // the same header as the others
	req := &healthpb.HealthCheckRequest{}
	b.ReportAllocs()
	b.SetParallelism(25)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Check(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

var watchHeapProfile = flag.String("watch.heapprofile", "",
	"BenchmarkDeployedWatchIdle: write a heap profile here while the streams are open and idle")

// BenchmarkDeployedWatchIdle opens 2,000 WatchToken streams (20
// connections of 100) as deployed and reports what an idle stream costs
// the process (broker and client: see the heap profile for the broker's
// part), after a forced GC:
//
//	go test -run '^$' -bench DeployedWatchIdle -benchtime 1x -memprofilerate 1 ./internal/daemon/ \
//	    -watch.heapprofile /tmp/watch.heap
//	go tool pprof -sample_index=inuse_space -focus 'grpc.\(\*Server\)|http2Server' -top /tmp/watch.heap
func BenchmarkDeployedWatchIdle(b *testing.B) {
	const conns, perConn = 20, 100
	ctx, d := startDeployedWith(b, "  max_streams_per_caller: 1000000\n  max_connections_per_ip: 1000\n")
	var live, stacks float64
	for range b.N {
		b.StopTimer()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		wctx, cancel := context.WithCancel(ctx)
		for range conns {
			c := apiOf(b, d)
			for range perConn {
				s, err := c.WatchToken(wctx, &tbv1.WatchTokenRequest{Tenant: "acme"})
				if err == nil {
					_, err = s.Recv()
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		live += float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / (conns * perConn)
		stacks += float64(int64(after.StackInuse)-int64(before.StackInuse)) / (conns * perConn)
		if *watchHeapProfile != "" {
			f, err := os.Create(*watchHeapProfile)
			if err != nil {
				b.Fatal(err)
			}
			if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
		cancel()
		b.StartTimer()
	}
	b.ReportMetric(live/float64(b.N), "live-B/stream")
	b.ReportMetric(stacks/float64(b.N), "stack-B/stream")
}

func dialOf(tb testing.TB, d *daemon.Daemon) *grpc.ClientConn {
	return dialAddr(tb, d.Addr().String())
}

func dialAddr(tb testing.TB, addr string) *grpc.ClientConn {
	tb.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return cc
}

func apiOf(tb testing.TB, d *daemon.Daemon) tbv1.TokenBrokerServiceClient {
	return tbv1.NewTokenBrokerServiceClient(dialOf(tb, d))
}
