package guard

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"

	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// Defaults for Limits' zero values.
const (
	DefaultRequestsPerSecond   = 50
	DefaultBurst               = 100
	DefaultMaxStreamsPerCaller = 100
	DefaultMaxScopesPerRequest = names.MaxScopes // the API's own bound; lower it per deployment
)

// Limits bound what one caller may do. Zero values mean the defaults; a
// negative value means no limit.
type Limits struct {
	// RequestsPerSecond and Burst shape each caller's token bucket; every
	// call, unary or stream, takes one token.
	RequestsPerSecond float64
	Burst             int
	// MaxStreamsPerCaller caps a caller's concurrent streams.
	MaxStreamsPerCaller int
	// MaxScopesPerRequest caps the scopes in one request.
	MaxScopesPerRequest int
	// MaxMessageBytes, if positive, caps the size of a received message
	// (see ServerOptions); zero keeps the server's own limit.
	MaxMessageBytes int
}

// Config configures a Guard.
type Config struct {
	// Policy holds the access policy; required. Store a new policy in it
	// to reload: later calls and open streams follow it.
	Policy *policy.Holder
	// Audit receives the audit trail; nil writes none.
	Audit *audit.Logger
	// Logger receives warnings (audit write failures, revoked streams);
	// nil discards them. Nothing secret is ever logged.
	Logger *slog.Logger
	Limits Limits
	// DefaultScopes returns a tenant's default scopes, or nil if it has
	// none or does not exist. A request without scopes from a caller with
	// a scope allow-list is checked against them; without this function
	// (or defaults) such a request is denied, since the broker would
	// otherwise pick scopes the caller may not have.
	DefaultScopes func(tenant string) []string
}

// Guard holds the interceptors' state: per-caller rate limiters and
// stream counts.
type Guard struct {
	holder        *policy.Holder
	audit         *audit.Logger
	log           *slog.Logger
	limits        Limits
	defaultScopes func(string) []string
	rates         *rateLimiter
	streams       *streamCounter
}

// New returns a Guard. It logs a warning when the policy has no callers.
func New(cfg Config) (*Guard, error) {
	if cfg.Policy == nil {
		return nil, errors.New("guard: Config.Policy is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := cfg.Limits
	if l.RequestsPerSecond == 0 {
		l.RequestsPerSecond = DefaultRequestsPerSecond
	}
	if l.Burst == 0 {
		l.Burst = DefaultBurst
	}
	if l.MaxStreamsPerCaller == 0 {
		l.MaxStreamsPerCaller = DefaultMaxStreamsPerCaller
	}
	if l.MaxScopesPerRequest == 0 {
		l.MaxScopesPerRequest = DefaultMaxScopesPerRequest
	}
	limit, burst := rate.Limit(l.RequestsPerSecond), l.Burst
	if l.RequestsPerSecond < 0 {
		limit, burst = rate.Inf, 0
	}
	if burst < 0 {
		burst = math.MaxInt32
	}
	g := &Guard{
		holder:        cfg.Policy,
		audit:         cfg.Audit,
		log:           log,
		limits:        l,
		defaultScopes: cfg.DefaultScopes,
		rates:         newRateLimiter(limit, burst),
		streams:       &streamCounter{n: map[string]int{}},
	}
	g.rates.g = g
	if cfg.Policy.Load().Empty() {
		log.Warn("NO CALLERS CONFIGURED: every loopback client may get every tenant's tokens without authentication, and other clients are refused; add callers to the config before serving anything but this host")
	}
	return g, nil
}

// Open reports whether the current policy has no callers, so that the
// guard serves loopback peers only, without authentication.
func (g *Guard) Open() bool { return g.holder.Load().Empty() }

// UnaryInterceptors returns the unary interceptors, in order, for
// server.Config.UnaryInterceptors.
func (g *Guard) UnaryInterceptors() []grpc.UnaryServerInterceptor {
	m := selector.MatchFunc(guarded)
	return []grpc.UnaryServerInterceptor{
		selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(g.authenticate), m),
		selector.UnaryServerInterceptor(ratelimit.UnaryServerInterceptor(g.rates), m),
		selector.UnaryServerInterceptor(g.authorizeUnary, m),
	}
}

// StreamInterceptors returns the stream interceptors, in order, for
// server.Config.StreamInterceptors.
func (g *Guard) StreamInterceptors() []grpc.StreamServerInterceptor {
	m := selector.MatchFunc(guarded)
	return []grpc.StreamServerInterceptor{
		selector.StreamServerInterceptor(auth.StreamServerInterceptor(g.authenticate), m),
		selector.StreamServerInterceptor(ratelimit.StreamServerInterceptor(g.rates), m),
		selector.StreamServerInterceptor(g.limitStreams, m),
		selector.StreamServerInterceptor(g.authorizeStream, m),
	}
}

// ServerOptions returns the grpc.ServerOptions the limits need, for
// server.Config.ServerOptions (after the server's own, which they
// override): grpc.MaxRecvMsgSize when Limits.MaxMessageBytes is set.
func (g *Guard) ServerOptions() []grpc.ServerOption {
	if g.limits.MaxMessageBytes > 0 {
		return []grpc.ServerOption{grpc.MaxRecvMsgSize(g.limits.MaxMessageBytes)}
	}
	return nil
}

// guarded selects every service but health and reflection.
func guarded(_ context.Context, c interceptors.CallMeta) bool {
	return c.Service != "grpc.health.v1.Health" && !strings.HasPrefix(c.Service, "grpc.reflection.")
}

// auditLog writes r, logging (not returning) a failure.
func (g *Guard) auditLog(ctx context.Context, r audit.Record) {
	if err := g.audit.Log(r); err != nil {
		g.log.WarnContext(ctx, "audit write failed", "error", err)
	}
}
