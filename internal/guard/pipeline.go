package guard

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// The steps in the order a call takes them: admit, authenticate,
// authorize, limit, (the handler), audit. They take what any transport
// knows of a call and refuse with *Error: gRPC (grpc.go, stream.go) and
// an HTTP endpoint apply the same rules and write the same audit lines.

// Credentials are what a call presents besides its certificate: an API
// key, whose bytes the caller must not keep.
type Credentials struct {
	KeySent bool   // an authorization came with the call
	Key     string // the key, if KeyErr is nil
	KeyErr  error  // why the authorization cannot be read
}

// proof is what a call's peer and credentials prove, worked out once per
// call: the key hashed, or else the certificate's identity parsed. An API
// key, when sent, decides; otherwise the certificate.
type proof struct {
	keySent bool
	keyErr  error
	digest  authn.KeyDigest
	cert    bool // a verified certificate, identity certID or error certErr
	certID  authn.Identity
	certErr error
}

func prove(p authn.Peer, cr Credentials) proof {
	pr := proof{keySent: cr.KeySent, keyErr: cr.KeyErr}
	switch {
	case cr.KeySent && cr.KeyErr == nil:
		pr.digest = authn.HashKey(cr.Key)
	case !cr.KeySent && p.Cert != nil:
		pr.cert = true
		pr.certID, pr.certErr = authn.FromCertificate(p.Cert)
	}
	return pr
}

// target is what a call asks for.
type target struct {
	tenant string
	scopes []string
	// listing marks ListTenants, which every known caller may call;
	// invalidation marks InvalidateToken, which has its own rate limit.
	listing, invalidation bool
	// unknown marks a call the policy does not cover, which is denied.
	unknown bool
}

