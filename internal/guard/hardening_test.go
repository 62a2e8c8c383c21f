package guard

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
)

// failingWriter fails every write while fail is set (a full disk).
type failingWriter struct {
	w    io.Writer
	fail atomic.Bool
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.fail.Load() {
		return 0, errors.New("write audit.log: no space left on device")
	}
	return f.w.Write(p)
}

// TestNoTokenWithoutAuditLine: while the audit trail cannot be written,
// GetToken and InvalidateToken answer UNAVAILABLE instead of the token,
// a WatchToken message is not sent (the stream ends UNAVAILABLE), and
// health "" is NOT_SERVING; once writes succeed again an audit_gap line
// records how many were lost and tokens flow again.
func TestNoTokenWithoutAuditLine(t *testing.T) {
	ctx := t.Context()
	hs := health.NewServer()
	fw := &failingWriter{}
	var transitions []bool
	var mu sync.Mutex
	e := start(t, options{callers: callers(), auditTo: fw, onAudit: func(failing bool) {
		mu.Lock()
		transitions = append(transitions, failing)
		mu.Unlock()
		st := healthpb.HealthCheckResponse_SERVING
		if failing {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		hs.SetServingStatus("", st)
	}})
	fw.w = e.audit
	overall := func() healthpb.HealthCheckResponse_ServingStatus {
		r, err := hs.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetStatus()
	}
	ci := tbv1.NewTokenBrokerServiceClient(e.tlsClient())
	kctx := withKey(ctx, ciKey)
	if _, err := get(kctx, ci, "team-a"); err != nil {
		t.Fatal(err)
	}
	// A watch opened while the trail works; its next token must not pass.
	w, err := ci.WatchToken(kctx, &tbv1.WatchTokenRequest{Tenant: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}

	fw.fail.Store(true)
	tok, err := get(kctx, ci, "team-a")
	wantCode(t, "GetToken while audit fails", err, codes.Unavailable)
	if tok != nil || !strings.Contains(err.Error(), "audit") {
		t.Errorf("GetToken while audit fails: %v, %v", tok, err)
	}
	_, err = ci.InvalidateToken(kctx, &tbv1.InvalidateTokenRequest{Tenant: "team-a", TokenSha256: strings.Repeat("a", 64)})
	wantCode(t, "InvalidateToken while audit fails", err, codes.Unavailable)
	e.stub.push <- token("team-a", 2, nil)
	m, err := w.Recv()
	wantCode(t, "WatchToken message while audit fails", err, codes.Unavailable)
	if m != nil {
		t.Errorf("a watch message was sent without its audit line: version %d", m.GetToken().GetVersion())
	}
	if got := overall(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health \"\" while audit fails = %v, want NOT_SERVING", got)
	}
	if e.guard.RetryAudit(ctx) {
		t.Error("RetryAudit reports a writable trail while writes fail")
	}

	fw.fail.Store(false)
	if !e.guard.RetryAudit(ctx) {
		t.Fatal("RetryAudit after the disk has room again: still failing")
	}
	if got := overall(); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health \"\" after recovery = %v, want SERVING", got)
	}
	if _, err := get(kctx, ci, "team-a"); err != nil {
		t.Fatalf("GetToken after recovery: %v", err)
	}
	mu.Lock()
	if len(transitions) != 2 || !transitions[0] || transitions[1] {
		t.Errorf("audit health transitions %v, want [true false]", transitions)
	}
	mu.Unlock()
	var gap *audit.Record
	issued := 0
	for _, r := range e.records() {
		if r.Event == audit.EventGap {
			gap = &r
		}
		if r.Event == audit.EventIssue {
			issued++
		}
	}
	if gap == nil || !strings.HasPrefix(gap.Reason, "3 audit writes failed") {
		t.Errorf("audit_gap line = %+v, want 3 failed writes", gap)
	}
	// GetToken, the watch's first message, GetToken after recovery.
	if issued != 3 {
		t.Errorf("%d issue lines, want 3", issued)
	}
}

