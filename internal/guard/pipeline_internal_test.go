package guard

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
)

// TestStepsWithoutGRPC: the steps run on what an HTTP token endpoint
// knows of a request (its peer, the API key, a tenant and scopes), with
// no gRPC type, and write the audit line a GetToken over gRPC writes;
// they refuse with the codes and messages gRPC clients get.
func TestStepsWithoutGRPC(t *testing.T) {
	ctx := t.Context()
	e := start(t, options{callers: callers()})
	tok, err := get(withKey(ctx, ciKey), tbv1.NewTokenBrokerServiceClient(e.tlsClient()), "team-a")
	if err != nil {
		t.Fatal(err)
	}
	_, grpcErr := get(withKey(ctx, ciKey), tbv1.NewTokenBrokerServiceClient(e.tlsClient()), "acme")
	overGRPC := e.records()[0]

	g, pol := e.guard, e.guard.holder.Load()
	p := authn.Peer{Addr: "127.0.0.1:4242", Loopback: true, TLS: true}
	run := func(key, tenant string) (Caller, *Error) {
		pr := prove(p, Credentials{KeySent: true, Key: key})
		var c Caller
		err := g.authenticate(&c, pol, p, &pr)
		if err == nil {
			err = g.admit(c.Name, peerIP(p.Addr))
		}
		if err == nil {
			defer g.release(c.Name, peerIP(p.Addr))
			err = g.authorize(pol, &c, "/oauth2/token", target{tenant: tenant})
		}
		if err == nil {
			err = g.limit(&c, target{tenant: tenant})
		}
		return c, err
	}
	c, refused := run(ciKey, "team-a")
	if refused != nil {
		t.Fatal(refused)
	}
	issuedTok := issued{fingerprint: audit.Fingerprint(tok.GetAccessToken()), version: tok.GetVersion()}
	if err := g.audit(ctx, withToken(record(audit.EventIssue, "/oauth2/token", &c, target{tenant: "team-a"}), issuedTok)); err != nil {
		t.Fatal(err)
	}
	recs := e.records()
	r := recs[len(recs)-1]
	if r.Caller != overGRPC.Caller || r.Identity != overGRPC.Identity || r.Tenant != overGRPC.Tenant ||
		r.TokenFingerprint != overGRPC.TokenFingerprint || r.Version != overGRPC.Version || r.Result != overGRPC.Result || r.Method != "/oauth2/token" {
		t.Errorf("audit line without gRPC %+v, want the gRPC call's %+v (but its method)", r, overGRPC)
	}

	if _, refused := run("wrong-key", "team-a"); refused == nil || refused.Code != codes.Unauthenticated {
		t.Errorf("a wrong key: %v, want UNAUTHENTICATED", refused)
	}
	_, refused = run(ciKey, "acme")
	if refused == nil || refused.Code != statusCode(grpcErr) || grpcErr == nil || !strings.Contains(grpcErr.Error(), refused.Msg) {
		t.Errorf("a forbidden tenant: %v, want the PERMISSION_DENIED gRPC sent: %v", refused, grpcErr)
	}
}
