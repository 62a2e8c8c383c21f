package guard

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// The guard's steps as gRPC runs them: tap when a call's HEADERS arrive,
// unary (here) and stream (stream.go) once grpc-go hands over the call.

// UnaryInterceptor is the guard's unary interceptor: one, which runs
// every step (a layer per step would cost every call a closure).
func (g *Guard) UnaryInterceptor() grpc.UnaryServerInterceptor { return g.unary }

// StreamInterceptor is the guard's stream interceptor, as for unary calls.
func (g *Guard) StreamInterceptor() grpc.StreamServerInterceptor { return g.stream }

// GRPCStatus makes an *Error the status a gRPC client receives.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Msg) }

// unary runs a unary call's steps: authenticate, authorize, limit, the
// handler, audit.
func (g *Guard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	a := g.admitted(ctx)
	if a.claim() {
		defer a.release()
	}
	if !guarded(info.FullMethod) {
		return handler(ctx, req)
	}
	method, t := info.FullMethod, targetOf(req)
	pol := g.holder.Load()
	p, pr := g.proofOf(ctx, a)
	ci := CallInfoFrom(ctx)
	c := ci.newCaller()
	err := g.authenticate(c, pol, p, pr)
	if err != nil {
		return nil, g.deny(ctx, method, c, target{}, g.charge(c.Peer, err))
	}
	ci.note(c, t.tenant)
	err = g.authorize(pol, c, method, t)
	if err == nil {
		err = g.limit(c, t)
	}
	if err != nil {
		return nil, g.deny(ctx, method, c, t, err)
	}
	if ci != nil {
		ci.authorized = c // CallerFromContext finds it there
	} else {
		ctx = context.WithValue(ctx, callerKey{}, c)
	}
	resp, herr := handler(ctx, req)
	if aerr := g.auditUnary(ctx, method, c, t, req, resp, herr); aerr != nil && herr == nil {
		return nil, errAuditUnavailable // no token without its audit line
	}
	return resp, herr
}

// auditUnary writes the line of a GetToken or InvalidateToken call: the
// token it hands out, or its error.
func (g *Guard) auditUnary(ctx context.Context, method string, c *Caller, t target, req, resp any, err error) error {
	var r audit.Record
	switch q := req.(type) {
	case *tbv1.GetTokenRequest:
		r = record(audit.EventIssue, method, c, t)
	case *tbv1.InvalidateTokenRequest:
		r = record(audit.EventInvalidate, method, c, t)
		r.RejectedFingerprint = fingerprintPrefix(q.GetTokenSha256())
	default:
		return nil
	}
	if err != nil {
		st := status.Convert(err)
		r.Result, r.Code, r.Reason = audit.ResultError, st.Code().String(), st.Message()
	}
	if tok, ok := issuedOf(resp); ok {
		r = withToken(r, tok)
	}
	return g.audit(ctx, r)
}

// Fingerprinted is implemented by a response that carries the audit
// fingerprint of its token, computed once where the token was made (the
// server's responses), so that the guard does not hash the token again.
type Fingerprinted interface {
	GetToken() *tbv1.Token
	TokenFingerprint() string
}

// issuedOf returns the token a response hands out, if any.
func issuedOf(resp any) (issued, bool) {
	m, ok := resp.(interface{ GetToken() *tbv1.Token })
	if !ok || m.GetToken() == nil {
		return issued{}, false
	}
	tok := m.GetToken()
	var fp string
	if f, ok := resp.(Fingerprinted); ok {
		fp = f.TokenFingerprint()
	} else {
		fp = audit.Fingerprint(tok.GetAccessToken())
	}
	return issued{fingerprint: fp, version: tok.GetVersion(), scopes: tok.GetScopes()}, true
}

// fingerprintPrefix returns the first audit.FingerprintLen characters of
// a client-sent token hash if it is hex, else "".
func fingerprintPrefix(s string) string {
	s = strings.ToLower(s)
	if len(s) > audit.FingerprintLen {
		s = s[:audit.FingerprintLen]
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ""
		}
	}
	return s
}

// targetOf is what a request asks for; a message the guard does not
// know is an unknown target, which is denied.
func targetOf(req any) target {
	switch r := req.(type) {
	case *tbv1.GetTokenRequest:
		return target{tenant: r.GetTenant(), scopes: r.GetScopes()}
	case *tbv1.WatchTokenRequest:
		return target{tenant: r.GetTenant(), scopes: r.GetScopes()}
	case *tbv1.InvalidateTokenRequest:
		return target{tenant: r.GetTenant(), scopes: r.GetScopes(), invalidation: true}
	case *tbv1.ListTenantsRequest:
		return target{listing: true}
	}
	return target{unknown: true}
}

// guarded selects every service but health and reflection, by the full
// method name "/service/method".
func guarded(fullMethod string) bool {
	service := strings.TrimPrefix(fullMethod, "/")
	if i := strings.LastIndexByte(service, '/'); i >= 0 {
		service = service[:i]
	}
	return service != "grpc.health.v1.Health" && !strings.HasPrefix(service, "grpc.reflection.")
}

// credentialsOf reads the API key of a call's metadata.
func credentialsOf(md metadata.MD) Credentials {
	key, sent, err := authn.ParseBearer(md.Get("authorization"))
	return Credentials{KeySent: sent, Key: key, KeyErr: err}
}

