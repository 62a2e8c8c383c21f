// Package server exposes a broker.Broker over gRPC: the TokenBrokerService
// handlers, gRPC health and reflection. Handlers validate input, call the
// broker and choose status codes; the token logic lives in package broker.
package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/guard"
)

// Broker is what the handlers need of *broker.Broker.
type Broker interface {
	Get(ctx context.Context, r broker.Request) (*broker.Token, error)
	Invalidate(ctx context.Context, tenant string, scopes []string, sha256Hex string) (*broker.Token, error)
	WatchNotify(ctx context.Context, tenant string, scopes []string, notify func()) (*broker.Watch, error)
	Tenants() []broker.TenantInfo
}

// Config configures a Server. Zero values mean defaults.
type Config struct {
	Broker Broker
	// Health serves grpc.health.v1; nil means a new one. Create it before
	// the broker to pass NewHealthStatus(h).SetTenant (or TenantHealth(h))
	// as broker.Config.OnTenantHealth.
	Health *health.Server
	Logger *slog.Logger
	// ServerOptions are appended to the server's own (interceptors, TLS…).
	ServerOptions []grpc.ServerOption
	// UnaryInterceptors and StreamInterceptors run after recovery and
	// logging, before the handlers (authentication, policy, limits).
	UnaryInterceptors  []grpc.UnaryServerInterceptor
	StreamInterceptors []grpc.StreamServerInterceptor
	// Limits bound messages, connections and unauthenticated streams
	// (zero fields: the defaults); serve on Server.Listener for the
	// connection caps.
	Limits limits.Limits
	// TenantAccess returns which tenants' health the peer of ctx may see
	// (guard.Guard.TenantAccess); nil shows every tenant to everyone.
	TenantAccess func(ctx context.Context) func(tenant string) bool
	// SlowCall is the duration from which a successful unary call is
	// logged at info; zero means DefaultSlowCall. See New.
	SlowCall time.Duration
	// VerifyCredentials, if set, checks the API key in a new stream's
	// header (nil error: it verifies). Token RPCs whose key does not
	// verify are then refused before any message is read; without it any
	// presented key counts as credentials for the stream caps. It gets
	// the stream's context as the tap has it and returns the context the
	// stream gets (guard.Guard.VerifyStream marks it with the verified
	// key, so the interceptors do not hash the key again), and the full
	// method name, for its audit of a refusal; its error (a status error)
	// is what the client receives.
	VerifyCredentials func(ctx context.Context, header metadata.MD, fullMethod string) (context.Context, error)
}

// DefaultSlowCall is Config.SlowCall's default: a cache hit takes
// microseconds, so a call of a second waited for the identity provider.
const DefaultSlowCall = time.Second

// abortGrace is how long Shutdown waits for calls whose contexts it
// cancelled to return before it closes their connections.
const abortGrace = time.Second

// errShuttingDown is the cause of the contexts Shutdown cancels.
var errShuttingDown = errors.New("server: shutting down")

// Server is a gRPC server for a broker with health and reflection.
type Server struct {
	tbv1.UnimplementedTokenBrokerServiceServer

	GRPC   *grpc.Server
	Health *health.Server

	broker    Broker
	responses *responseCache // GetToken responses, shared by calls
	senders   *senders       // run WatchToken sends (see sendApart)
	log       *slog.Logger
	limits    limits.Limits
	drain     chan struct{}
	drainOne  sync.Once
	// abort is cancelled when Shutdown's timeout ends: every call's
	// context is cancelled with it, and the call ends UNAVAILABLE.
	abort     context.Context
	abortCall context.CancelCauseFunc
	// codec encodes each WatchToken update once for all its streams.
	codec *sharedCodec
}