// TestUnauthenticatedDenialsBounded: a peer hammering with a bad key is
// refused, rate limited per IP after DenialBurstPerIP, and costs a few
// audit lines with counts rather than one line per call; a huge tenant
// name is clipped in the audit line and the error.
func TestUnauthenticatedDenialsBounded(t *testing.T) {
	ctx := t.Context()
	e := start(t, options{callers: callers(), limits: limits.Limits{DenialsPerSecondPerIP: 1e-9, DenialBurstPerIP: 5}})
	ci := tbv1.NewTokenBrokerServiceClient(e.tlsClient())
	kctx := withKey(ctx, wrongKey)
	codesSeen := map[codes.Code]int{}
	const calls = 200
	for range calls {
		_, err := get(kctx, ci, "acme")
		codesSeen[statusCode(err)]++
	}
	if codesSeen[codes.Unauthenticated] != 5 || codesSeen[codes.ResourceExhausted] != calls-5 {
		t.Errorf("codes %v, want 5 UNAUTHENTICATED then RESOURCE_EXHAUSTED", codesSeen)
	}
	// The right key from the same address still works.
	if _, err := get(withKey(ctx, ciKey), ci, "team-a"); err != nil {
		t.Errorf("valid key from the same peer: %v", err)
	}
	// A known caller asking for a 10 KB tenant name is denied; the name
	// is clipped everywhere it is repeated.
	long := strings.Repeat("x", 10_000)
	_, err := get(ctx, e.certClient(reportsCert), long)
	wantCode(t, "long tenant", err, codes.PermissionDenied)
	if len(err.Error()) > 1000 {
		t.Errorf("error message of %d bytes quotes the whole tenant name", len(err.Error()))
	}
	lines := e.records()
	if len(lines) > 4 {
		t.Errorf("%d audit lines for %d refused calls; want identical denials collapsed", len(lines), calls+1)
	}
	for _, r := range lines {
		if len(r.Tenant) > audit.MaxDeniedFieldBytes || len(r.Reason) > 600 {
			t.Errorf("audit line not clipped: tenant %d bytes, reason %d bytes", len(r.Tenant), len(r.Reason))
		}
	}
}

// TestDefaultRateLimitAdmitsBusyService: with default limits one caller
// makes 1,000 GetToken calls at once (cache hits) without refusal, while
// InvalidateToken, which costs the IdP, has its own stricter bucket.
func TestDefaultRateLimitAdmitsBusyService(t *testing.T) {
	ctx := withKey(t.Context(), ciKey)
	e := start(t, options{callers: callers()})
	ci := tbv1.NewTokenBrokerServiceClient(e.tlsClient())
	var wg sync.WaitGroup
	var refused atomic.Int64
	sem := make(chan struct{}, 64)
	for range 1000 {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := get(ctx, ci, "team-a"); err != nil {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if n := refused.Load(); n != 0 {
		t.Errorf("%d of 1000 GetToken calls refused with default limits", n)
	}
	var limited int
	for range limits.Default().InvalidationBurst + 5 {
		_, err := ci.InvalidateToken(ctx, &tbv1.InvalidateTokenRequest{Tenant: "team-a", TokenSha256: strings.Repeat("b", 64)})
		if statusCode(err) == codes.ResourceExhausted {
			limited++
		}
	}
	if limited < 4 {
		t.Errorf("%d of %d back-to-back InvalidateToken calls limited; want those past the burst of %d", limited, limits.Default().InvalidationBurst+5, limits.Default().InvalidationBurst)
	}
	if _, err := get(ctx, ci, "team-a"); err != nil {
		t.Errorf("GetToken after the invalidation limit: %v", err)
	}
}

// TestOpenModeBucketPerConnection: without callers, every loopback
// client is "loopback"; each connection has its own rate bucket, so one
// busy client cannot starve the others.
func TestOpenModeBucketPerConnection(t *testing.T) {
	ctx := t.Context()
	e := start(t, options{plaintext: true, limits: limits.Limits{RequestsPerSecond: 1e-9, Burst: 2}})
	a := tbv1.NewTokenBrokerServiceClient(e.plainClient())
	for range 2 {
		if _, err := get(ctx, a, "acme"); err != nil {
			t.Fatal(err)
		}
	}
	_, err := get(ctx, a, "acme")
	wantCode(t, "third call on one connection", err, codes.ResourceExhausted)
	b := tbv1.NewTokenBrokerServiceClient(e.plainClient())
	if _, err := get(ctx, b, "acme"); err != nil {
		t.Errorf("another connection is limited by the first one's bucket: %v", err)
	}
}

// TestTenantAccessForHealth: TenantAccess follows the token calls' rules.
func TestTenantAccessForHealth(t *testing.T) {
	e := start(t, options{callers: callers()})
	_ = e
	// Covered end to end over gRPC in cmd/broker (TLS broker with callers);
	// here the open-mode rule: loopback sees all, others nothing.
	open := start(t, options{plaintext: true})
	loop := peerCtx(t, &net.TCPAddr{IP: net.IPv6loopback, Port: 1})
	if !open.guard.TenantAccess(loop)("anything") {
		t.Error("open mode: a loopback peer cannot see a tenant's health")
	}
	remote := peerCtx(t, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1})
	if open.guard.TenantAccess(remote)("acme") {
		t.Error("open mode: a remote peer sees a tenant's health")
	}
	if e.guard.TenantAccess(loop)("acme") {
		t.Error("with callers: a peer without credentials sees a tenant's health")
	}
}

func statusCode(err error) codes.Code { return status.Code(err) }

func peerCtx(t *testing.T, addr net.Addr) context.Context {
	return peer.NewContext(t.Context(), &peer.Peer{Addr: addr})
}
