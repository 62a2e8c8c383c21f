package guard

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

const (
	ciKey    = "tbk_ci_4f1d2c3b5a697887aabbccdd"
	wrongKey = "tbk_wrong_0000111122223333444455"
)

var (
	billingCert = testpki.Options{CommonName: "billing", DNSNames: []string{"billing.prod.svc"}, URIs: []string{"spiffe://prod/ns/billing/sa/api"}}
	reportsCert = testpki.Options{CommonName: "reports", DNSNames: []string{"reports.prod.svc"}}
	batchCert   = testpki.Options{CommonName: "batch-job"}
)

func callers() []policy.Caller {
	return []policy.Caller{
		{Name: "billing", SPIFFEID: "spiffe://prod/ns/billing/sa/api", Tenants: []string{"acme", "team-*"}, Scopes: []string{"read:*"}},
		{Name: "reports", DNSName: "reports.prod.svc", Tenants: []string{"acme"}},
		{Name: "batch", CommonName: "batch-job", Tenants: []string{"team-a"}},
		{Name: "ci", APIKeySHA256: keyDigest(ciKey), Tenants: []string{"team-*"}},
	}
}

func get(ctx context.Context, c tbv1.TokenBrokerServiceClient, tenant string, scopes ...string) (*tbv1.Token, error) {
	r, err := c.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: tenant, Scopes: scopes})
	return r.GetToken(), err
}

func TestCertificateIdentities(t *testing.T) {
	ctx := t.Context()
	e := start(t, options{callers: callers()})
	for _, tc := range []struct {
		name    string
		cert    testpki.Options
		tenant  string
		caller  string
		allowed bool
	}{
		{"spiffe id", billingCert, "team-a", "billing", true},
		{"spiffe id, other tenant", billingCert, "secret", "billing", false},
		{"dns name", reportsCert, "acme", "reports", true},
		{"dns name, other tenant", reportsCert, "team-a", "reports", false},
		{"common name", batchCert, "team-a", "batch", true},
		{"common name, other tenant", batchCert, "acme", "batch", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := get(ctx, e.certClient(tc.cert), tc.tenant, "read:x")
			if !tc.allowed {
				wantCode(t, "GetToken", err, codes.PermissionDenied)
				if !strings.Contains(status.Convert(err).Message(), `caller "`+tc.caller+`"`) {
					t.Errorf("denial %q does not name the caller %q", err, tc.caller)
				}
				return
			}
			if err != nil || tok.GetTenant() != tc.tenant {
				t.Fatalf("GetToken = %v, %v", tok, err)
			}
		})
	}
	t.Run("verified certificate of no caller", func(t *testing.T) {
		_, err := get(ctx, e.certClient(testpki.Options{CommonName: "stranger"}), "acme")
		wantCode(t, "GetToken", err, codes.PermissionDenied)
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "common_name=stranger is not a caller") {
			t.Errorf("message %q", msg)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		_, err := get(ctx, tbv1.NewTokenBrokerServiceClient(e.tlsClient()), "acme")
		wantCode(t, "GetToken", err, codes.Unauthenticated)
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "client certificate") || !strings.Contains(msg, "Bearer") {
			t.Errorf("message %q does not say how to authenticate", msg)
		}
	})
	t.Run("health is open", func(t *testing.T) {
		if _, err := healthpb.NewHealthClient(e.tlsClient()).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("health check without credentials: %v", err)
		}
	})

	callersSeen := map[string]bool{}
	for _, r := range e.records() {
		if r.Event == audit.EventIssue && r.Result == audit.ResultOK {
			callersSeen[r.Caller+"/"+r.Identity] = true
		}
	}
	for _, want := range []string{
		"billing/spiffe_id=spiffe://prod/ns/billing/sa/api", "reports/dns_name=reports.prod.svc", "batch/common_name=batch-job",
	} {
		if !callersSeen[want] {
			t.Errorf("no issue audited for %s; saw %v", want, callersSeen)
		}
	}
}