// New builds the gRPC server and registers TokenBrokerService,
// grpc.health.v1.Health and server reflection on it.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Health == nil {
		cfg.Health = health.NewServer()
	}
	limits := cfg.Limits.WithDefaults()
	codec := newSharedCodec()
	s := &Server{broker: cfg.Broker, responses: newResponseCache(codec), senders: newSenders(), log: log, Health: cfg.Health, drain: make(chan struct{}), limits: limits, codec: codec}
	s.abort, s.abortCall = context.WithCancelCause(context.Background())
	perIP := &ipStreams{max: limits.MaxOpenStreamsPerIP, n: map[string]int{}}
	slow := cfg.SlowCall
	if slow <= 0 {
		slow = DefaultSlowCall
	}
	logger, logOpts := callLog(log, slow)
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in handler", "panic", fmt.Sprint(p))
		return status.Error(codes.Internal, "internal error")
	})
	// The abort interceptors come last, so that the logs, metrics and
	// audit of the outer ones see the UNAVAILABLE of an aborted call.
	unary := append([]grpc.UnaryServerInterceptor{
		withCallInfo(recovery.UnaryServerInterceptor(recoverOpt)),
		logging.UnaryServerInterceptor(logger, logOpts...),
	}, cfg.UnaryInterceptors...)
	unary = append(unary, s.abortableUnary)
	stream := append([]grpc.StreamServerInterceptor{
		withCallInfoStream(recovery.StreamServerInterceptor(recoverOpt)),
		logging.StreamServerInterceptor(logger, logOpts...),
		perIP.interceptor,
	}, cfg.StreamInterceptors...)
	stream = append(stream, s.abortableStream)
	opts := append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		// Calls run on a few long-lived goroutines whose stacks have
		// grown already, instead of a new goroutine per call that grows
		// its stack again (runtime.copystack was ~15% of a cache hit).
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.ForceServerCodecV2(s.codec),
		// 8 KiB instead of grpc-go's 32 KiB read buffer per connection
		// (idle watch connections hold it for good): one read still takes
		// in ~50 unary requests of ~150 bytes, more than a client keeps in
		// flight on one connection; larger frames bypass the buffer. The
		// write buffer is grpc-go's shared pool (its default in v1.85),
		// released after each flush.
		grpc.ReadBufferSize(8 << 10),
	}, serverOptions(limits)...)
	streams := &streamLimiter{
		authMax: limits.MaxStreamsPerIP, anonMax: limits.MaxAnonymousStreamsPerIP,
		access: cfg.TenantAccess, verify: cfg.VerifyCredentials, n: map[string]int{},
		keyMax: limits.MaxStreamsPerAPIKey, byKey: map[[sha256.Size]byte]int{},
		denied: refusedEverySecond(log),
	}
	opts = append(opts, streams.serverOptions()...)
	opts = append(opts, cfg.ServerOptions...)
	s.GRPC = grpc.NewServer(opts...)
	tbv1.RegisterTokenBrokerServiceServer(s.GRPC, s)
	healthpb.RegisterHealthServer(s.GRPC, &healthServer{Server: s.Health, access: cfg.TenantAccess})
	reflection.Register(s.GRPC)
	return s
}

// Drain marks every service NOT_SERVING and ends open WatchToken streams
// with UNAVAILABLE, so that GracefulStop can finish. It is idempotent.
func (s *Server) Drain() {
	s.drainOne.Do(func() {
		s.Health.Shutdown()
		close(s.drain)
	})
}

// Shutdown drains, then stops gracefully: no new connections or calls,
// in-flight calls may finish until ctx ends. After that, the calls still
// running (e.g. waiting on a hanging identity provider) have their
// contexts cancelled and end with a clean UNAVAILABLE status; only a call
// that ignores that for another second has its connection closed. It
// returns nil after a graceful stop, else ctx's error, wrapped. Call it
// once; the broker is the caller's to close afterwards.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	done := make(chan struct{})
	go func() {
		s.GRPC.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.log.Warn("in-flight calls did not finish in time; ending them UNAVAILABLE")
	s.abortCall(errShuttingDown)
	grace := time.NewTimer(abortGrace)
	defer grace.Stop()
	select {
	case <-done:
		return fmt.Errorf("server: in-flight calls did not finish in time and were ended UNAVAILABLE: %w", ctx.Err())
	case <-grace.C:
		s.log.Warn("calls did not end after cancellation; closing their connections")
		s.GRPC.Stop()
		<-done
		return fmt.Errorf("server: in-flight calls did not finish in time and were closed: %w", ctx.Err())
	}
}

// abortable returns ctx cancelled with errShuttingDown when Shutdown
// aborts the calls; release must be called when the call ends.
func (s *Server) abortable(ctx context.Context) (_ context.Context, release func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(s.abort, func() { cancel(errShuttingDown) })
	return ctx, func() { stop(); cancel(nil) }
}

