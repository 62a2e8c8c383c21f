package guard

import (
	"errors"
	"hash/maphash"
	"log/slog"
	"math"
	"strings"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// Config configures a Guard.
type Config struct {
	// Policy holds the access policy; required. Store a new policy in it
	// to reload: later calls follow it, and when Store returns every open
	// stream has been re-decided under it (New registers an OnStore
	// observer): a stream it revokes admits and audits no further message.
	Policy *policy.Holder
	// Audit receives the audit trail; nil writes none.
	Audit *audit.Logger
	// Logger receives warnings (audit write failures, revoked streams);
	// nil discards them. Nothing secret is ever logged.
	Logger *slog.Logger
	// Limits are the caller limits (rates, streams, scopes per request)
	// and the per-IP denial rate; zero fields mean the defaults.
	Limits limits.Limits
	// DefaultScopes returns a tenant's default scopes, or nil if it has
	// none or does not exist. A request without scopes from a caller with
	// a scope allow-list is checked against them; without this function
	// (or defaults) such a request is denied, since the broker would
	// otherwise pick scopes the caller may not have.
	DefaultScopes func(tenant string) []string
	// OnAuditFailure, if set, is called with true when an audit write
	// fails after succeeding, and with false when writes succeed again;
	// the daemon holds health "" and every tenant/<name> NOT_SERVING meanwhile.
	OnAuditFailure func(failing bool)
	// OnDenial, if set, is called with the status code of every refused
	// call (the same calls as the audit trail's deny lines, before their
	// collapsing), e.g. to count them. It must not block.
	OnDenial func(code codes.Code)
}

// Guard holds the interceptors' state: per-caller rate limiters and
// stream counts.
type Guard struct {
	holder        *policy.Holder
	audit         *audit.Logger
	log           *slog.Logger
	limits        limits.Limits
	defaultScopes func(string) []string
	rates         *buckets // per caller, every call
	invalidations *buckets
	denials       *buckets // per peer IP, refused authentications
	streams       *streamCounter
	open          openStreams // authorized streams, re-checked at policy changes
	auditState    auditState
	onDenial      func(codes.Code)
	fingerprints  fingerprints // of issued tokens, for audit lines
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
	l := cfg.Limits.WithDefaults()
	g := &Guard{
		holder:        cfg.Policy,
		audit:         cfg.Audit,
		log:           log,
		limits:        l,
		defaultScopes: cfg.DefaultScopes,
		rates:         bucketsOf(l.RequestsPerSecond, l.Burst),
		invalidations: bucketsOf(l.InvalidationsPerSecond, l.InvalidationBurst),
		denials:       bucketsOf(l.DenialsPerSecondPerIP, l.DenialBurstPerIP),
		streams:       &streamCounter{n: map[string]int{}},
		auditState:    auditState{hook: cfg.OnAuditFailure},
		onDenial:      cfg.OnDenial,
		fingerprints:  fingerprints{seed: maphash.MakeSeed()},
	}
	cfg.Policy.OnStore(g.redecide)
	if cfg.Policy.Load().Empty() {
		log.Warn("NO CALLERS CONFIGURED: every loopback client may get every tenant's tokens without authentication, and other clients are refused; add callers to the config before serving anything but this host")
	}
	return g, nil
}

// Open reports whether the current policy has no callers, so that the
// guard serves loopback peers only, without authentication.
func (g *Guard) Open() bool { return g.holder.Load().Empty() }

// UnaryInterceptors returns the unary interceptors, in order, for
// server.Config.UnaryInterceptors: one interceptor that authenticates,
// rate limits, authorizes and audits a call (one layer, not one per
// step: every layer costs a closure, a method match and stack on every
// call).
func (g *Guard) UnaryInterceptors() []grpc.UnaryServerInterceptor {
	return []grpc.UnaryServerInterceptor{g.unary}
}

// StreamInterceptors returns the stream interceptors, in order, for
// server.Config.StreamInterceptors: one interceptor that authenticates,
// rate limits, counts and authorizes a stream.
func (g *Guard) StreamInterceptors() []grpc.StreamServerInterceptor {
	return []grpc.StreamServerInterceptor{g.stream}
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

// bucketsOf returns token buckets of rps and burst; a negative rps
// means no limit, a negative burst an unbounded one.
func bucketsOf(rps float64, burst int) *buckets {
	if rps < 0 {
		return newBuckets(rate.Inf, 0)
	}
	if burst < 0 {
		burst = math.MaxInt32
	}
	return newBuckets(rate.Limit(rps), burst)
}
