package guard

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
)

func TestAuditLines(t *testing.T) {
	ctx := t.Context()
	e := start(t, options{callers: callers()})
	billing := e.certClient(billingCert)

	if _, err := get(ctx, billing, "acme", "read:inputs"); err != nil {
		t.Fatal(err)
	}
	rejected := strings.Repeat("0a", 32)
	if _, err := billing.InvalidateToken(ctx, &tbv1.InvalidateTokenRequest{Tenant: "acme", Scopes: []string{"read:inputs"}, TokenSha256: rejected}); err != nil {
		t.Fatal(err)
	}
	s, err := billing.WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: "team-a", Scopes: []string{"read:x"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := get(ctx, billing, "secret", "read:x"); status.Code(err) != codes.PermissionDenied {
		t.Fatal(err)
	}
	if _, err := get(withKey(ctx, ciKey), tbv1.NewTokenBrokerServiceClient(e.tlsClient()), "team-gone"); status.Code(err) != codes.NotFound {
		t.Fatal(err)
	}

	recs := e.records()
	if len(recs) != 5 {
		t.Fatalf("%d audit lines, want 5: %+v", len(recs), recs)
	}
	for _, r := range recs {
		if r.Time.IsZero() || r.Peer == "" || r.Method == "" {
			t.Errorf("line misses time, peer or method: %+v", r)
		}
	}
	check := func(i int, want audit.Record) {
		t.Helper()
		got := recs[i]
		got.Time, got.Peer = want.Time, want.Peer
		if strings.Join(got.Scopes, " ") != strings.Join(want.Scopes, " ") {
			t.Errorf("line %d scopes %v, want %v", i, got.Scopes, want.Scopes)
		}
		got.Scopes = want.Scopes
		if got.Reason != "" && want.Reason != "" && strings.Contains(got.Reason, want.Reason) {
			got.Reason = want.Reason
		}
		if !equal(got, want) {
			t.Errorf("line %d:\n got %+v\nwant %+v", i, got, want)
		}
	}
	const svc = "/tokenbroker.v1.TokenBrokerService/"
	billingID := "spiffe_id=spiffe://prod/ns/billing/sa/api"
	check(0, audit.Record{Event: "issue", Method: svc + "GetToken", Caller: "billing", Identity: billingID, Tenant: "acme",
		Scopes: []string{"read:inputs"}, TokenFingerprint: audit.Fingerprint(accessToken("acme", 1)), Version: 1, Result: "ok"})
	check(1, audit.Record{Event: "invalidate", Method: svc + "InvalidateToken", Caller: "billing", Identity: billingID, Tenant: "acme",
		Scopes: []string{"read:inputs"}, TokenFingerprint: audit.Fingerprint(accessToken("acme", 2)), RejectedFingerprint: rejected[:12],
		Version: 2, Result: "ok"})
	check(2, audit.Record{Event: "issue", Method: svc + "WatchToken", Caller: "billing", Identity: billingID, Tenant: "team-a",
		Scopes: []string{"read:x"}, TokenFingerprint: audit.Fingerprint(accessToken("team-a", 1)), Version: 1, Result: "ok"})
	check(3, audit.Record{Event: "deny", Method: svc + "GetToken", Caller: "billing", Identity: billingID, Tenant: "secret",
		Scopes: []string{"read:x"}, Result: "denied", Code: "PermissionDenied", Reason: `may not use tenant "secret"`})
	check(4, audit.Record{Event: "issue", Method: svc + "GetToken", Caller: "ci", Identity: "api_key", Tenant: "team-gone",
		Result: "error", Code: "NotFound", Reason: "not configured"})
	if len(recs[0].TokenFingerprint) != 12 {
		t.Errorf("fingerprint %q is not 12 hex digits", recs[0].TokenFingerprint)
	}
}

func equal(a, b audit.Record) bool {
	return a.Event == b.Event && a.Method == b.Method && a.Caller == b.Caller && a.Identity == b.Identity &&
		a.Tenant == b.Tenant && a.TokenFingerprint == b.TokenFingerprint && a.RejectedFingerprint == b.RejectedFingerprint &&
		a.Version == b.Version && a.Result == b.Result && a.Code == b.Code && a.Reason == b.Reason
}

// TestNoSecretsInOutput drives issuance, watch, invalidation, denials,
// bad and good keys and rate limiting, and checks that no API key and no
// access token reaches the logs (guard and gRPC call logging), the audit
// trail or an error a client sees.
func TestNoSecretsInOutput(t *testing.T) {
	ctx := t.Context()
	e := start(t, options{callers: callers(), limits: limits.Limits{RequestsPerSecond: 1e-9, Burst: 8}})
	var clientErrs []string
	note := func(err error) {
		if err != nil {
			clientErrs = append(clientErrs, err.Error())
		}
	}
	keyConn := tbv1.NewTokenBrokerServiceClient(e.tlsClient())
	billing := e.certClient(billingCert)
	var issued []string

	tok, err := get(withKey(ctx, ciKey), keyConn, "team-a")
	note(err)
	issued = append(issued, tok.GetAccessToken())
	r, err := keyConn.InvalidateToken(withKey(ctx, ciKey), &tbv1.InvalidateTokenRequest{Tenant: "team-a", TokenSha256: strings.Repeat("ab", 32)})
	note(err)
	issued = append(issued, r.GetToken().GetAccessToken())
	_, err = get(withKey(ctx, wrongKey), keyConn, "team-a")
	note(err)
	_, err = keyConn.GetToken(metadataCtx(ctx, "Basic "+wrongKey), &tbv1.GetTokenRequest{Tenant: "team-a"})
	note(err)
	_, err = keyConn.GetToken(metadataCtx(ctx, wrongKey), &tbv1.GetTokenRequest{Tenant: "team-a"})
	note(err)
	_, err = get(withKey(ctx, ciKey), keyConn, "acme")
	note(err)
	sctx, cancel := context.WithCancel(ctx)
	s, err := billing.WatchToken(sctx, &tbv1.WatchTokenRequest{Tenant: "team-b", Scopes: []string{"read:x"}})
	note(err)
	m, err := s.Recv()
	note(err)
	issued = append(issued, m.GetToken().GetAccessToken())
	pushed := token("team-b", 5, nil)
	e.stub.push <- pushed
	m, err = s.Recv()
	note(err)
	issued = append(issued, m.GetToken().GetAccessToken())
	drop := callers()
	drop[0].Tenants = []string{"acme"}
	mustStore(t, e.holder, drop)
	_, err = s.Recv()
	note(err)
	cancel()
	for range 10 { // into the rate limit
		_, err = get(withKey(ctx, ciKey), keyConn, "team-b")
		note(err)
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("scenario did not reach the rate limit: %v", err)
	}
	e.stop() // flush the call logs of every handler

	for _, tok := range issued {
		if tok == "" {
			t.Fatal("scenario did not issue every token")
		}
	}
	outputs := map[string]string{"logs": e.logs.String(), "audit": e.audit.String(), "client errors": strings.Join(clientErrs, "\n")}
	if !strings.Contains(outputs["logs"], "finished call") || strings.Count(outputs["audit"], "\n") < 10 {
		t.Fatalf("too little output captured to judge:\n%s\n%s", outputs["logs"], outputs["audit"])
	}
	secrets := append([]string{ciKey, wrongKey, "do-not-leak"}, issued...)
	for name, out := range outputs {
		for _, sec := range secrets {
			if strings.Contains(out, sec) {
				t.Errorf("%s contain the secret %q:\n%s", name, sec, out)
			}
		}
	}
}
