package guard

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker/names"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// target is what a request asks for.
type target struct {
	tenant string
	scopes []string
	// listing marks ListTenants, which every known caller may call.
	listing bool
}

// targetOf extracts the target of a request; ok is false for a message
// the guard does not know, which is denied.
func targetOf(req any) (target, bool) {
	switch r := req.(type) {
	case *tbv1.GetTokenRequest:
		return target{tenant: r.GetTenant(), scopes: r.GetScopes()}, true
	case *tbv1.WatchTokenRequest:
		return target{tenant: r.GetTenant(), scopes: r.GetScopes()}, true
	case *tbv1.InvalidateTokenRequest:
		return target{tenant: r.GetTenant(), scopes: r.GetScopes()}, true
	case *tbv1.ListTenantsRequest:
		return target{listing: true}, true
	}
	return target{}, false
}

// decide returns nil if c may have t under pol, else a status error. It
// never depends on whether the tenant exists. effective are the scopes
// checked: the request's, or the tenant's defaults for a request without
// scopes from a caller with a scope allow-list.
func (g *Guard) decide(pol *policy.Policy, c *Caller, t target) (effective []string, err error) {
	if n := names.CountDistinct(t.scopes); g.limits.MaxScopesPerRequest >= 0 && n > g.limits.MaxScopesPerRequest {
		return nil, status.Errorf(codes.InvalidArgument, "%d distinct scopes requested; at most %d are allowed per request (limits.max_scopes_per_request)", n, g.limits.MaxScopesPerRequest)
	}
	if pol.Empty() {
		if c.Loopback {
			return t.scopes, nil
		}
		return nil, status.Error(codes.PermissionDenied, "this broker has no callers configured and serves clients on its own host only")
	}
	pc, ok := c.resolve(pol)
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "caller %q is no longer in this broker's policy", c.Name)
	}
	if t.listing {
		return nil, nil
	}
	if !pc.TenantAllowed(t.tenant) {
		return nil, status.Error(codes.PermissionDenied, deniedMsg(c, t.tenant))
	}
	effective = t.scopes
	if len(effective) == 0 && pc.RestrictsScopes() {
		if g.defaultScopes != nil {
			effective = g.defaultScopes(t.tenant)
		}
		if len(effective) == 0 {
			return nil, status.Errorf(codes.PermissionDenied, "caller %q may request only scopes matching %s; name them in the request", c.Name, strings.Join(pc.Scopes, " "))
		}
	}
	for _, s := range effective {
		if !pc.ScopesAllowed([]string{s}) {
			return nil, status.Errorf(codes.PermissionDenied, "caller %q may not request scope %q of tenant %q; it may request scopes matching %s",
				c.Name, clip(s), clip(t.tenant), strings.Join(pc.Scopes, " "))
		}
	}
	return effective, nil
}

// unary is the guard's unary interceptor: authentication, the call rate
// limit, authorization (and the InvalidateToken limit), then the audit
// line of the result, in one layer.
func (g *Guard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !guarded(info.FullMethod) {
		return handler(ctx, req)
	}
	c, err := g.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	t, known := targetOf(req)
	ci := CallInfoFrom(ctx)
	ci.note(c, t.tenant)
	if err := g.limitCall(ctx, c); err != nil {
		return nil, err
	}
	if !known {
		err := status.Errorf(codes.PermissionDenied, "%s is not covered by the access policy", info.FullMethod)
		g.deny(ctx, c, "", nil, err)
		return nil, err
	}
	if _, err := g.decide(g.holder.Load(), c, t); err != nil {
		g.deny(ctx, c, t.tenant, t.scopes, err)
		return nil, err
	}
	if _, ok := req.(*tbv1.InvalidateTokenRequest); ok {
		if err := g.limitInvalidation(c); err != nil {
			g.deny(ctx, c, t.tenant, t.scopes, err)
			return nil, err
		}
	}
	if ci != nil {
		ci.authorized = c // CallerFromContext finds it there
	} else {
		ctx = context.WithValue(ctx, callerKey{}, c)
	}
	resp, err := handler(ctx, req)
	if aerr := g.auditResult(ctx, c, info.FullMethod, req, resp, err); aerr != nil && err == nil {
		return nil, errAuditUnavailable // no token without its audit line
	}
	return resp, err
}