// abortedStatus replaces the error of a call that Shutdown aborted.
func abortedStatus(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errShuttingDown) {
		return status.Error(codes.Unavailable, "broker is shutting down; retry, another replica will answer")
	}
	return err
}

func (s *Server) abortableUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, release := s.abortable(ctx)
	defer release()
	resp, err := handler(ctx, req)
	if err = abortedStatus(ctx, err); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *Server) abortableStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, release := s.abortable(ss.Context())
	defer release()
	w := middleware.WrapServerStream(ss)
	w.WrappedContext = ctx
	return abortedStatus(ctx, handler(srv, w))
}

// GetToken implements TokenBrokerService.
func (s *Server) GetToken(ctx context.Context, req *tbv1.GetTokenRequest) (*tbv1.GetTokenResponse, error) {
	r := broker.Request{Tenant: req.GetTenant(), Scopes: req.GetScopes()}
	if d := req.GetMinValid(); d != nil { // unset: the broker's default rule
		if err := d.CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "min_valid: %v", err)
		}
		minValid := d.AsDuration()
		if minValid < 0 {
			return nil, status.Errorf(codes.InvalidArgument, "min_valid %s is negative; omit it for the default", minValid)
		}
		r.MinValid = &minValid
	}
	tok, err := s.broker.Get(withOwner(ctx), r)
	if err != nil {
		return nil, callStatus(ctx, err)
	}
	return s.responses.get(tok), nil
}

// InvalidateToken implements TokenBrokerService.
func (s *Server) InvalidateToken(ctx context.Context, req *tbv1.InvalidateTokenRequest) (*tbv1.InvalidateTokenResponse, error) {
	tok, err := s.broker.Invalidate(withOwner(ctx), req.GetTenant(), req.GetScopes(), strings.ToLower(req.GetTokenSha256()))
	if err != nil {
		return nil, callStatus(ctx, err)
	}
	return &tbv1.InvalidateTokenResponse{Token: toProto(tok)}, nil
}

// WatchToken implements TokenBrokerService.
//
// The stream's goroutine only waits for the stream's end; the senders
// push the updates (see pushedWatch). An idle stream's goroutine parks
// here for as long as the stream lives, and Go keeps the stack it grew
// (halving it only while its use plus 800 bytes is under a quarter), so
// the deep send path (the guard's audit, the codec, the transport) never
// runs on it: its stack stays at 8 KiB instead of 16 KiB. A refresh wakes
// no stream goroutine at all.
func (s *Server) WatchToken(req *tbv1.WatchTokenRequest, stream grpc.ServerStreamingServer[tbv1.WatchTokenResponse]) error {
	p := &pushedWatch{s: s, stream: stream, end: make(chan error, 2)}
	if pr, ok := peer.FromContext(stream.Context()); ok && pr.Addr != nil {
		p.conn = pr.Addr.String() // a string: any net.Addr's type may not be comparable
	}
	w, err := s.broker.WatchNotify(withOwner(stream.Context()), req.GetTenant(), req.GetScopes(), p.notify)
	if err != nil {
		return toStatus(err)
	}
	p.start(w)
	wait := abandonSendAfter
	defer func() { p.close(wait) }()
	ctx := stream.Context()
	select {
	case err := <-p.end:
		if err == errWatchEnded {
			err, wait = p.awaitEnd(ctx, w)
		}
		return err
	case <-s.drain:
		return watchEnd(ctx, true)
	case <-ctx.Done():
		return watchEnd(ctx, false)
	}
}

// pushedWatch is one WatchToken stream whose updates the senders send.
type pushedWatch struct {
	s      *Server
	conn   string // the connection's remote address: its pushes run together
	stream grpc.ServerStreamingServer[tbv1.WatchTokenResponse]
	// end receives why the stream ends: from finish, once (a failed send,
	// or the watch's end after its last update), and errWatchEnded from
	// notify, once. Two slots, so that neither ever blocks.
	end        chan error
	busy       atomic.Bool   // a push is queued or running: at most one per stream
	again      atomic.Bool   // a notice came since the running push looked
	endNoticed atomic.Bool   // errWatchEnded was sent
	sends      atomic.Uint32 // odd while a send runs (see awaitEnd)

	mu     sync.Mutex // held while sending: one send at a time
	w      atomic.Pointer[broker.Watch]
	closed atomic.Bool // no send starts once set
}