func TestAPIKeys(t *testing.T) {
	ctx := t.Context()
	e := start(t, options{callers: callers()})
	c := tbv1.NewTokenBrokerServiceClient(e.tlsClient())
	if tok, err := get(withKey(ctx, ciKey), c, "team-b"); err != nil || tok.GetTenant() != "team-b" {
		t.Fatalf("good key: %v, %v", tok, err)
	}
	_, err := get(withKey(ctx, ciKey), c, "acme")
	wantCode(t, "good key, forbidden tenant", err, codes.PermissionDenied)
	_, err = get(withKey(ctx, wrongKey), c, "team-b")
	wantCode(t, "wrong key", err, codes.Unauthenticated)
	// The same connection remembers its last key: one of the same length
	// after the good one is no good, the good one after it is.
	_, err = get(withKey(ctx, strings.Repeat("x", len(ciKey))), c, "team-b")
	wantCode(t, "a key as long as the good one, on its connection", err, codes.Unauthenticated)
	if _, err := get(withKey(ctx, ciKey), c, "team-b"); err != nil {
		t.Fatalf("the good key again on the same connection: %v", err)
	}
	_, err = get(ctx, c, "team-b")
	wantCode(t, "no key", err, codes.Unauthenticated)
	_, err = c.GetToken(metadataCtx(ctx, "Basic "+ciKey), &tbv1.GetTokenRequest{Tenant: "team-b"})
	wantCode(t, "basic scheme", err, codes.Unauthenticated)

	// A key decides even when a certificate is presented too.
	billing := e.certClient(billingCert)
	_, err = get(withKey(ctx, wrongKey), billing, "team-a", "read:x")
	wantCode(t, "certificate plus wrong key", err, codes.Unauthenticated)

	var sawKeyCaller bool
	for _, r := range e.records() {
		if r.Caller == "ci" && r.Identity == "api_key" && r.Result == audit.ResultOK {
			sawKeyCaller = true
		}
	}
	if !sawKeyCaller {
		t.Error("no audit line for the API key caller")
	}
}

func TestAPIKeyNeedsTLSOffLoopback(t *testing.T) {
	e := start(t, options{callers: callers(), plaintext: true, remote: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 40000}})
	_, err := get(withKey(t.Context(), ciKey), tbv1.NewTokenBrokerServiceClient(e.plainClient()), "team-a")
	wantCode(t, "key over plaintext from 10.1.2.3", err, codes.Unauthenticated)
	if !strings.Contains(err.Error(), "only over TLS") {
		t.Errorf("message %q", err)
	}
}

func TestEnumerationResistance(t *testing.T) {
	ctx := t.Context()
	e := start(t, options{callers: callers()})
	c := e.certClient(reportsCert) // may use only acme
	norm := func(err error, tenant string) (codes.Code, string) {
		st := status.Convert(err)
		return st.Code(), strings.ReplaceAll(st.Message(), tenant, "<T>")
	}
	calls := map[string]func(tenant string) error{
		"GetToken": func(tn string) error { _, err := get(ctx, c, tn); return err },
		"InvalidateToken": func(tn string) error {
			_, err := c.InvalidateToken(ctx, &tbv1.InvalidateTokenRequest{Tenant: tn, TokenSha256: strings.Repeat("ab", 32)})
			return err
		},
		"WatchToken": func(tn string) error {
			s, err := c.WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: tn})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		},
	}
	for name, call := range calls {
		existsCode, existsMsg := norm(call("secret"), "secret")
		missingCode, missingMsg := norm(call("no-such-tenant"), "no-such-tenant")
		if existsCode != codes.PermissionDenied || existsCode != missingCode || existsMsg != missingMsg {
			t.Errorf("%s: existing tenant → %s %q; unknown tenant → %s %q; want the same PERMISSION_DENIED",
				name, existsCode, existsMsg, missingCode, missingMsg)
		}
	}
	// A caller allowed a glob learns that a tenant under it is missing.
	_, err := get(ctx, e.certClient(batchCert), "team-a")
	if err != nil {
		t.Fatal(err)
	}
	_, err = get(withKey(ctx, ciKey), tbv1.NewTokenBrokerServiceClient(e.tlsClient()), "team-zzz")
	wantCode(t, "allowed glob, missing tenant", err, codes.NotFound)
}