// Error is a refusal: a status code, as gRPC names it, and a message
// for the caller that never depends on whether a tenant exists.
type Error struct {
	Code codes.Code
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func errorf(code codes.Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// errAuditUnavailable refuses a token whose audit line could not be
// written.
var errAuditUnavailable = &Error{Code: codes.Unavailable,
	Msg: "the broker cannot write its audit trail, so it hands out no token; retry later or another replica (its operator must check audit.path: disk full or read-only?)"}

// admit takes the slot of a new call of caller (by name), or, for a call
// without credentials that the policy accepts (caller ""), of its peer
// IP; release(caller, ip) gives it back when the call ends.
func (g *Guard) admit(caller, ip string) *Error {
	n, key, max := g.slots(caller, ip)
	switch {
	case max < 0 || n.acquire(key, max):
		return nil
	case caller == "":
		return errorf(codes.ResourceExhausted,
			"%s already has %d open calls without credentials, the limit per peer address (limits.max_anonymous_streams_per_ip); finish or cancel some first", ip, max)
	}
	return errorf(codes.ResourceExhausted,
		"caller %q already has %d open calls, its limit over all its addresses (limits.max_streams_per_caller); finish or cancel some first", caller, max)
}

func (g *Guard) release(caller, ip string) {
	if n, key, max := g.slots(caller, ip); max >= 0 {
		n.release(key)
	}
}

// slots returns the counter, key and cap of a call's slot.
func (g *Guard) slots(caller, ip string) (*counter[string], string, int) {
	if caller == "" {
		return g.anonymous, ip, g.limits.MaxAnonymousStreamsPerIP
	}
	return g.callers, caller, g.limits.MaxStreamsPerCaller
}

// authenticate makes c the caller that p and pr prove under pol (an API
// key, else a certificate, else a Unix socket peer's uid or gid), or
// refuses: UNAUTHENTICATED, or PERMISSION_DENIED for an identity that is
// no caller; c then holds what is known for the denial's audit line.
func (g *Guard) authenticate(c *Caller, pol *policy.Policy, p authn.Peer, pr *proof) *Error {
	*c = Caller{Peer: p.Addr, Loopback: p.Loopback, holder: g.holder}
	if pol.Empty() {
		if !p.Loopback {
			return errorf(codes.Unauthenticated,
				"this broker has no callers configured, so it serves clients on its own host only; "+
					"its operator must add callers (mTLS identities or API keys) to the config to serve %s", p.Addr)
		}
		c.Name, c.open = OpenCallerName, true
		return nil
	}
	switch {
	case pr.keyErr != nil:
		return &Error{Code: codes.Unauthenticated, Msg: pr.keyErr.Error()}
	case pr.keySent && !p.TLS && !p.Loopback:
		return &Error{Code: codes.Unauthenticated, Msg: "API keys are accepted only over TLS; connect with TLS"}
	case pr.keySent:
		pc, ok := pol.LookupKeyDigest(pr.digest)
		if !ok {
			return &Error{Code: codes.Unauthenticated, Msg: "API key not recognised"}
		}
		c.Name, c.Identity, c.digest = pc.Name, authn.Identity{Kind: authn.KindAPIKey}, pr.digest
		c.identity = c.Identity.String()
		return nil
	case pr.certErr != nil:
		return errorf(codes.Unauthenticated, "client certificate: %s", strings.TrimPrefix(pr.certErr.Error(), "authn: "))
	case !pr.cert && p.Unix != nil:
		return authenticateUnix(c, pol, p.Unix)
	case !pr.cert:
		return &Error{Code: codes.Unauthenticated,
			Msg: "no credentials: present a client certificate signed by the broker's client CA, or an \"authorization: Bearer <api key>\" header over TLS"}
	}
	c.Identity, c.identity = pr.certID, pr.certID.String()
	pc, ok := pol.Lookup(pr.certID)
	if !ok {
		return errorf(codes.PermissionDenied, "%s is not a caller in this broker's policy; ask its operator to add it under callers", pr.certID)
	}
	c.Name = pc.Name
	return nil
}

// authenticateUnix makes c the caller the kernel's word on a Unix socket
// peer names: the caller of its uid, else of its gid; a peer neither
// names is refused as a certificate that names no caller is.
func authenticateUnix(c *Caller, pol *policy.Policy, u *authn.UnixPeer) *Error {
	c.unix = u
	pc, id, ok := lookupUnix(pol, u)
	c.Identity, c.identity = id, id.String()
	if ok {
		c.Name = pc.Name
		return nil
	}
	return errorf(codes.PermissionDenied, "uid %d (gid %d) on the broker's Unix socket is not a caller in its policy; ask its operator to add it under callers (unix_uid or unix_gid)", u.UID, u.GID)
}

// lookupUnix is the caller of u's uid, else of its gid, and the identity
// that matched (the uid's if none).
func lookupUnix(pol *policy.Policy, u *authn.UnixPeer) (*policy.Caller, authn.Identity, bool) {
	ids := u.Identities()
	for _, id := range ids {
		if pc, ok := pol.Lookup(id); ok {
			return pc, id, true
		}
	}
	return nil, ids[0], false
}

// charge counts a refused authentication against the peer's IP: past
// its budget the refusal becomes RESOURCE_EXHAUSTED.
func (g *Guard) charge(peer string, err *Error) *Error {
	if ip := peerIP(peer); !g.denials.allow(ip) {
		return errorf(codes.ResourceExhausted,
			"too many refused calls from %s (more than %g/s); fix the client's credentials and retry later", ip, float64(g.denials.limit))
	}
	return err
}

// authorize refuses t to c under pol: PERMISSION_DENIED, never depending
// on whether the tenant exists, or INVALID_ARGUMENT for too many scopes.
func (g *Guard) authorize(pol *policy.Policy, c *Caller, method string, t target) *Error {
	if t.unknown {
		return errorf(codes.PermissionDenied, "%s is not covered by the access policy", method)
	}
	if n := names.CountDistinct(t.scopes); g.limits.MaxScopesPerRequest >= 0 && n > g.limits.MaxScopesPerRequest {
		return errorf(codes.InvalidArgument, "%d distinct scopes requested; at most %d are allowed per request (limits.max_scopes_per_request)", n, g.limits.MaxScopesPerRequest)
	}
	if pol.Empty() {
		if c.Loopback {
			return nil
		}
		return &Error{Code: codes.PermissionDenied, Msg: "this broker has no callers configured and serves clients on its own host only"}
	}
	pc, ok := c.resolve(pol)
	if !ok {
		return errorf(codes.PermissionDenied, "caller %q is no longer in this broker's policy", c.Name)
	}
	if t.listing {
		return nil
	}
	if !pc.TenantAllowed(t.tenant) {
		return errorf(codes.PermissionDenied, "caller %q may not use tenant %q; ask the broker's operator to allow it", c.Name, clip(t.tenant))
	}
	scopes := t.scopes
	if len(scopes) == 0 && pc.RestrictsScopes() {
		if g.defaultScopes != nil {
			scopes = g.defaultScopes(t.tenant)
		}
		if len(scopes) == 0 {
			return errorf(codes.PermissionDenied, "caller %q may request only scopes matching %s; name them in the request", c.Name, strings.Join(pc.Scopes, " "))
		}
	}
	for _, s := range scopes {
		if !pc.ScopesAllowed([]string{s}) {
			return errorf(codes.PermissionDenied, "caller %q may not request scope %q of tenant %q; it may request scopes matching %s",
				c.Name, clip(s), clip(t.tenant), strings.Join(pc.Scopes, " "))
		}
	}
	return nil
}

// limit takes a token from c's bucket of calls, and for InvalidateToken,
// the call that makes the broker ask the IdP, from its stricter bucket.
func (g *Guard) limit(c *Caller, t target) *Error {
	key := rateKey(c)
	if !g.rates.allow(key) {
		return errorf(codes.ResourceExhausted, "caller %q is over its rate limit of %g calls/s (burst %d); slow down or ask for a higher limits.requests_per_second",
			c.Name, float64(g.rates.limit), g.rates.burst)
	}
	if t.invalidation && !g.invalidations.allow(key) {
		return errorf(codes.ResourceExhausted,
			"caller %q is over its InvalidateToken limit of %g calls/s (burst %d); keep using the current token and retry later, or ask for a higher limits.invalidations_per_second",
			c.Name, float64(g.invalidations.limit), g.invalidations.burst)
	}
	return nil
}

// issued is a token handed out, as its audit line names it.
type issued struct {
	fingerprint string // audit.Fingerprint of the access token
	version     uint64
	scopes      []string
}

// record is the audit line of c's call of method for t.
func record(event, method string, c *Caller, t target) audit.Record {
	return audit.Record{Event: event, Method: method, Caller: c.Name, Identity: c.identity, Peer: c.Peer,
		Tenant: t.tenant, Scopes: t.scopes, Result: audit.ResultOK}
}

// withToken names tok in r.
func withToken(r audit.Record, tok issued) audit.Record {
	r.TokenFingerprint, r.Version = tok.fingerprint, tok.version
	if len(tok.scopes) > 0 {
		r.Scopes = tok.scopes
	}
	return r
}

// audit writes r, the line of a token handed out or asked for. Its error
// means the token must not be handed out: no token without its line.
func (g *Guard) audit(ctx context.Context, r audit.Record) error {
	err := g.trail.Log(r)
	g.noteAudit(ctx, err)
	return err
}

// deny audits a refused call of c (before authentication: of its peer)
// for t, reports it to OnDenial, and returns err. The audit package
// clips the peer's tenant, scopes and reason, and collapses repeats.
func (g *Guard) deny(ctx context.Context, method string, c *Caller, t target, err *Error) *Error {
	if g.onDenial != nil {
		g.onDenial(err.Code)
	}
	r := audit.Record{Event: audit.EventDeny, Method: method, Caller: c.Name, Peer: c.Peer, Tenant: t.tenant, Scopes: t.scopes,
		Result: audit.ResultDenied, Code: err.Code.String(), Reason: err.Msg}
	if c.Identity.Kind != authn.KindNone {
		r.Identity = c.Identity.String()
	}
	g.noteAudit(ctx, g.trail.LogDenial(r))
	return err
}

// auditState tracks whether audit writes fail.
type auditState struct {
	hook    func(failing bool)
	mu      sync.Mutex // also orders hook calls
	failing bool
	failed  int
	since   time.Time
}

// noteAudit records the outcome of a write; the first success after
// failures writes an audit_gap line saying how many lines are missing.
func (g *Guard) noteAudit(ctx context.Context, err error) {
	s := &g.auditState
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil && s.failing:
		g.recoveredLocked(ctx)
	case err != nil && !s.failing:
		s.failing, s.since, s.failed = true, time.Now(), 0
		if s.hook != nil {
			s.hook(true)
		}
		g.log.ErrorContext(ctx, "audit write failed; no token is handed out until audit writes succeed again", "error", err)
		fallthrough
	case err != nil:
		s.failed++
	}
}

// recoveredLocked ends a failing period with an audit_gap line; if that
// write fails too, the period goes on.
func (g *Guard) recoveredLocked(ctx context.Context) bool {
	s := &g.auditState
	gap := audit.Record{Event: audit.EventGap, Result: audit.ResultError,
		Reason: fmt.Sprintf("%d audit writes failed since %s; the tokens they recorded were not handed out", s.failed, s.since.UTC().Format(time.RFC3339))}
	if err := g.trail.Log(gap); err != nil {
		return false
	}
	s.failing = false
	if s.hook != nil {
		s.hook(false)
	}
	g.log.InfoContext(ctx, "audit writes succeed again", "failed_writes", s.failed)
	return true
}

// RetryAudit, while audit writes fail, tries the audit_gap line and
// reports whether the trail is writable: a broker that gets no calls (out
// of its load balancer) comes back by it.
func (g *Guard) RetryAudit(ctx context.Context) bool {
	s := &g.auditState
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.failing || g.recoveredLocked(ctx)
}

// WatchAudit calls RetryAudit every interval until ctx ends.
func (g *Guard) WatchAudit(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.RetryAudit(ctx)
		}
	}
}

// peerIP is the host of a peer address.
func peerIP(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// clip cuts a peer-chosen string for messages and logs.
func clip(s string) string { return audit.Clip(s, audit.MaxDeniedFieldBytes) }
