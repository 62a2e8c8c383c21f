package guard

import (
	"context"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// Caller is an authenticated caller, as put in the context.
type Caller struct {
	// Name is the caller's name in the policy, or "loopback" for a peer
	// admitted because the policy has no callers.
	Name string
	// Identity is how the caller authenticated; KindNone for loopback.
	Identity authn.Identity
	// Peer is the peer's address.
	Peer string
	// Loopback reports whether the peer connects from a loopback address.
	Loopback bool

	open     bool            // admitted only because the policy had no callers
	identity string          // Identity.String(), for audit records
	digest   authn.KeyDigest // for API key callers: to re-resolve after reloads
	holder   *policy.Holder
}

// OpenCallerName is the Caller.Name of peers admitted without callers.
const OpenCallerName = "loopback"

type callerKey struct{}

// CallerFromContext returns the caller the guard authenticated.
func CallerFromContext(ctx context.Context) (*Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(*Caller)
	return c, ok
}

// resolve returns the policy entry of the caller in pol, which may be
// newer than the one it authenticated against.
func (c *Caller) resolve(pol *policy.Policy) (*policy.Caller, bool) {
	switch {
	case c.open:
		return nil, false
	case c.Identity.Kind == authn.KindAPIKey:
		return pol.LookupKeyDigest(c.digest)
	}
	return pol.Lookup(c.Identity)
}

// TenantVisible returns the filter ListTenants applies to its list: it
// reports whether the caller in ctx may use a tenant, under the policy
// current at each call. Without a guard in the chain (no caller in ctx)
// it allows every tenant, which is the server's behaviour without access
// control.
func TenantVisible(ctx context.Context) func(tenant string) bool {
	c, ok := CallerFromContext(ctx)
	if !ok {
		return func(string) bool { return true }
	}
	pol := c.holder.Load()
	if pol.Empty() {
		return func(string) bool { return c.Loopback }
	}
	pc, ok := c.resolve(pol)
	if !ok {
		return func(string) bool { return false }
	}
	return pc.TenantAllowed
}

// authenticate returns the caller of ctx, or a status error, audited:
// UNAUTHENTICATED for missing or bad credentials, PERMISSION_DENIED for
// a verified identity that is no caller, RESOURCE_EXHAUSTED past the
// peer's budget of refusals.
func (g *Guard) authenticate(ctx context.Context) (*Caller, error) {
	pol := g.holder.Load()
	c := &Caller{Peer: authn.PeerAddr(ctx), Loopback: authn.PeerIsLoopback(ctx), holder: g.holder}
	err := g.identify(ctx, pol, c)
	if err != nil {
		if ip := peerIP(c.Peer); !g.denials.allow(ip) {
			err = status.Errorf(codes.ResourceExhausted,
				"too many refused calls from %s (more than %g/s); fix the client's credentials and retry later", ip, float64(g.denials.limit))
		}
		g.deny(ctx, c, "", nil, err)
		return nil, err
	}
	if c.Identity.Kind != authn.KindNone {
		c.identity = c.Identity.String()
	}
	return c, nil
}

// TenantAccess returns which tenants the peer of ctx may see, by the
// rules of the token calls, for services the interceptors do not cover
// (per-tenant health): nothing without valid credentials, every tenant
// for a loopback peer in open mode.
func (g *Guard) TenantAccess(ctx context.Context) func(tenant string) bool {
	none := func(string) bool { return false }
	pol := g.holder.Load()
	c := &Caller{Peer: authn.PeerAddr(ctx), Loopback: authn.PeerIsLoopback(ctx), holder: g.holder}
	if err := g.identify(ctx, pol, c); err != nil {
		return none
	}
	if c.open {
		return func(string) bool { return true }
	}
	pc, ok := c.resolve(pol)
	if !ok {
		return none
	}
	return pc.TenantAllowed
}

// VerifyStream checks the API key in a new stream's header against the
// policy, for the server's tap (grpc.InTapHandle): nil when the key is a
// caller's, or when no key is sent or the broker is in open mode (nothing
// to verify). It is cheap (a SHA-256 and a map lookup), so the server can
// refuse a bad key when a stream for fullMethod opens, before any message
// is read. A refusal is audited and counted like any denial, under the
// same per-peer denial rate limit.
//
// It returns tapCtx, marked with the verified key's digest when a key
// verified, for the tap to return as the stream's context. The
// interceptors then take the digest from the context instead of reading
// and hashing the key again (they still resolve it against the policy
// current at the call, and still require TLS for it).
func (g *Guard) VerifyStream(tapCtx context.Context, header metadata.MD, fullMethod string) (context.Context, error) {
	d, err := g.verifyKey(metadata.NewIncomingContext(tapCtx, header), fullMethod)
	if err != nil || d == nil {
		return tapCtx, err
	}
	return &verifiedKeyContext{Context: tapCtx, digest: *d}, nil
}

// VerifiedKeyDigest returns the digest of the API key VerifyStream
// verified for the stream of ctx.
func VerifiedKeyDigest(ctx context.Context) (authn.KeyDigest, bool) {
	v, ok := ctx.Value(verifiedKeyKey{}).(*verifiedKeyContext)
	if !ok {
		return authn.KeyDigest{}, false
	}
	return v.digest, true
}

type verifiedKeyKey struct{}

// verifiedKeyContext carries a verified key's digest: one allocation.
// Only VerifyStream makes one, so a client cannot forge it.
type verifiedKeyContext struct {
	context.Context
	digest authn.KeyDigest
}

func (c *verifiedKeyContext) Value(key any) any {
	if key == (verifiedKeyKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// verifyKey is VerifyStream's check of the key in ctx's incoming
// metadata, returning the digest of a key that verified (nil when there
// was nothing to verify).
func (g *Guard) verifyKey(ctx context.Context, fullMethod string) (*authn.KeyDigest, error) {
	pol := g.holder.Load()
	if pol.Empty() {
		return nil, nil
	}
	key, present, err := authn.BearerKey(ctx)
	switch {
	case err != nil:
		err = status.Error(codes.Unauthenticated, err.Error())
	case !present:
		return nil, nil
	default:
		d := authn.HashKey(key)
		if _, ok := pol.LookupKeyDigest(d); ok {
			return &d, nil
		}
		err = status.Error(codes.Unauthenticated, "API key not recognised")
	}
	c := &Caller{Peer: authn.PeerAddr(ctx), Loopback: authn.PeerIsLoopback(ctx), holder: g.holder}
	if ip := peerIP(c.Peer); !g.denials.allow(ip) {
		err = status.Errorf(codes.ResourceExhausted,
			"too many refused calls from %s (more than %g/s); fix the client's credentials and retry later", ip, float64(g.denials.limit))
	}
	g.deny(grpc.NewContextWithServerTransportStream(ctx, methodOnly(fullMethod)), c, "", nil, err)
	return nil, err
}

// methodOnly is the grpc.ServerTransportStream of a stream not yet
// opened: it knows only its method, for grpc.Method in audit records.
type methodOnly string

func (m methodOnly) Method() string             { return string(m) }
func (methodOnly) SetHeader(metadata.MD) error  { return nil }
func (methodOnly) SendHeader(metadata.MD) error { return nil }
func (methodOnly) SetTrailer(metadata.MD) error { return nil }

// peerIP is the host of a peer address.
func peerIP(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func (g *Guard) identify(ctx context.Context, pol *policy.Policy, c *Caller) error {
	if pol.Empty() {
		if !c.Loopback {
			return status.Errorf(codes.Unauthenticated,
				"this broker has no callers configured, so it serves clients on its own host only; "+
					"its operator must add callers (mTLS identities or API keys) to the config to serve %s", c.Peer)
		}
		c.Name, c.open = OpenCallerName, true
		return nil
	}
	var key string
	digest, verified := VerifiedKeyDigest(ctx) // the tap's, for this stream
	present := verified
	if !verified {
		var err error
		if key, present, err = authn.BearerKey(ctx); err != nil {
			return status.Error(codes.Unauthenticated, err.Error())
		}
	}
	switch {
	case present && !authn.PeerIsTLS(ctx) && !c.Loopback:
		return status.Error(codes.Unauthenticated, "API keys are accepted only over TLS; connect with TLS")
	case present:
		if !verified {
			digest = authn.HashKey(key) // once: the lookup and later re-resolves use it
		}
		pc, ok := pol.LookupKeyDigest(digest)
		if !ok {
			return status.Error(codes.Unauthenticated, "API key not recognised")
		}
		c.Name, c.Identity, c.digest = pc.Name, authn.Identity{Kind: authn.KindAPIKey}, digest
		return nil
	}
	id, ok, err := authn.PeerCertIdentity(ctx)
	switch {
	case err != nil:
		return status.Errorf(codes.Unauthenticated, "client certificate: %s", strings.TrimPrefix(err.Error(), "authn: "))
	case !ok:
		return status.Error(codes.Unauthenticated,
			"no credentials: present a client certificate signed by the broker's client CA, or an \"authorization: Bearer <api key>\" header over TLS")
	}
	c.Identity = id
	pc, ok := pol.Lookup(id)
	if !ok {
		return status.Errorf(codes.PermissionDenied, "%s is not a caller in this broker's policy; ask its operator to add it under callers", id)
	}
	c.Name = pc.Name
	return nil
}

// deny audits a refused call. err is a status error.
func (g *Guard) deny(ctx context.Context, c *Caller, tenant string, scopes []string, err error) {
	method, _ := grpc.Method(ctx)
	st := status.Convert(err)
	if g.onDenial != nil {
		g.onDenial(st.Code())
	}
	// Tenant, scopes and reason come from the peer: the audit package
	// clips them, and collapses repeats into one line per interval.
	r := audit.Record{
		Event: audit.EventDeny, Method: method, Peer: c.Peer, Tenant: tenant, Scopes: scopes,
		Result: audit.ResultDenied, Code: st.Code().String(), Reason: st.Message(),
	}
	if c.Name != "" {
		r.Caller = c.Name
	}
	if c.Identity.Kind != authn.KindNone {
		r.Identity = c.Identity.String()
	}
	g.auditDenial(ctx, r)
}

func mustCaller(ctx context.Context) (*Caller, error) {
	c, ok := CallerFromContext(ctx)
	if !ok {
		// Only if the interceptors are chained out of order.
		return nil, status.Error(codes.Internal, "guard: no authenticated caller in context")
	}
	return c, nil
}

func deniedMsg(c *Caller, tenant string) string {
	return fmt.Sprintf("caller %q may not use tenant %q; ask the broker's operator to allow it", c.Name, clip(tenant))
}

// clip cuts a peer-chosen string for messages and logs.
func clip(s string) string { return audit.Clip(s, audit.MaxDeniedFieldBytes) }