func TestScopes(t *testing.T) {
	ctx := t.Context()
	e := start(t, options{
		callers: callers(),
		limits:  limits.Limits{MaxScopesPerRequest: 3},
		defaultScopes: func(tenant string) []string {
			return map[string][]string{"acme": {"read:all"}, "team-a": {"write:all"}}[tenant]
		},
	})
	c := e.certClient(billingCert) // scopes read:*
	for _, tc := range []struct {
		tenant string
		scopes []string
		want   codes.Code
	}{
		{"acme", []string{"read:inputs", "read:outputs"}, codes.OK},
		{"acme", []string{"read:inputs", "write:inputs"}, codes.PermissionDenied},
		{"acme", nil, codes.OK},                 // defaults read:all pass
		{"team-a", nil, codes.PermissionDenied}, // defaults write:all do not
		{"team-b", nil, codes.PermissionDenied}, // no defaults known: must name scopes
		{"acme", []string{"read:a", "read:b", "read:c", "read:d"}, codes.InvalidArgument},
		{"acme", slices.Repeat([]string{"read:a"}, 40), codes.OK}, // duplicates count once
	} {
		_, err := get(ctx, c, tc.tenant, tc.scopes...)
		if got := status.Code(err); got != tc.want {
			t.Errorf("GetToken(%s, %v) = %v, want %s", tc.tenant, tc.scopes, err, tc.want)
		}
	}
}

func TestListTenantsFiltered(t *testing.T) {
	ctx := t.Context()
	e := start(t, options{callers: callers()})
	names := func(c tbv1.TokenBrokerServiceClient, ctx context.Context) string {
		r, err := c.ListTenants(ctx, &tbv1.ListTenantsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, tn := range r.GetTenants() {
			out = append(out, tn.GetName())
		}
		return strings.Join(out, ",")
	}
	if got := names(e.certClient(billingCert), ctx); got != "acme,team-a,team-b" {
		t.Errorf("billing sees %q", got)
	}
	if got := names(e.certClient(reportsCert), ctx); got != "acme" {
		t.Errorf("reports sees %q", got)
	}
	if got := names(tbv1.NewTokenBrokerServiceClient(e.tlsClient()), withKey(ctx, ciKey)); got != "team-a,team-b" {
		t.Errorf("ci sees %q", got)
	}
	_, err := tbv1.NewTokenBrokerServiceClient(e.tlsClient()).ListTenants(ctx, &tbv1.ListTenantsRequest{})
	wantCode(t, "ListTenants without credentials", err, codes.Unauthenticated)
}

func TestPolicyReloadEndsWatch(t *testing.T) {
	ctx := t.Context()
	e := start(t, options{callers: callers()})
	s, err := e.certClient(billingCert).WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: "team-a", Scopes: []string{"read:x"}})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := s.Recv(); err != nil || m.GetToken().GetVersion() != 1 {
		t.Fatalf("first message: %v, %v", m, err)
	}

	// A reload that keeps billing's right leaves the stream alone.
	keep := callers()
	keep[0].Tenants = []string{"team-a"}
	mustStore(t, e.holder, keep)
	e.stub.push <- token("team-a", 2, []string{"read:x"})
	if m, err := s.Recv(); err != nil || m.GetToken().GetVersion() != 2 {
		t.Fatalf("after a harmless reload: %v, %v", m, err)
	}

	// One that removes it ends the stream.
	drop := callers()
	drop[0].Tenants = []string{"acme"}
	mustStore(t, e.holder, drop)
	_, err = s.Recv()
	wantCode(t, "stream after revocation", err, codes.PermissionDenied)
	if !strings.Contains(err.Error(), "revoked by a policy change") {
		t.Errorf("message %q", err)
	}
	var revoked bool
	for _, r := range e.records() {
		revoked = revoked || r.Event == audit.EventDeny && r.Caller == "billing" && r.Tenant == "team-a" && strings.Contains(r.Reason, "revoked")
	}
	if !revoked {
		t.Error("revocation not audited")
	}
	// New calls follow the new policy too.
	_, err = get(ctx, e.certClient(billingCert), "team-a", "read:x")
	wantCode(t, "GetToken after revocation", err, codes.PermissionDenied)
}

