package guard

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/tap"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

const getMethod = "/tokenbroker.v1.TokenBrokerService/GetToken"

// tapGuard returns a guard over callers() with limits.
func tapGuard(t *testing.T, l limits.Limits) *Guard {
	t.Helper()
	pol, err := policy.New(callers())
	if err != nil {
		t.Fatal(err)
	}
	holder, err := policy.NewHolder(pol)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{Policy: holder, Audit: audit.New(io.Discard), Limits: l})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// tapFrom runs g's tap for a GetToken stream from ip with the given
// authorization ("" for none); cancel ends the stream.
func tapFrom(t *testing.T, g *Guard, ip, authorization string) (ctx context.Context, cancel context.CancelFunc, err error) {
	t.Helper()
	return tapFromPeer(t, g, &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 4242}}, authorization)
}

// tapFromCert is tapFrom over TLS with the verified client certificate leaf.
func tapFromCert(t *testing.T, g *Guard, ip string, leaf *x509.Certificate) (ctx context.Context, cancel context.CancelFunc, err error) {
	t.Helper()
	tlsInfo := credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}}
	return tapFromPeer(t, g, &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 4242}, AuthInfo: tlsInfo}, "")
}

func tapFromPeer(t *testing.T, g *Guard, p *peer.Peer, authorization string) (ctx context.Context, cancel context.CancelFunc, err error) {
	t.Helper()
	base, cancel := context.WithCancel(peer.NewContext(t.Context(), p))
	md := metadata.MD{}
	if authorization != "" {
		md = metadata.Pairs("authorization", authorization)
	}
	ctx, err = g.Tap(base, &tap.Info{FullMethodName: getMethod, Header: md})
	if err != nil {
		cancel()
	}
	return ctx, cancel, err
}

// TestTapHandsTheProofToTheInterceptors: the context the tap returns for
// a key that verifies authenticates its caller without the key being
// read again; a bad key on a token call is refused before any message.
func TestTapHandsTheProofToTheInterceptors(t *testing.T) {
	g := tapGuard(t, limits.Limits{})
	ctx, cancel, err := tapFrom(t, g, "127.0.0.1", "Bearer "+ciKey)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	p, pr := g.proofOf(ctx, g.admitted(ctx)) // no incoming metadata: only the tap's proof
	var c Caller
	if err := g.authenticate(&c, g.holder.Load(), p, pr); err != nil || c.Name != "ci" {
		t.Fatalf("authenticate on the tap's context = %q, %v; want caller ci", c.Name, err)
	}
	p, pr = proofFrom(peer.NewContext(t.Context(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}}))
	if err := g.authenticate(&c, g.holder.Load(), p, pr); err == nil {
		t.Fatal("a context without the tap's proof authenticated; the test proves nothing")
	}
	_, _, err = tapFrom(t, g, "127.0.0.1", "Bearer not-a-key")
	wantCode(t, "the tap, for a bad key", err, codes.Unauthenticated)
}

// TestCallerCapOverAllAddresses (issue D5): one caller's calls are
// capped over all its peer addresses, so that more addresses do not
// multiply what it may hold; a peer without credentials has its own,
// lower cap per address; a call that ends gives its slot back.
func TestCallerCapOverAllAddresses(t *testing.T) {
	g := tapGuard(t, limits.Limits{MaxStreamsPerCaller: 10, MaxAnonymousStreamsPerIP: 2})
	var cancels []context.CancelFunc
	t.Cleanup(func() {
		for _, c := range cancels {
			c()
		}
	})
	held := 0
	for i := range 5 {
		for range 4 {
			_, cancel, err := tapFrom(t, g, fmt.Sprintf("127.0.0.%d", i+1), "Bearer "+ciKey)
			switch {
			case err == nil:
				cancels = append(cancels, cancel)
				held++
			case statusCode(err) != codes.ResourceExhausted:
				t.Fatalf("refusal: %v, want RESOURCE_EXHAUSTED", err)
			}
		}
	}
	if held != 10 {
		t.Fatalf("ci holds %d calls over 5 addresses, want its cap 10", held)
	}
	for i := range 3 {
		_, cancel, err := tapFrom(t, g, "127.0.0.9", "")
		if i < 2 && err != nil {
			t.Fatalf("anonymous call %d: %v", i, err)
		}
		if i == 2 {
			wantCode(t, "a third anonymous call from one address", err, codes.ResourceExhausted)
		} else {
			cancels = append(cancels, cancel)
		}
	}
	// A call that ends without reaching an interceptor (here: none runs)
	// gives its slot back by the time another needs it.
	cancels[0]()
	_, cancel, err := tapFrom(t, g, "127.0.0.1", "Bearer "+ciKey)
	if err != nil {
		t.Fatalf("after one of ci's calls ended: %v", err)
	}
	cancels = append(cancels, cancel)
}

