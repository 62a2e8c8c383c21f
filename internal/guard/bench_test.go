package guard

import (
	"context"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/tap"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// The guard's own cost per call, without gRPC's: the tap, then the unary
// steps of a GetToken cache hit whose response carries its fingerprint.
//
//	go test -run '^$' -bench . -benchmem ./internal/guard/

func benchGuard(b *testing.B) *Guard {
	pol, err := policy.New(callers())
	if err != nil {
		b.Fatal(err)
	}
	holder, err := policy.NewHolder(pol)
	if err != nil {
		b.Fatal(err)
	}
	// Released asynchronously (context.AfterFunc): no cap to run into.
	g, err := New(Config{Policy: holder, Audit: audit.New(io.Discard), Limits: limits.Limits{MaxStreamsPerCaller: 1 << 30, RequestsPerSecond: -1}})
	if err != nil {
		b.Fatal(err)
	}
	return g
}

var benchInfo = &tap.Info{FullMethodName: getMethod, Header: metadata.Pairs("authorization", "Bearer "+ciKey)}

func benchPeer() context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}})
}

func BenchmarkTap(b *testing.B) {
	g, ctx := benchGuard(b), benchPeer()
	b.ReportAllocs()
	for b.Loop() {
		c, cancel := context.WithCancel(ctx)
		if _, err := g.Tap(c, benchInfo); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
}

// fingerprinted is a cached GetToken response, as the server's.
type fingerprinted struct{ *tbv1.GetTokenResponse }

func (fingerprinted) TokenFingerprint() string { return "0123456789ab" }

func BenchmarkUnaryHit(b *testing.B) {
	g := benchGuard(b)
	ctx, cancel := context.WithCancel(benchPeer())
	defer cancel()
	tctx, err := g.Tap(ctx, benchInfo)
	if err != nil {
		b.Fatal(err)
	}
	tctx = WithCallInfo(tctx)
	req := &tbv1.GetTokenRequest{Tenant: "team-a"}
	resp := fingerprinted{&tbv1.GetTokenResponse{Token: token("team-a", 1, nil)}}
	info := &grpc.UnaryServerInfo{FullMethod: getMethod}
	handler := func(context.Context, any) (any, error) { return resp, nil }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.unary(tctx, req, info, handler); err != nil {
			b.Fatal(err)
		}
	}
}