// errWatchEnded tells the handler that the broker ended the watch (a
// tenant removed or reconfigured) while a push was queued or running.
var errWatchEnded = errors.New("server: watch ended")

// notify is the broker's notice that the watch has something new: it
// queues a push unless one is queued or running, which then looks again
// (latest-wins: a push sends what Next has then). So a stream whose
// client does not read holds at most one sender, however many updates
// come meanwhile.
//
// When the broker ends the watch, the handler hears of it here too, not
// only from the push: a push blocked by a client that does not read would
// never report it, and the stream would outlive its tenant.
func (p *pushedWatch) notify() {
	p.again.Store(true)
	if p.busy.CompareAndSwap(false, true) {
		p.s.senders.do(p.conn, p.push)
	}
	if w := p.w.Load(); w != nil && w.Ended() && p.endNoticed.CompareAndSwap(false, true) {
		p.end <- errWatchEnded
	}
}

// start hands the watch over; the broker's first notices may have come
// before there was one to read, so it notifies once more.
func (p *pushedWatch) start(w *broker.Watch) {
	p.w.Store(w)
	p.notify()
}

// push sends the watch's latest update until no notice is left.
func (p *pushedWatch) push() {
	for {
		p.again.Store(false)
		p.sendLatest()
		p.busy.Store(false)
		// A notice that came before busy was cleared found it set: take
		// it over, unless a push of its own already did.
		if !p.again.Load() || !p.busy.CompareAndSwap(false, true) {
			return
		}
	}
}

// sendLatest sends the watch's latest update, or ends the stream when the
// watch ended or a send failed.
func (p *pushedWatch) sendLatest() {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.w.Load()
	if p.closed.Load() || w == nil {
		return
	}
	u, ok, ended := w.Next()
	switch {
	case ended:
		p.finish(toStatus(w.Err()))
	case ok:
		p.sends.Add(1)
		err := p.stream.Send(p.s.watchResponse(u))
		p.sends.Add(1)
		if err != nil {
			p.finish(err)
		}
	}
}

// finish ends the stream with err, unless it is ending already; p.mu is
// held.
func (p *pushedWatch) finish(err error) {
	if p.closed.CompareAndSwap(false, true) {
		p.end <- err // the one slot, filled once
	}
}

// awaitEnd runs when the broker has ended the watch while a push was
// queued or running: that push sends what is left and then the status.
// It waits for that push, also while it is queued behind other streams'
// sends on the connection (up to maxEndWait), but gives up a send that
// has not finished in abandonSendAfter: a client that does not read. It
// returns the stream's status and how long close may still wait.
func (p *pushedWatch) awaitEnd(ctx context.Context, w *broker.Watch) (error, time.Duration) {
	t := time.NewTicker(abandonSendAfter)
	defer t.Stop()
	seen := p.sends.Load()
	for range maxEndWait / abandonSendAfter {
		select {
		case err := <-p.end:
			return err, abandonSendAfter
		case <-p.s.drain:
			return watchEnd(ctx, true), abandonSendAfter
		case <-ctx.Done():
			return watchEnd(ctx, false), abandonSendAfter
		case <-t.C:
		}
		now := p.sends.Load()
		if now == seen && now%2 == 1 {
			return toStatus(w.Err()), 0 // the same send, blocked
		}
		seen = now
	}
	return toStatus(w.Err()), 0
}

// maxEndWait bounds awaitEnd.
const maxEndWait = 5 * time.Second

// abandonSendAfter bounds how long a stream that is ending (a drain, a
// revocation, the client's cancel, the watch's end) waits for its send
// in progress.
const abandonSendAfter = 250 * time.Millisecond

// close stops the pushes and unsubscribes. The handler calls it before it
// returns. It waits for a send in progress, but at most wait: a client
// that does not read can block a send on flow control for ever, and only
// the handler's return ends the transport stream and so fails that send
// (grpc-go's answer to a send that may block), so waiting for it would
// keep a revoked, drained or ended stream open until its connection
// closes.
func (p *pushedWatch) close(wait time.Duration) {
	p.closed.Store(true)
	if p.mu.TryLock() {
		p.mu.Unlock()
	} else if wait > 0 {
		sent := make(chan struct{})
		go func() { p.mu.Lock(); p.mu.Unlock(); close(sent) }() // ends with the send
		t := time.NewTimer(wait)
		select {
		case <-sent:
		case <-t.C:
		}
		t.Stop()
	}
	_ = p.w.Load().Close()
}

