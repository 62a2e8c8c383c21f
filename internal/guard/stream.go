package guard

import (
	"context"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// stream runs a stream's steps: authenticate when it opens; authorize
// and limit on its request message (RecvMsg), and authorize again at
// every policy change (redecide); audit every token it sends (SendMsg).
func (g *Guard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	a := g.admitted(ctx)
	if a.claim() {
		defer a.release()
	}
	if !guarded(info.FullMethod) {
		return handler(srv, ss)
	}
	p, pr := g.proofOf(ctx, a)
	ci := CallInfoFrom(ctx)
	c := ci.newCaller()
	if aerr := g.authenticate(c, g.holder.Load(), p, pr); aerr != nil {
		return g.deny(ctx, info.FullMethod, c, target{}, g.charge(c.Peer, aerr))
	}
	ci.note(c, "")
	gs := &guardedStream{ServerStream: ss, g: g, c: c, method: info.FullMethod}
	if ci != nil && ci.canceler != nil {
		// The server's call context: it names the caller and the guard
		// cancels it, without a context of the guard's per stream.
		ci.authorized = c
		gs.cancel = ci.canceler
	} else {
		cctx, cancel := context.WithCancelCause(ctx)
		gs.ServerStream = &contextStream{ServerStream: ss, ctx: callerContext{Context: cctx, c: c}}
		gs.cancel = cancelFunc(cancel)
	}
	err := handler(srv, gs)
	g.untrack(gs)
	gs.cancel.CancelCall(nil)
	if e := gs.revoked.Load(); e != nil && gs.authorized {
		// Audited before the status reaches the client.
		g.deny(gs.Context(), gs.method, c, gs.t, e)
		g.log.Info("stream ended: policy change revoked access", "caller", c.Name, "tenant", gs.t.tenant, "method", gs.method)
		return e
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

// contextStream is a stream with another context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }

// cancelFunc is a context.CancelCauseFunc as a Canceler.
type cancelFunc context.CancelCauseFunc

func (f cancelFunc) CancelCall(cause error) { f(cause) }

// guardedStream authorizes a stream on its request message, ends it when
// a policy change revokes the right (see redecide), and audits the
// tokens it sends.
type guardedStream struct {
	grpc.ServerStream // its Context carries the caller (CallerFromContext)
	cancel            Canceler
	g                 *Guard
	c                 *Caller
	method            string

	// Set by RecvMsg before any send; sends may run on the server's
	// senders, one at a time, after RecvMsg.
	authorized  bool
	t           target
	lastVersion uint64

	// revoked is set, under mu, when a policy change ends the stream;
	// admitting counts the admits past their revoked check that are
	// writing an audit line (see admit and redecide).
	mu        sync.Mutex
	revoked   atomic.Pointer[Error]
	admitting sync.WaitGroup
}

func (s *guardedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if s.authorized {
		return nil
	}
	t := targetOf(m)
	CallInfoFrom(s.Context()).note(s.c, t.tenant)
	t.unknown = t.unknown || t.listing // a stream lists nothing
	s.t = t
	err := s.g.track(s)
	if err == nil {
		if err = s.g.limit(s.c, t); err != nil {
			s.g.untrack(s)
		}
	}
	if err != nil {
		return s.g.deny(s.Context(), s.method, s.c, t, err)
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
	// Not while admitting: a policy change never waits for the network.
	return s.ServerStream.SendMsg(m)
}

// admit refuses m once a policy change revoked the stream, else writes
// the audit line of m's token if new (no token without its line). Store
// waits for an admit past its check (redecide), never for the network:
// a message admitted before may still be on its way.
func (s *guardedStream) admit(m any) error {
	var tok issued
	r, ok := m.(interface{ GetToken() *tbv1.Token })
	if ok && r.GetToken() != nil && r.GetToken().GetVersion() != s.lastVersion {
		tok, ok = issuedOf(m)
	} else {
		ok = false
	}
	s.mu.Lock()
	if e := s.revoked.Load(); e != nil {
		s.mu.Unlock()
		return e
	}
	if !ok {
		s.mu.Unlock()
		return nil
	}
	s.admitting.Add(1)
	s.mu.Unlock()
	defer s.admitting.Done()
	if err := s.g.audit(s.Context(), withToken(record(audit.EventIssue, s.method, s.c, s.t), tok)); err != nil {
		return errAuditUnavailable
	}
	s.lastVersion = tok.version
	return nil
}

// openStreams are the authorized streams, each with the policy it was
// last decided under, re-decided inside every policy.Holder.Store.
type openStreams struct {
	mu  sync.Mutex
	set map[*guardedStream]*policy.Policy
}

// track authorizes s.t and adds s to the open streams, both under o.mu
// with the policy loaded there: Store swaps before redecide takes o.mu,
// so s is either re-decided or decided under the new policy. Lock order:
// the Holder's lock, o.mu, a stream's mu.
func (g *Guard) track(s *guardedStream) *Error {
	o := &g.open
	o.mu.Lock()
	defer o.mu.Unlock()
	pol := g.holder.Load()
	if err := g.authorize(pol, s.c, s.method, s.t); err != nil {
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

// redecide runs inside Store(pol), after the swap: it revokes every open
// stream pol denies (revoked set, context cancelled; the stream audits
// that), then, o.mu released, waits for their admits in flight.
func (g *Guard) redecide(pol *policy.Policy) {
	o := &g.open
	var revoked []*guardedStream
	o.mu.Lock()
	for s, decided := range o.set {
		if decided == pol {
			continue
		}
		o.set[s] = pol
		if err := g.authorize(pol, s.c, s.method, s.t); err != nil {
			e := errorf(codes.PermissionDenied, "access revoked by a policy change: %s", err.Msg)
			s.mu.Lock()
			s.revoked.Store(e)
			s.mu.Unlock()
			s.cancel.CancelCall(e)
			delete(o.set, s)
			revoked = append(revoked, s)
		}
	}
	o.mu.Unlock()
	// Every revoked flag is set before the first wait, so that the
	// admits still writing finish together (one audit group commit).
	for _, s := range revoked {
		s.admitting.Wait()
	}
}
