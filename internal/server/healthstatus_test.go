package server_test

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokenbroker/tokenbroker/internal/server"
)

const (
	serving    = healthpb.HealthCheckResponse_SERVING
	notServing = healthpb.HealthCheckResponse_NOT_SERVING
)

// TestHealthStatusHoldAndRelease (issue 19 §3): while held (the audit
// trail cannot be written), "" and every tenant are NOT_SERVING, also
// one that gains its token meanwhile; at release each tenant is what it
// is at that moment: changes made while held are not lost. Checked with
// a gRPC health client over loopback, as grpc-health-probe does.
func TestHealthStatusHoldAndRelease(t *testing.T) {
	hs := health.NewServer()
	st := server.NewHealthStatus(hs)
	client := healthOverLoopback(t, hs)
	ctx := t.Context()
	check := func(when string, want map[string]healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for svc, w := range want {
			r, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || r.GetStatus() != w {
				t.Errorf("%s: Check(%q) = %v, %v; want %v", when, svc, r.GetStatus(), err, w)
			}
		}
	}

	st.SetTenant("keeps", true)
	st.SetTenant("loses", true)
	st.SetTenant("gains", false)
	watch, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "tenant/keeps"})
	if err != nil {
		t.Fatal(err)
	}
	recv := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		m, err := watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return m.GetStatus()
	}
	if got := recv(); got != serving {
		t.Fatalf("watch of tenant/keeps starts %v, want SERVING", got)
	}
	check("before", map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": serving, "tenant/keeps": serving, "tenant/loses": serving, "tenant/gains": notServing})

	st.Hold(true)
	if got := recv(); got != notServing {
		t.Errorf("watch of tenant/keeps after Hold(true): %v, want NOT_SERVING", got)
	}
	st.SetTenant("loses", false)
	st.SetTenant("gains", true)
	st.SetTenant("added", false) // a tenant added while held, then its token
	st.SetTenant("added", true)
	check("held", map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": notServing, "tenant/keeps": notServing, "tenant/loses": notServing,
		"tenant/gains": notServing, "tenant/added": notServing})

	st.Hold(false)
	if got := recv(); got != serving {
		t.Errorf("watch of tenant/keeps after Hold(false): %v, want SERVING", got)
	}
	check("released", map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": serving, "tenant/keeps": serving, "tenant/loses": notServing,
		"tenant/gains": serving, "tenant/added": serving})

	// Drain (health.Server.Shutdown) wins over a later release.
	st.Hold(true)
	hs.Shutdown()
	st.Hold(false)
	st.SetTenant("gains", true)
	check("after shutdown", map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": notServing, "tenant/keeps": notServing, "tenant/gains": notServing})
}

// healthOverLoopback serves hs on a loopback gRPC server for the test.
func healthOverLoopback(t *testing.T, hs *health.Server) healthpb.HealthClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	served := make(chan struct{})
	go func() { defer close(served); _ = s.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		s.Stop()
		<-served
	})
	return healthpb.NewHealthClient(cc)
}
