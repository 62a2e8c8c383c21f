// Package server exposes a broker.Broker over gRPC: the TokenBrokerService
// handlers, gRPC health and reflection. Handlers validate input, call the
// broker and choose status codes; the token logic lives in package broker.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/broker/queue"
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
	// ServerOptions are appended to the server's own (TLS…).
	ServerOptions []grpc.ServerOption
	// Tap admits each call when its HEADERS arrive, before any message
	// (grpc.InTapHandle; guard.Guard.Tap); the refusals of calls whose
	// API key does not verify are counted in a log line once a second.
	Tap func(ctx context.Context, info *tap.Info) (context.Context, error)
	// UnaryInterceptor and StreamInterceptor (the guard's) run after the
	// server's own (recovery, request log, metrics), before the handlers.
	UnaryInterceptor  grpc.UnaryServerInterceptor
	StreamInterceptor grpc.StreamServerInterceptor
	// Metrics counts every call, those the guard refuses included; nil
	// counts none.
	Metrics Metrics
	// Limits bound messages and connections (zero fields: the defaults;
	// the guard caps calls); serve on Server.Listener for the connection
	// caps.
	Limits limits.Limits
	// TenantAccess returns which tenants' health the peer of ctx may see
	// (guard.Guard.TenantAccess); nil shows every tenant to everyone.
	TenantAccess func(ctx context.Context) func(tenant string) bool
	// SlowCall is the duration from which a successful unary call is
	// logged at info; zero means DefaultSlowCall. See New.
	SlowCall time.Duration
}

// DefaultSlowCall is Config.SlowCall's default: a cache hit takes
// microseconds, so a call of a second waited for the identity provider.
const DefaultSlowCall = time.Second

// streamWorkers is the number of goroutines that run calls (past them,
// grpc-go starts one per call): more than the calls in flight at c=50,
// for ~16 KiB of stack each. A stream holds its worker for its life.
const streamWorkers = 64

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

	broker   Broker
	senders  *queue.Queue[string, func()] // run WatchToken sends (see newSenders)
	log      *slog.Logger
	limits   limits.Limits
	watches  watches // the open WatchToken streams, for Drain
	drainOne sync.Once
	// abort is cancelled when Shutdown's timeout ends: every call's
	// context is cancelled with it, and the call ends UNAVAILABLE.
	abort     context.Context
	abortCall context.CancelCauseFunc
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
	l := cfg.Limits.WithDefaults()
	s := &Server{broker: cfg.Broker, senders: newSenders(), log: log, Health: cfg.Health, limits: l}
	s.abort, s.abortCall = context.WithCancelCause(context.Background())
	slow := cfg.SlowCall
	if slow <= 0 {
		slow = DefaultSlowCall
	}
	obs := newObserver(s, newCallLog(log, slow), cfg)
	opts := append([]grpc.ServerOption{
		grpc.UnaryInterceptor(obs.unary),
		grpc.StreamInterceptor(obs.stream),
		// Calls run on long-lived goroutines whose stacks have grown
		// already, instead of a new goroutine per call that grows its
		// stack again (runtime.copystack: 17-21% of an empty call's CPU,
		// the bare grpc-go floor's too, with 2 workers at c=50; 5% with
		// streamWorkers).
		grpc.NumStreamWorkers(streamWorkers),
		grpc.ForceServerCodecV2(codec{encoding.GetCodecV2("proto")}),
		// 8 KiB instead of grpc-go's 32 KiB read buffer per connection
		// (idle watch connections hold it for good): one read still takes
		// in ~50 unary requests of ~150 bytes, more than a client keeps in
		// flight on one connection; larger frames bypass the buffer. The
		// write buffer is grpc-go's shared pool (its default in v1.85),
		// released after each flush.
		grpc.ReadBufferSize(8 << 10),
	}, serverOptions(l)...)
	if cfg.Tap != nil {
		opts = append(opts, grpc.InTapHandle(countRefusals(cfg.Tap, refusedEverySecond(log))))
	}
	opts = append(opts, cfg.ServerOptions...)
	s.GRPC = grpc.NewServer(opts...)
	s.GRPC.RegisterService(s.serviceDesc(), s)
	healthpb.RegisterHealthServer(s.GRPC, &healthServer{Server: s.Health, access: cfg.TenantAccess})
	reflection.Register(s.GRPC)
	obs.register(s.GRPC)
	return s
}

// countRefusals is tap, calling refused for each call it refuses as
// UNAUTHENTICATED (its API key does not verify).
func countRefusals(t tap.ServerInHandle, refused func()) tap.ServerInHandle {
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		ctx, err := t(ctx, info)
		if status.Code(err) == codes.Unauthenticated {
			refused()
		}
		return ctx, err
	}
}

// Drain marks every service NOT_SERVING and ends open WatchToken streams
// with UNAVAILABLE, so that GracefulStop can finish. It is idempotent.
func (s *Server) Drain() {
	s.drainOne.Do(func() {
		s.Health.Shutdown()
		s.watches.drain()
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

// abortedStatus replaces the error of a call that Shutdown aborted
// (whose context ended after the abort).
func (s *Server) abortedStatus(ctx context.Context, err error) error {
	if err != nil && s.abort.Err() != nil && ctx.Err() != nil {
		return status.Error(codes.Unavailable, "broker is shutting down; retry, another replica will answer")
	}
	return err
}

// GetToken implements TokenBrokerService; the server answers with
// getToken's reply (see serviceDesc).
func (s *Server) GetToken(ctx context.Context, req *tbv1.GetTokenRequest) (*tbv1.GetTokenResponse, error) {
	r, err := s.getToken(ctx, req)
	if err != nil {
		return nil, err
	}
	return r.Message.(*tbv1.GetTokenResponse), nil
}

func (s *Server) getToken(ctx context.Context, req *tbv1.GetTokenRequest) (*reply, error) {
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
		return nil, s.callStatus(ctx, err)
	}
	return tokenReply(tok), nil
}

// InvalidateToken implements TokenBrokerService; the server answers with
// invalidateToken's reply (see serviceDesc).
func (s *Server) InvalidateToken(ctx context.Context, req *tbv1.InvalidateTokenRequest) (*tbv1.InvalidateTokenResponse, error) {
	r, err := s.invalidateToken(ctx, req)
	if err != nil {
		return nil, err
	}
	return r.Message.(*tbv1.InvalidateTokenResponse), nil
}

func (s *Server) invalidateToken(ctx context.Context, req *tbv1.InvalidateTokenRequest) (*reply, error) {
	tok, err := s.broker.Invalidate(withOwner(ctx), req.GetTenant(), req.GetScopes(), strings.ToLower(req.GetTokenSha256()))
	if err != nil {
		return nil, s.callStatus(ctx, err)
	}
	return invalidateReply(tok), nil
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
// itself ended, unless Shutdown ended it (UNAVAILABLE, which the guard's
// audit line records too); any other is a failure of the broker's work
// (UNAVAILABLE).
func (s *Server) callStatus(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		if aerr := s.abortedStatus(ctx, err); aerr != err {
			return aerr
		}
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
