package guard

import (
	"errors"
	"log/slog"
	"sync/atomic"

	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// Config configures a Guard.
type Config struct {
	// Policy holds the access policy; required. When a Store returns,
	// every open stream has been re-decided under the new policy (see
	// redecide): one it revokes admits and audits no further message.
	Policy *policy.Holder
	// Audit receives the audit trail; nil writes none.
	Audit *audit.Logger
	// Logger receives warnings (audit write failures, revoked streams);
	// nil discards them. Nothing secret is ever logged.
	Logger *slog.Logger
	// Limits are the caller limits (rates, open calls, scopes per
	// request), the open calls of a peer without credentials and the
	// per-IP denial rate; zero fields mean the defaults.
	Limits limits.Limits
	// DefaultScopes returns a tenant's default scopes (nil: none, or no
	// such tenant), against which a request without scopes from a caller
	// with a scope allow-list is checked; without them it is denied.
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

// Guard holds the state of the guard's steps: open calls per caller and
// per anonymous peer, rate limiters, the open streams and whether audit
// writes fail.
type Guard struct {
	holder        *policy.Holder
	trail         *audit.Logger
	log           *slog.Logger
	limits        limits.Limits
	defaultScopes func(string) []string
	onDenial      func(codes.Code)
	callers       *counter[string] // open calls per caller name
	anonymous     *counter[string] // open calls per peer IP without credentials
	rates         *buckets         // per caller, every call
	invalidations *buckets
	denials       *buckets    // per peer IP, refused authentications
	open          openStreams // authorized streams, re-checked at policy changes
	pending       pending     // admitted calls no interceptor claimed yet
	conns         *conns      // what each connection proves (see Tap)
	auditState    auditState
	noTap         atomic.Bool // a call came without the tap (see proofOf)
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
		trail:         cfg.Audit,
		log:           log,
		limits:        l,
		defaultScopes: cfg.DefaultScopes,
		onDenial:      cfg.OnDenial,
		callers:       newCounter[string](),
		anonymous:     newCounter[string](),
		rates:         bucketsOf(l.RequestsPerSecond, l.Burst),
		invalidations: bucketsOf(l.InvalidationsPerSecond, l.InvalidationBurst),
		denials:       bucketsOf(l.DenialsPerSecondPerIP, l.DenialBurstPerIP),
		auditState:    auditState{hook: cfg.OnAuditFailure},
		conns:         newConns(),
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

// Caller is an authenticated caller, as put in the context.
type Caller struct {
	// Name is the caller's name in the policy, or "loopback" for a peer
	// admitted because the policy has no callers.
	Name string
	// Identity is how the caller authenticated; KindNone for loopback.
	Identity authn.Identity
	// Peer is the peer's address.
	Peer string
	// Loopback reports whether the peer is local: a loopback address or
	// a Unix socket.
	Loopback bool

	open     bool            // admitted only because the policy had no callers
	identity string          // Identity.String(), for audit records
	digest   authn.KeyDigest // for API key callers: to re-resolve after reloads
	unix     *authn.UnixPeer // for Unix socket callers: uid, then gid, again after reloads
	holder   *policy.Holder
}

// OpenCallerName is the Caller.Name of peers admitted without callers.
const OpenCallerName = "loopback"

// resolve returns the policy entry of the caller in pol, which may be
// newer than the one it authenticated against.
func (c *Caller) resolve(pol *policy.Policy) (*policy.Caller, bool) {
	switch {
	case c.open:
		return nil, false
	case c.Identity.Kind == authn.KindAPIKey:
		return pol.LookupKeyDigest(c.digest)
	case c.unix != nil: // the peer's uid may have become a caller of its own
		pc, _, ok := lookupUnix(pol, c.unix)
		return pc, ok && pc.Name == c.Name
	}
	return pol.Lookup(c.Identity)
}

// rateKey is the bucket of c: its name, or in open mode (everyone is
// "loopback") its connection, so that one client cannot slow the others.
func rateKey(c *Caller) string {
	if c.open {
		return "conn " + c.Peer
	}
	return c.Name
}
