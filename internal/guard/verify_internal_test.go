package guard

import (
	"context"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// TestVerifyStreamHandsTheKeyToTheInterceptors: the context VerifyStream
// returns for a key that verifies authenticates its caller without the
// key being read again; a bad key is refused and marks nothing; a stream
// without a key gets its context back unchanged.
func TestVerifyStreamHandsTheKeyToTheInterceptors(t *testing.T) {
	pol, err := policy.New(callers())
	if err != nil {
		t.Fatal(err)
	}
	holder, err := policy.NewHolder(pol)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{Policy: holder, Audit: audit.New(io.Discard)})
	if err != nil {
		t.Fatal(err)
	}
	const method = "/tokenbroker.v1.TokenBrokerService/GetToken"
	tapCtx := peer.NewContext(t.Context(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}})

	ctx, err := g.VerifyStream(tapCtx, metadata.Pairs("authorization", "Bearer "+ciKey), method)
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.authenticate(ctx) // no incoming metadata: only the mark
	if err != nil || c.Name != "ci" {
		t.Fatalf("authenticate on the verified context = %v, %v; want caller ci", c, err)
	}
	if _, err := g.authenticate(tapCtx); err == nil {
		t.Fatal("the unmarked context authenticated; the test proves nothing")
	}

	ctx, err = g.VerifyStream(tapCtx, metadata.Pairs("authorization", "Bearer not-a-key"), method)
	wantCode(t, "VerifyStream of a bad key", err, codes.Unauthenticated)
	if _, ok := VerifiedKeyDigest(ctx); ok {
		t.Error("a refused key marked the context")
	}
	if ctx, err = g.VerifyStream(tapCtx, metadata.MD{}, method); err != nil || ctx != context.Context(tapCtx) {
		t.Errorf("VerifyStream without a key = %v; want the tap's context back, no error", err)
	}
}