// auditResult records the outcome of GetToken and InvalidateToken and
// returns the write's error.
func (g *Guard) auditResult(ctx context.Context, c *Caller, method string, req, resp any, err error) error {
	r := audit.Record{Method: method, Caller: c.Name, Identity: c.identity, Peer: c.Peer, Result: audit.ResultOK}
	var tok *tbv1.Token
	switch q := req.(type) {
	case *tbv1.GetTokenRequest:
		r.Event, r.Tenant, r.Scopes = audit.EventIssue, q.GetTenant(), q.GetScopes()
		if p, ok := resp.(*tbv1.GetTokenResponse); ok {
			tok = p.GetToken()
		}
	case *tbv1.InvalidateTokenRequest:
		r.Event, r.Tenant, r.Scopes = audit.EventInvalidate, q.GetTenant(), q.GetScopes()
		r.RejectedFingerprint = fingerprintPrefix(q.GetTokenSha256())
		if p, ok := resp.(*tbv1.InvalidateTokenResponse); ok {
			tok = p.GetToken()
		}
	default:
		return nil
	}
	if err != nil {
		st := status.Convert(err)
		r.Result, r.Code, r.Reason = audit.ResultError, st.Code().String(), st.Message()
	}
	g.fillToken(&r, tok)
	return g.auditLog(ctx, r)
}

