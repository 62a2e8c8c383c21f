package guard

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
)

// TestTokenIsGetToken: Guard.Token, the steps as the OAuth2 endpoint runs
// them, refuses and audits exactly as a GetToken over gRPC does: the same
// audit line (but its method), the same codes and messages, and a wrong
// key charged to the same per-IP denial budget.
func TestTokenIsGetToken(t *testing.T) {
	ctx := t.Context()
	e := start(t, options{callers: callers(), limits: limits.Limits{DenialBurstPerIP: 3, DenialsPerSecondPerIP: 0.001}})
	api := tbv1.NewTokenBrokerServiceClient(e.tlsClient())
	tok, err := get(withKey(ctx, ciKey), api, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	_, forbidden := get(withKey(ctx, ciKey), api, "acme")
	recs := e.records()
	overGRPC, deniedGRPC := recs[0], recs[1]

	p := authn.Peer{Addr: "127.0.0.1:4242", Loopback: true, TLS: true}
	fetched := 0
	run := func(key, tenant string) (*Caller, error) {
		return e.guard.Token(ctx, TokenRequest{Method: "POST /oauth2/token", Peer: p, Credentials: Credentials{KeySent: true, Key: key}, Tenant: tenant},
			func(_ context.Context, c *Caller) (Issued, error) {
				fetched++
				if c.Name != "ci" {
					t.Errorf("fetch for caller %q, want ci", c.Name)
				}
				return Issued{Fingerprint: audit.Fingerprint(tok.GetAccessToken()), Version: tok.GetVersion()}, nil
			})
	}
	if c, err := run(ciKey, "team-a"); err != nil || c.Name != "ci" {
		t.Fatalf("Token: caller %+v, %v", c, err)
	}
	recs = e.records()
	r := recs[len(recs)-1]
	if !sameButMethod(r, overGRPC) || r.Method != "POST /oauth2/token" {
		t.Errorf("audit line of Token %+v, want the gRPC call's %+v (but its method)", r, overGRPC)
	}

	_, err = run(ciKey, "acme")
	var ge *Error
	if !errors.As(err, &ge) || ge.Code != status.Code(forbidden) || !strings.Contains(forbidden.Error(), ge.Msg) {
		t.Errorf("a forbidden tenant: %v, want the PERMISSION_DENIED gRPC sent: %v", err, forbidden)
	}
	recs = e.records()
	if d := recs[len(recs)-1]; !sameButMethod(d, deniedGRPC) || d.Method != "POST /oauth2/token" {
		t.Errorf("denial line %+v, want the gRPC call's %+v (but its method)", d, deniedGRPC)
	}

	// Three wrong keys spend the peer IP's budget of 3 refusals; the
	// fourth refusal, over gRPC from the same IP, is RESOURCE_EXHAUSTED.
	for i := range 3 {
		if _, err := run("wrong-key", "team-a"); !errors.As(err, &ge) || ge.Code != codes.Unauthenticated {
			t.Fatalf("wrong key %d: %v, want UNAUTHENTICATED", i, err)
		}
	}
	_, err = get(withKey(ctx, "wrong-key"), api, "team-a")
	wantCode(t, "a wrong key over gRPC after three over Token", err, codes.ResourceExhausted)
	if fetched != 1 {
		t.Errorf("fetch ran %d times, want once (refusals fetch nothing)", fetched)
	}
}

// sameButMethod reports whether two audit lines are the same but for
// their time, peer and method.
func sameButMethod(a, b audit.Record) bool {
	a.Time, a.Peer, a.Method = b.Time, b.Peer, b.Method
	return reflect.DeepEqual(a, b)
}

// TestTokenAuditFailure: a token whose audit line cannot be written is
// refused UNAVAILABLE; a fetch error is audited with its status.
func TestTokenAuditFailure(t *testing.T) {
	ctx := t.Context()
	fw := &failingWriter{}
	e := start(t, options{callers: callers(), auditTo: fw})
	fw.w = e.audit
	p := authn.Peer{Addr: "127.0.0.1:4242", Loopback: true, TLS: true}
	req := TokenRequest{Method: "POST /oauth2/token", Peer: p, Credentials: Credentials{KeySent: true, Key: ciKey}, Tenant: "team-a"}
	_, err := e.guard.Token(ctx, req, func(context.Context, *Caller) (Issued, error) {
		return Issued{}, status.Error(codes.Unavailable, "the identity provider is unavailable")
	})
	if status.Code(err) != codes.Unavailable || err.Error() != "rpc error: code = Unavailable desc = the identity provider is unavailable" {
		t.Errorf("fetch error: %v, want it returned as is", err)
	}
	if r := e.records()[0]; r.Result != audit.ResultError || r.Code != "Unavailable" || r.Reason != "the identity provider is unavailable" {
		t.Errorf("audit line of a failed fetch: %+v", r)
	}
	fw.fail.Store(true)
	_, err = e.guard.Token(ctx, req, func(context.Context, *Caller) (Issued, error) { return Issued{Fingerprint: "0123456789ab"}, nil })
	if err != errAuditUnavailable {
		t.Errorf("a token whose line cannot be written: %v, want %v", err, errAuditUnavailable)
	}
}
