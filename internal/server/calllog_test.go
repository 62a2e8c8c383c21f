package server_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/server"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// TestCallLogFloodIsRateLimited: a client looping on a failing call (here
// NOT_FOUND, logged at info) writes a bounded number of request-log lines,
// and the next line says how many were dropped.
func TestCallLogFloodIsRateLimited(t *testing.T) {
	f := brokertest.Start(t)
	var logs logtest.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv := server.New(server.Config{Broker: f.Broker, Logger: log})
	api := serveOnLoopback(t, srv)

	const calls = 500
	start := time.Now()
	for range calls {
		_, err := api.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "no-such-tenant"})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("GetToken of a missing tenant: %v, want NOT_FOUND", err)
		}
	}
	elapsed := time.Since(start)
	lines := strings.Count(logs.String(), `"msg":"finished call"`)
	// The burst, plus the rate over the elapsed time, plus one for rounding.
	bound := 20 + int(5*elapsed.Seconds()) + 1
	if lines == 0 || lines > bound {
		t.Errorf("%d failing calls in %s wrote %d request-log lines, want 1..%d", calls, elapsed, lines, bound)
	}
	// Once the bucket refills (5 a second), the next line that gets through
	// reports the dropped ones; keep calling until one does.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), `"suppressed_before":`); {
		if time.Now().After(deadline) {
			t.Fatal("no line reports the suppressed ones")
		}
		_, _ = api.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "no-such-tenant"})
	}
}

// TestRefusedKeysLoggedOncePerSecond: calls refused before their request
// (an API key that does not verify) are counted, not logged one by one:
// at most one warning a second, whose counts add up to every refusal.
func TestRefusedKeysLoggedOncePerSecond(t *testing.T) {
	f := brokertest.Start(t)
	var logs logtest.Buffer
	srv := server.New(server.Config{Broker: f.Broker, Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		Tap: func(ctx context.Context, _ *tap.Info) (context.Context, error) {
			return ctx, status.Error(codes.Unauthenticated, "API key not recognised")
		}})
	api := serveOnLoopback(t, srv)
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer wrong")

	const calls = 300
	start := time.Now()
	for range calls {
		if _, err := api.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: "acme"}); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("GetToken with a key that does not verify: %v, want UNAUTHENTICATED", err)
		}
	}
	var lines, counted int
	for deadline := time.Now().Add(5 * time.Second); counted < calls && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		lines, counted = 0, 0
		for _, ln := range strings.Split(logs.String(), "\n") {
			var l struct {
				Msg   string
				Count int
			}
			if json.Unmarshal([]byte(ln), &l) == nil && strings.HasPrefix(l.Msg, "calls refused before their request") {
				lines++
				counted += l.Count
			}
		}
	}
	elapsed := time.Since(start)
	if counted != calls || lines > int(elapsed.Seconds())+1 {
		t.Errorf("%d refusals in %s: %d warnings counting %d; want at most one a second, counting all", calls, elapsed, lines, counted)
	}
}

// serveOnLoopback serves srv on a loopback port until the test ends and
// returns a client of it.
func serveOnLoopback(t *testing.T, srv *server.Server) tbv1.TokenBrokerServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.GRPC.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		shutdown(t, srv)
		<-served
	})
	return tbv1.NewTokenBrokerServiceClient(conn)
}