// proofOf returns the peer of a token call's ctx and what its
// credentials prove: the tap's (a), or, without the tap, worked out again.
func (g *Guard) proofOf(ctx context.Context, a *admittedContext) (authn.Peer, *proof) {
	if a != nil {
		return a.conn.peer, &a.proof
	}
	if g.noTap.CompareAndSwap(false, true) {
		g.log.Error("guard: a call arrived without the guard's tap (guard.ServerOptions is not installed): open calls are not capped and bad API keys are refused only after their request is read")
	}
	return proofFrom(ctx)
}

// proofFrom works out the peer of ctx and what its credentials prove.
func proofFrom(ctx context.Context) (authn.Peer, *proof) {
	md, _ := metadata.FromIncomingContext(ctx)
	p := authn.PeerOf(ctx)
	pr := prove(p, credentialsOf(md))
	return p, &pr
}

type callerKey struct{}

// CallerFromContext returns the caller the guard authenticated.
func CallerFromContext(ctx context.Context) (*Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(*Caller)
	return c, ok
}

// TenantVisible returns ListTenants' filter: whether the caller in ctx
// may use a tenant under the current policy; every tenant without a
// guard in the chain (no caller in ctx).
func TenantVisible(ctx context.Context) func(tenant string) bool {
	c, ok := CallerFromContext(ctx)
	if !ok {
		return func(string) bool { return true }
	}
	return visible(c.holder.Load(), c)
}

// TenantAccess returns which tenants the peer of ctx may see, by the
// token calls' rules, for per-tenant health, which the guard does not
// intercept: none without valid credentials.
func (g *Guard) TenantAccess(ctx context.Context) func(tenant string) bool {
	pol := g.holder.Load()
	p, pr := proofFrom(ctx) // health: the tap hands over no proof
	c := &Caller{}
	if err := g.authenticate(c, pol, p, pr); err != nil {
		return func(string) bool { return false }
	}
	return visible(pol, c)
}

// visible is the tenant filter of c under pol.
func visible(pol *policy.Policy, c *Caller) func(tenant string) bool {
	if pol.Empty() {
		return func(string) bool { return c.Loopback }
	}
	pc, ok := c.resolve(pol)
	if !ok {
		return func(string) bool { return false }
	}
	return pc.TenantAllowed
}

// CallInfo is the caller and tenant of a call for its request-log line:
// the server keeps one in each call's context (its own context type
// answers Value through CallInfo.Value; WithCallInfo makes one for other
// servers), the guard fills it, the log reads it only for a line it
// writes. It also holds the call's Caller, so that the guard allocates
// none per call. It is the call's goroutine's.
type CallInfo struct {
	named  *Caller // the caller of the line, once known
	tenant string
	// authorized is the caller the handler runs for, once the guard
	// allowed the call: CallerFromContext finds it here, which saves a
	// context per call.
	authorized *Caller
	own        Caller   // the call's Caller (see newCaller)
	canceler   Canceler // see SetCanceler
}

// Canceler cancels a call's context with a cause.
type Canceler interface{ CancelCall(cause error) }

// SetCanceler gives the guard the way to cancel the call's context with a
// cause (a revoked stream), so that it derives no context of its own; the
// call's context must be the one that carries ci.
func (ci *CallInfo) SetCanceler(c Canceler) { ci.canceler = c }

// Value answers a context's Value for the guard's keys: the server's
// call context, which carries a CallInfo, calls it first.
func (ci *CallInfo) Value(key any) (any, bool) {
	switch key {
	case callInfoKey{}:
		return ci, true
	case callerKey{}:
		if ci.authorized != nil {
			return ci.authorized, true
		}
	}
	return nil, false
}

type callInfoKey struct{}

// callInfoContext carries a CallInfo: one allocation for the context and
// the record.
type callInfoContext struct {
	context.Context
	info CallInfo
}

func (c *callInfoContext) Value(key any) any {
	if v, ok := c.info.Value(key); ok {
		return v
	}
	return c.Context.Value(key)
}

// WithCallInfo returns ctx with an empty CallInfo for the guard to fill.
func WithCallInfo(ctx context.Context) context.Context {
	return &callInfoContext{Context: ctx}
}

// CallInfoFrom returns the CallInfo of ctx, or nil.
func CallInfoFrom(ctx context.Context) *CallInfo {
	ci, _ := ctx.Value(callInfoKey{}).(*CallInfo)
	return ci
}

// newCaller returns the Caller of the call: ci's own, or a new one
// without a CallInfo.
func (ci *CallInfo) newCaller() *Caller {
	if ci == nil {
		return &Caller{}
	}
	return &ci.own
}

// LogFields appends the request-log fields the guard learned, "caller"
// and "tenant" (each only if known), to fields. A nil CallInfo appends
// none.
func (ci *CallInfo) LogFields(fields []any) []any {
	if ci == nil {
		return fields
	}
	if ci.named != nil && ci.named.Name != "" {
		fields = append(fields, "caller", ci.named.Name)
	}
	if ci.tenant != "" {
		fields = append(fields, "tenant", clip(ci.tenant))
	}
	return fields
}

// note names the caller, and the tenant if not empty, in the call's
// request-log line (a no-op on a nil CallInfo).
func (ci *CallInfo) note(c *Caller, tenant string) {
	if ci == nil {
		return
	}
	ci.named = c
	if tenant != "" {
		ci.tenant = tenant
	}
}