func (g *Guard) fillToken(r *audit.Record, tok *tbv1.Token) {
	if tok == nil {
		return
	}
	r.TokenFingerprint = g.fingerprints.of(tok)
	r.Version = tok.GetVersion()
	if s := tok.GetScopes(); len(s) > 0 {
		r.Scopes = s
	}
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

// stream is the guard's stream interceptor: authentication, the call
// rate limit and the caller's stream cap when the stream opens, then
// authorization on its request message and at every policy change (see
// guardedStream), in one layer.
func (g *Guard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !guarded(info.FullMethod) {
		return handler(srv, ss)
	}
	ctx := ss.Context()
	c, err := g.authenticate(ctx)
	if err != nil {
		return err
	}
	if err := g.limitCall(ctx, c); err != nil {
		logCall(ctx, c, "")
		return err
	}
	if err := g.acquireStream(ctx, c); err != nil {
		logCall(ctx, c, "")
		return err
	}
	defer g.streams.release(c.Name)
	gs := &guardedStream{ServerStream: ss, g: g, c: c, method: info.FullMethod}
	var cctx context.Context
	cctx, gs.cancel = context.WithCancelCause(ctx)
	gs.ctx = callerContext{Context: cctx, c: c}
	err = handler(srv, gs)
	g.untrack(gs)
	gs.cancel(nil)
	if st := gs.revoked.Load(); st != nil {
		// Audited before the status reaches the client.
		g.deny(gs.ctx, c, gs.t.tenant, gs.t.scopes, st.Err())
		g.log.Info("stream ended: policy change revoked access", "caller", c.Name, "tenant", gs.t.tenant, "method", gs.method)
		return st.Err()
	}
	return err
}

// callerContext is a stream's context with its caller, as
// context.WithValue(ctx, callerKey{}, c) but held in the guardedStream.
type callerContext struct {
	context.Context
	c *Caller
}

func (x callerContext) Value(key any) any {
	if key == (callerKey{}) {
		return x.c
	}
	return x.Context.Value(key)
}

// guardedStream authorizes a stream on its request message, ends it when
// a policy change revokes the right (see openStreams), and audits the
// tokens it sends.
type guardedStream struct {
	grpc.ServerStream
	ctx    callerContext
	cancel context.CancelCauseFunc
	g      *Guard
	c      *Caller
	method string

	// authorized and t are set by RecvMsg before the handler sends;
	// SendMsg reads them and keeps lastVersion. Sends may run on other
	// goroutines than the handler's (the server's WatchToken senders),
	// one at a time and ordered after RecvMsg by the server's locks.
	authorized  bool
	t           target
	lastVersion uint64
	revoked     atomic.Pointer[status.Status] // set when a policy change ends the stream

	// checking is held by SendMsg from its revoked check until its audit
	// line is written, never over the network send; a revocation takes it
	// once after setting revoked (see redecide).
	checking sync.Mutex
}

func (s *guardedStream) Context() context.Context { return s.ctx }

func (s *guardedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if s.authorized {
		return nil
	}
	t, ok := targetOf(m)
	logCall(s.ctx, s.c, t.tenant)
	if !ok || t.listing {
		err := status.Errorf(codes.PermissionDenied, "%s is not covered by the access policy", s.method)
		s.g.deny(s.ctx, s.c, "", nil, err)
		return err
	}
	s.t = t
	if err := s.g.track(s); err != nil {
		s.g.deny(s.ctx, s.c, t.tenant, t.scopes, err)
		return err
	}
	s.authorized = true
	return nil
}

func (s *guardedStream) SendMsg(m any) error {
	if !s.authorized {
		return status.Error(codes.PermissionDenied, "stream not authorized")
	}
	if err := s.admit(m); err != nil {
		return err
	}
	// Not under checking: a policy change never waits for the network.
	return s.ServerStream.SendMsg(m)
}

// admit refuses m if a policy change revoked the stream, else writes the
// audit line of the token m carries, if new. It runs under checking, so
// that a revocation, which takes checking once after setting revoked,
// returns only when no admit that passed the check is still writing: once
// holder.Store returns, the stream writes no more issue lines. What is
// left is the send of a message admitted before the change: its token
// was authorized under the policy live at its check and its line is
// written before Store returns; the wire may still carry it (waiting for
// the send would let a client that stopped reading hold up a reload).
// The wait costs Store at most the audit write already in flight (with
// audit.fsync: always, one fsync, shared by the group commit with every
// other stream's), and only for a revoked stream that is sending.
func (s *guardedStream) admit(m any) error {
	s.checking.Lock()
	defer s.checking.Unlock()
	if st := s.revoked.Load(); st != nil {
		return st.Err()
	}
	// Audited before it is sent, so that no token reaches a caller
	// without its audit line: if the line cannot be written, the stream
	// ends with UNAVAILABLE and the client reconnects later.
	if r, ok := m.(*tbv1.WatchTokenResponse); ok && r.GetToken() != nil && r.GetToken().GetVersion() != s.lastVersion {
		rec := audit.Record{Event: audit.EventIssue, Method: s.method, Caller: s.c.Name, Identity: s.c.identity, Peer: s.c.Peer,
			Tenant: s.t.tenant, Scopes: s.t.scopes, Result: audit.ResultOK}
		s.g.fillToken(&rec, r.GetToken())
		if err := s.g.auditLog(s.ctx, rec); err != nil {
			return errAuditUnavailable
		}
		s.lastVersion = r.GetToken().GetVersion()
	}
	return nil
}

// openStreams are the authorized streams, each with the policy it was
// last decided under. The guard re-decides them inside every
// policy.Holder.Store (see redecide), so that a stream costs a map entry,
// not a goroutine, and a revocation is done when the policy goes live.
type openStreams struct {
	mu  sync.Mutex
	set map[*guardedStream]*policy.Policy
}

// track authorizes s.t under the current policy and, if allowed, adds s
// to the open streams.
//
// Deciding and adding under o.mu, with the policy loaded under it, is
// what keeps a stream from surviving under a stale policy while Store(p)
// races: Store swaps p in, then runs redecide(p), which takes o.mu. If
// track holds o.mu first, redecide finds s (decided under the older
// policy) and re-decides it under p; if redecide holds it first, the
// swap came before, so track's Load returns p (or a newer policy, whose
// own redecide follows). Lock order: the Holder's lock, then o.mu;
// track takes no Holder lock (Load is atomic).
func (g *Guard) track(s *guardedStream) error {
	o := &g.open
	o.mu.Lock()
	defer o.mu.Unlock()
	pol := g.holder.Load()
	if _, err := g.decide(pol, s.c, s.t); err != nil {
		return err
	}
	if o.set == nil {
		o.set = map[*guardedStream]*policy.Policy{}
	}
	o.set[s] = pol
	return nil
}

// untrack removes s from the open streams.
func (g *Guard) untrack(s *guardedStream) {
	o := &g.open
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.set, s)
}

// redecide is the guard's policy.Holder observer: it runs inside
// Store(pol), after the swap, and re-decides every open stream under
// pol. A stream whose right was revoked gets revoked set and its context
// cancelled with PERMISSION_DENIED (its own goroutine audits that, see
// stream) and is dropped from the set; then redecide waits until none of
// them is still in admit (see there), with o.mu released so that streams
// opening meanwhile are not held up.
func (g *Guard) redecide(pol *policy.Policy) {
	o := &g.open
	var revoked []*guardedStream
	o.mu.Lock()
	for s, decided := range o.set {
		if decided == pol {
			continue
		}
		o.set[s] = pol
		if _, err := g.decide(pol, s.c, s.t); err != nil {
			st := status.Newf(codes.PermissionDenied, "access revoked by a policy change: %s", status.Convert(err).Message())
			s.revoked.Store(st)
			s.cancel(st.Err())
			delete(o.set, s)
			revoked = append(revoked, s)
		}
	}
	o.mu.Unlock()
	// Every revoked flag is set before the first wait, so that the
	// admits still writing finish together (one audit group commit). An
	// empty critical section on purpose: taking the lock is the barrier.
	for _, s := range revoked {
		s.checking.Lock()
		s.checking.Unlock()
	}
}