// watchEnd is the status of a stream ended by a drain or by its context.
//
//go:noinline
func watchEnd(ctx context.Context, draining bool) error {
	if draining {
		return status.Error(codes.Unavailable, "broker is shutting down; reconnect to another replica")
	}
	return status.FromContextError(ctx.Err()).Err()
}

// watchResponse is u as a message, one shared by every stream that
// receives the same update and encoded once for all of them.
func (s *Server) watchResponse(u broker.Update) *tbv1.WatchTokenResponse {
	return u.Shared(func() any { return s.codec.share(toWatchResponse(u)) }).(*sharedResponse).msg
}

// withOwner names the authenticated caller as the owner of the scope sets
// it creates, so that the broker can share a tenant's budget fairly.
func withOwner(ctx context.Context) context.Context {
	if c, ok := guard.CallerFromContext(ctx); ok {
		return broker.WithOwner(ctx, c.Name)
	}
	return ctx
}

// callStatus is toStatus for an error of a call made on ctx: a context
// error is the caller's own (DEADLINE_EXCEEDED, CANCELLED) only when ctx
// itself ended; any other is a failure of the broker's work (UNAVAILABLE).
func callStatus(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return status.FromContextError(ctx.Err()).Err()
	}
	return toStatus(err)
}

// toStatus chooses the gRPC status for a broker error by its cause.
// Messages are the broker's, which carry no secrets. An upstream error wins
// over any context error it may wrap: the identity provider failed.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	var tooShort *broker.TooShortLivedError
	var ue *upstream.Error
	switch {
	case errors.Is(err, broker.ErrInvalidArgument):
		return status.Error(codes.InvalidArgument, msg)
	case errors.Is(err, broker.ErrUnknownTenant), errors.Is(err, broker.ErrTenantRemoved):
		return status.Error(codes.NotFound, msg)
	case errors.Is(err, broker.ErrTooManyScopeSets), errors.Is(err, broker.ErrNewScopeSetsTooFast):
		return status.Error(codes.ResourceExhausted, msg)
	case errors.Is(err, broker.ErrClosed), errors.Is(err, broker.ErrTenantChanged), errors.Is(err, broker.ErrEvicted):
		// Retryable: calling or watching again serves the new state.
		return status.Error(codes.Unavailable, msg)
	case errors.As(err, &tooShort):
		return status.Error(codes.FailedPrecondition, msg)
	case errors.As(err, &ue) && ue.Permanent && ue.Code == "invalid_scope":
		return status.Error(codes.InvalidArgument, msg)
	case errors.As(err, &ue) && ue.Permanent:
		return status.Error(codes.FailedPrecondition, msg+"; fix the tenant's credentials")
	}
	// Upstream failures, and context errors that are not the caller's.
	return status.Error(codes.Unavailable, msg)
}

func toProto(t *broker.Token) *tbv1.Token {
	return &tbv1.Token{
		AccessToken: t.AccessToken,
		TokenType:   t.TokenType,
		ExpireTime:  timestamppb.New(t.Expiry),
		IssueTime:   timestamppb.New(t.IssuedAt),
		Scopes:      t.Scopes,
		Tenant:      t.Tenant,
		Version:     t.Version,
	}
}

func toStatusProto(st broker.Status) *tbv1.TokenStatus {
	p := &tbv1.TokenStatus{State: stateProto[st.State]}
	if st.LastError != nil {
		p.LastError = st.LastError.Error()
	}
	if !st.NextRefresh.IsZero() {
		p.NextRefreshTime = timestamppb.New(st.NextRefresh)
	}
	return p
}

var stateProto = map[broker.State]tbv1.TokenState{
	broker.StatePending: tbv1.TokenState_TOKEN_STATE_PENDING,
	broker.StateReady:   tbv1.TokenState_TOKEN_STATE_READY,
	broker.StateStale:   tbv1.TokenState_TOKEN_STATE_STALE,
	broker.StateFailing: tbv1.TokenState_TOKEN_STATE_FAILING,
}

func toWatchResponse(u broker.Update) *tbv1.WatchTokenResponse {
	r := &tbv1.WatchTokenResponse{Status: toStatusProto(u.Status)}
	if u.Token != nil {
		r.Token = toProto(u.Token)
	}
	return r
}