func TestPolicyReloadRemovingCallerEndsWatch(t *testing.T) {
	ctx := t.Context()
	e := start(t, options{callers: callers()})
	s, err := tbv1.NewTokenBrokerServiceClient(e.tlsClient()).WatchToken(withKey(ctx, ciKey), &tbv1.WatchTokenRequest{Tenant: "team-b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	mustStore(t, e.holder, callers()[:3]) // ci is gone
	_, err = s.Recv()
	wantCode(t, "stream of a removed API key caller", err, codes.PermissionDenied)
}

// TestPolicyReloadEndsOnlyRevokedWatches: a reload ends the streams of
// the caller that lost the right and leaves the others open; once every
// stream ended, the guard tracks none.
func TestPolicyReloadEndsOnlyRevokedWatches(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	e := start(t, options{callers: callers()})
	open := func(c tbv1.TokenBrokerServiceClient) tbv1.TokenBrokerService_WatchTokenClient {
		t.Helper()
		s, err := c.WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: "team-a", Scopes: []string{"read:x"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatalf("first message: %v", err)
		}
		return s
	}
	const n = 5
	var billing []tbv1.TokenBrokerService_WatchTokenClient
	for range n {
		billing = append(billing, open(e.certClient(billingCert)))
		open(e.certClient(batchCert))
	}
	drop := callers()
	drop[0].Tenants = []string{"acme"} // billing loses team-a, batch keeps it
	mustStore(t, e.holder, drop)
	for i, s := range billing {
		_, err := s.Recv()
		wantCode(t, fmt.Sprintf("billing stream %d", i), err, codes.PermissionDenied)
	}
	e.guard.open.mu.Lock()
	left := len(e.guard.open.set)
	for s := range e.guard.open.set {
		if s.c.Name != "batch" {
			t.Errorf("stream of %s still open", s.c.Name)
		}
	}
	e.guard.open.mu.Unlock()
	if left != n {
		t.Errorf("%d streams open after the reload, want batch's %d", left, n)
	}
	cancel()
	e.stop()
	e.guard.open.mu.Lock()
	defer e.guard.open.mu.Unlock()
	if len(e.guard.open.set) != 0 {
		t.Errorf("%d streams tracked after every stream ended", len(e.guard.open.set))
	}
}

// TestReloadDuringWatchAuthorization: a stream authorized while a reload
// that revokes its right is stored still ends PERMISSION_DENIED, at
// authorization or right after, never left open under the old policy.
func TestReloadDuringWatchAuthorization(t *testing.T) {
	e := start(t, options{callers: callers()})
	allow, deny := callers(), callers()
	deny[0].Tenants = []string{"acme"}
	denyPolicy, err := policy.New(deny)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		s, err := e.certClient(billingCert).WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: "team-a", Scopes: []string{"read:x"}})
		if err != nil {
			t.Fatal(err)
		}
		stored := make(chan error, 1)
		go func() { stored <- e.holder.Store(denyPolicy) }()
		for err == nil {
			_, err = s.Recv()
		}
		if err := <-stored; err != nil {
			t.Fatal(err)
		}
		cancel()
		wantCode(t, fmt.Sprintf("round %d", i), err, codes.PermissionDenied)
		mustStore(t, e.holder, allow)
	}
}

func mustStore(t *testing.T, h *policy.Holder, cs []policy.Caller) {
	t.Helper()
	p, err := policy.New(cs)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Store(p); err != nil {
		t.Fatal(err)
	}
}

func TestNoCallersServesLoopbackOnly(t *testing.T) {
	ctx := t.Context()
	local := start(t, options{plaintext: true})
	if !local.guard.Open() || !strings.Contains(local.logs.String(), "NO CALLERS CONFIGURED") {
		t.Error("open mode not reported")
	}
	c := tbv1.NewTokenBrokerServiceClient(local.plainClient())
	if tok, err := get(ctx, c, "secret", "write:everything"); err != nil || tok.GetTenant() != "secret" {
		t.Fatalf("loopback client: %v, %v", tok, err)
	}
	r, err := c.ListTenants(ctx, &tbv1.ListTenantsRequest{})
	if err != nil || len(r.GetTenants()) != len(stubTenants) {
		t.Fatalf("loopback ListTenants: %v, %v", r, err)
	}

	remote := start(t, options{plaintext: true, remote: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 5555}})
	_, err = get(ctx, tbv1.NewTokenBrokerServiceClient(remote.plainClient()), "acme")
	wantCode(t, "non-loopback client", err, codes.Unauthenticated)
	if !strings.Contains(err.Error(), "no callers configured") || !strings.Contains(err.Error(), "add callers") {
		t.Errorf("message %q does not explain the fix", err)
	}

	// Configuring callers by reload closes the open door.
	mustStore(t, local.holder, callers())
	_, err = get(ctx, c, "acme")
	wantCode(t, "loopback client after callers were configured", err, codes.Unauthenticated)
}