// TestCertificateCallerCapOverAllAddresses: a caller identified by its
// client certificate is capped over all its addresses too (before, its
// calls counted only per IP: 128 per address, any number of addresses);
// a verified certificate that names no caller counts as anonymous.
func TestCertificateCallerCapOverAllAddresses(t *testing.T) {
	g := tapGuard(t, limits.Limits{MaxStreamsPerCaller: 5, MaxAnonymousStreamsPerIP: 1})
	ca := testpki.NewCA(t, "clients")
	billing, stranger := ca.Issue(t, billingCert).Cert, ca.Issue(t, testpki.Options{CommonName: "stranger"}).Cert
	held := 0
	for i := range 5 {
		for range 3 {
			if _, cancel, err := tapFromCert(t, g, fmt.Sprintf("10.0.0.%d", i+1), billing); err == nil {
				defer cancel()
				held++
			}
		}
	}
	if held != 5 {
		t.Errorf("billing holds %d calls over 5 addresses, want its cap 5", held)
	}
	_, cancel, err := tapFromCert(t, g, "10.0.1.1", stranger)
	if err != nil {
		t.Fatalf("a stranger's first call: %v", err)
	}
	defer cancel()
	_, _, err = tapFromCert(t, g, "10.0.1.1", stranger)
	wantCode(t, "a stranger's second call from one address", err, codes.ResourceExhausted)
}

// TestCallerCapIgnoresSchemeSpelling (red team, issue 11): the cap
// counts the caller, not the header's spelling of its key: "bearer" and
// "BEARER" are the same key as "Bearer" and get no fresh allowance.
func TestCallerCapIgnoresSchemeSpelling(t *testing.T) {
	g := tapGuard(t, limits.Limits{MaxStreamsPerCaller: 3})
	for range 3 {
		_, cancel, err := tapFrom(t, g, "127.0.0.1", "Bearer "+ciKey)
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
	}
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "bEaReR"} {
		_, _, err := tapFrom(t, g, "127.0.0.1", scheme+" "+ciKey)
		wantCode(t, scheme+" (the caller already holds its 3 calls)", err, codes.ResourceExhausted)
	}
}

// TestInterceptorGivesTheSlotBack: the guard's interceptor gives the
// slot of the call the tap admitted back when the call returns (before,
// only the stream's end did, on a goroutine of its own), health calls
// too; the stream's end then gives nothing back, so a slot is never
// given back twice. A call that never reaches an interceptor gives its
// slot back once its stream ended.
func TestInterceptorGivesTheSlotBack(t *testing.T) {
	g := tapGuard(t, limits.Limits{MaxStreamsPerCaller: 3, RequestsPerSecond: -1})
	tapped := func(method string) (context.Context, context.CancelFunc) {
		base, cancel := context.WithCancel(peer.NewContext(t.Context(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}}))
		t.Cleanup(cancel)
		ctx, err := g.Tap(base, &tap.Info{FullMethodName: method, Header: metadata.Pairs("authorization", "Bearer "+ciKey)})
		if err != nil {
			t.Fatal(err)
		}
		return ctx, cancel
	}
	get, endGet := tapped(getMethod)
	check, endCheck := tapped("/grpc.health.v1.Health/Check")
	_, endUnclaimed := tapped(getMethod) // never reaches an interceptor
	_, _, err := tapFrom(t, g, "127.0.0.1", "Bearer "+ciKey)
	wantCode(t, "a fourth call of a caller capped at 3", err, codes.ResourceExhausted)
	for method, ctx := range map[string]context.Context{getMethod: get, "/grpc.health.v1.Health/Check": check} {
		info := &grpc.UnaryServerInfo{FullMethod: method}
		ok := func(context.Context, any) (any, error) { return nil, nil }
		if _, err := g.unary(ctx, &tbv1.ListTenantsRequest{}, info, ok); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
	}
	if n := g.callers.n["ci"]; n != 1 {
		t.Fatalf("ci holds %d slots once two of its three calls returned, want 1 at once", n)
	}
	endGet()
	endCheck()
	if n := g.pending.sweep(); n != 0 || g.callers.n["ci"] != 1 {
		t.Fatalf("the streams of the returned calls ended: %d slots given back again, ci holds %d; want 0 and 1", n, g.callers.n["ci"])
	}
	endUnclaimed()
	if n := g.pending.sweep(); n != 1 || g.callers.n["ci"] != 0 {
		t.Fatalf("the stream of the unclaimed call ended: %d slots given back, ci holds %d; want 1 and 0", n, g.callers.n["ci"])
	}
}

// TestUnclaimedCallsAreSweptAsCallsCome: calls whose streams end before
// any interceptor (grpc-go refused them) are forgotten within
// sweepEvery admissions, slot and memory, whoever makes them.
func TestUnclaimedCallsAreSweptAsCallsCome(t *testing.T) {
	g := tapGuard(t, limits.Limits{MaxStreamsPerCaller: 1 << 20, MaxAnonymousStreamsPerIP: 1 << 20})
	for i := range 3 * sweepEvery {
		_, cancel, err := tapFrom(t, g, fmt.Sprintf("10.0.%d.%d", i/250, 1+i%250), "")
		if err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	listed := 0
	g.pending.mu.Lock()
	for a := g.pending.head; a != nil; a = a.next {
		listed++
	}
	g.pending.mu.Unlock()
	if listed >= sweepEvery || g.anonymous.len() >= sweepEvery {
		t.Errorf("after %d calls that ended unclaimed: %d still listed, %d addresses hold slots; want fewer than %d", 3*sweepEvery, listed, g.anonymous.len(), sweepEvery)
	}
}
