package server_test

import (
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
)

// The cached GetToken path is meant to cost about as much as the cheapest
// unary RPC the same server answers: run both and compare (target ≤ 1.5×):
//
//	go test -run='^$' -bench='GetTokenCached|HealthCheck' -benchmem -count=5 ./internal/server/

func BenchmarkGetTokenCached(b *testing.B) {
	f := brokertest.Start(b)
	req := &tbv1.GetTokenRequest{Tenant: "acme", Scopes: []string{"read"}}
	if _, err := f.GetToken(b.Context(), req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := f.API.GetToken(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHealthCheck is the baseline: a unary call through the same
// server, interceptors and connection that does no work.
func BenchmarkHealthCheck(b *testing.B) {
	f := brokertest.Start(b)
	req := &healthpb.HealthCheckRequest{}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := f.Health.Check(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}
