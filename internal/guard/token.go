package guard

import (
	"context"

	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
)

// TokenRequest is a token request as a transport other than gRPC knows
// it (the OAuth2 token endpoint): who sent it and what it asks for.
type TokenRequest struct {
	// Method names the call in audit lines and messages, e.g.
	// "POST /oauth2/token".
	Method      string
	Peer        authn.Peer
	Credentials Credentials
	Tenant      string
	Scopes      []string
}

// Issued is a token handed out, as its audit line names it.
type Issued struct {
	Fingerprint string // audit.Fingerprint of the access token
	Version     uint64
	Scopes      []string // the token's scopes; nil: the requested ones
}

// Token runs r through the steps a GetToken call takes (pipeline.go):
// authenticate (a refusal is charged to the peer's IP), admit, authorize,
// limit, then fetch for the authenticated caller, then the audit line of
// what fetch returned. It returns the caller as far as it is known and
// nil, a refusal (*Error, with the code gRPC would send), or fetch's
// error, whose gRPC status (status.Convert) the audit line records; a
// token whose line cannot be written must not be handed out (an *Error,
// UNAVAILABLE). Credentials are read only while the request is
// authenticated, as in the gRPC tap: the admission comes after, since a
// transport like HTTP reads them from the request body.
func (g *Guard) Token(ctx context.Context, r TokenRequest, fetch func(ctx context.Context, c *Caller) (Issued, error)) (*Caller, error) {
	pol := g.holder.Load()
	pr := prove(r.Peer, r.Credentials)
	c := &Caller{}
	if err := g.authenticate(c, pol, r.Peer, &pr); err != nil {
		return c, g.deny(ctx, r.Method, c, target{}, g.charge(c.Peer, err))
	}
	ip := peerIP(c.Peer)
	if err := g.admit(c.Name, ip); err != nil {
		return c, g.deny(ctx, r.Method, c, target{}, err)
	}
	defer g.release(c.Name, ip)
	t := target{tenant: r.Tenant, scopes: r.Scopes}
	err := g.authorize(pol, c, r.Method, t)
	if err == nil {
		err = g.limit(c, t)
	}
	if err != nil {
		return c, g.deny(ctx, r.Method, c, t, err)
	}
	tok, ferr := fetch(ctx, c)
	rec := record(audit.EventIssue, r.Method, c, t)
	if ferr != nil {
		st := status.Convert(ferr)
		rec.Result, rec.Code, rec.Reason = audit.ResultError, st.Code().String(), st.Message()
	} else {
		rec = withToken(rec, issued{fingerprint: tok.Fingerprint, version: tok.Version, scopes: tok.Scopes})
	}
	if aerr := g.audit(ctx, rec); aerr != nil && ferr == nil {
		return c, errAuditUnavailable // no token without its audit line
	}
	return c, ferr
}

// KnowsKey reports whether key is a caller's API key under the current
// policy, without auditing or charging anything: for a transport that
// must choose between two readings of one credential (HTTP Basic's
// form-encoding, which some clients skip).
func (g *Guard) KnowsKey(key string) bool {
	_, ok := g.holder.Load().LookupKeyDigest(authn.HashKey(key))
	return ok
}
