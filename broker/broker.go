package broker

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// Token lifecycle constants. They are deliberately conservative: a token
// whose lifetime the identity provider does not state is assumed to be
// short-lived, never eternal.
const (
	// DefaultLifetime is assumed when expires_in is missing, zero or
	// negative.
	DefaultLifetime = 5 * time.Minute
	// MaxLifetime caps an absurdly large expires_in.
	MaxLifetime = 24 * time.Hour
	// DefaultMinValid is GetToken's min_valid when none is given, for
	// tokens that live ten minutes or longer; shorter-lived tokens get a
	// tenth of their lifetime (DefaultMinValidFor).
	DefaultMinValid = 60 * time.Second
	// MaxMinValid bounds min_valid; larger requests are treated as this, so
	// that a fresh one-hour token always satisfies it.
	MaxMinValid = 30 * time.Minute
	// ForcedRefreshInterval is the least time between two refreshes of
	// one key forced by InvalidateToken; reports within it get the current
	// token without a new request.
	ForcedRefreshInterval = 5 * time.Second
	// CallerRetryInterval: while a key has no usable token, a caller's
	// request, or the key's watchers, may start one early, coalesced
	// attempt at most this often, instead of waiting for the backoff timer
	// (never during a Retry-After or after a permanent error).
	CallerRetryInterval = time.Second
	// CredentialGrace: for this long after a tenant's credentials change,
	// and after an attempt that got no HTTP answer or a 5xx (an IdP
	// restarting may answer before it has registered its clients),
	// invalid_client and unauthorized_client are retried on a short
	// backoff (1 s doubling, at most CredentialGraceRetryMax, ±20 %)
	// instead of being treated as permanent.
	CredentialGrace = 2 * time.Minute
	// CredentialGraceRetryMax caps the retry interval within CredentialGrace.
	CredentialGraceRetryMax = 4 * time.Second
	// lifetimeMemory is how many recent token lifetimes a key remembers:
	// a min_valid longer than all of them is refused (TooShortLivedError).
	lifetimeMemory = 3
	// ReloadRetryInterval: a reload (SetTenants) that leaves a tenant's
	// configuration unchanged retries a key that failed permanently
	// (invalid_client…) at once, but at most once per this interval per
	// key; a reload within it moves the key's next attempt to the end of
	// the interval instead. A storm of reloads thus cannot hammer the
	// identity provider, and a fix made there is still tried within 30 s
	// of a reload. A changed configuration always fetches at once.
	ReloadRetryInterval = 30 * time.Second
	// MinAttemptTimeout is the least time one request may take when the
	// lifetime of the key's tokens shortens FetchTimeout (Config).
	MinAttemptTimeout = time.Second
	// refreshFloor: a token is refreshed no later than the larger of this
	// and a quarter of its lifetime before it expires (at most half the
	// lifetime), which leaves room for several retries before callers
	// with the default min_valid are refused.
	refreshFloor = time.Minute
	// permanentRetry is the retry interval after a permanent error such as
	// invalid_client: slow, so a revoked client does not hammer the IdP.
	permanentRetry = 5 * time.Minute
	// maxRetryAfter bounds how long a Retry-After can silence a key.
	maxRetryAfter = 10 * time.Minute
)

// Config configures a Broker. Zero values mean defaults.
type Config struct {
	Tenants []Tenant
	Logger  *slog.Logger
	// Clock drives refresh timers and expiry; tests pass a fake clock.
	Clock clockwork.Clock
	// HTTPClient is the template of identity-provider clients: tenants of
	// the same token endpoint host and CAs share one copy of it and its
	// connection pool.
	HTTPClient *http.Client
	// Limits: the broker reads MaxIdPRequestsPerHost (concurrent requests
	// to one token endpoint host, over all tenants, custom Fetchers
	// included; more wait their turn in order, without a goroutine each,
	// within their attempt's timeout; the only bound on them: an
	// upstream.Client used without a Broker has none), MaxScopeSetsPerTenant and
	// MaxScopeSets (see Get), NewScopeSetsPerSecond and NewScopeSetBurst
	// (how fast each named owner, WithOwner, creates scope sets that do not
	// exist yet; past it Get fails with ErrNewScopeSetsTooFast). Zero fields
	// mean the defaults; a negative NewScopeSetsPerSecond means no limit.
	Limits limits.Limits
	// UserAgent is sent to identity providers.
	UserAgent string
	// FetchTimeout bounds one identity-provider request (default 10s). A
	// request of a key whose token lifetime is known is bounded by a sixth
	// of that lifetime if shorter (at least MinAttemptTimeout), so that
	// with short-lived tokens a hung request leaves room for more attempts
	// before the token expires.
	FetchTimeout time.Duration
	// IdleTimeout drops a scope set nobody asked for or watched for this
	// long, at its next refresh (default 1h). Default scopes are kept.
	IdleTimeout time.Duration
	// OnTenantHealth, when set, is called whenever a tenant's default-scope
	// token becomes valid (true) or stops being valid (false), and with
	// false when the tenant is removed. It must not block or call the Broker.
	OnTenantHealth func(tenant string, serving bool)
}

// Broker caches and refreshes tokens for its tenants. It is safe for
// concurrent use. It must be closed (Close or Shutdown) to stop its background
// refreshes.
type Broker struct {
	cfg   Config
	log   *slog.Logger
	clock clockwork.Clock

	pools *upstream.Pools // shared HTTP clients by token endpoint host and CAs

	mu      sync.Mutex // guards tenants, nsets and lock-orders before entry.mu
	tenants map[string]*tenant
	nsets   int                      // non-default scope sets of all tenants
	newSets map[string]*rate.Limiter // per owner: creation of new scope sets
	queues  map[string]*fetchQueue   // by token endpoint host

	// version numbers every token of the broker, so that a key's versions
	// only increase, across reconfigurations and evictions too.
	version atomic.Uint64

	// life is the lifecycle lock: it guards closed against wg.Add racing
	// Shutdown's wg.Wait.
	life    sync.RWMutex
	closed  bool
	base    context.Context // the broker's own context for upstream requests
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stopped chan struct{} // closed when wg is done after shutdown
}

// A tenant's maps stay nil until it has a non-default scope set: most
// tenants of a large broker never have one, and an empty map still costs
// its header and first group.
//
// A tenant's Name, TokenURL and Scopes never change; a credential change
// (SetTenants, sameClient) replaces its other spec fields under Broker.mu
// and its fetcher, which requests load when they start.
type tenant struct {
	spec    Tenant
	fetcher atomic.Pointer[Fetcher]
	queue   *fetchQueue       // of the token endpoint's host
	def     *entry            // the default scope set
	keys    map[string]*entry // the other scope sets; nil while there are none
	owned   map[string]int    // non-default scope sets per owner; nil while none
	grace   time.Time         // CredentialGrace after its last credential change, for new scope sets
}

// entries yields the tenant's scope sets, the default first.
func (t *tenant) entries() iter.Seq[*entry] {
	return func(yield func(*entry) bool) {
		if !yield(t.def) {
			return
		}
		for _, e := range t.keys {
			if !yield(e) {
				return
			}
		}
	}
}

// ownerKey is the context key of WithOwner.
type ownerKey struct{}

// WithOwner returns a context that names the caller on whose behalf Token,
// Invalidate and WatchContext act. The broker uses the name only to share a
// tenant's scope-set budget fairly (see Token); it is not an authorization.
// Requests without an owner act for the embedding program itself.
func WithOwner(ctx context.Context, owner string) context.Context {
	return context.WithValue(ctx, ownerKey{}, owner)
}

func ownerFrom(ctx context.Context) string {
	o, _ := ctx.Value(ownerKey{}).(string)
	return o
}

// DefaultMinValidFor is the min_valid of a request that sets none, for a
// token issued with the given lifetime: DefaultMinValid, or a tenth of the
// lifetime when that is shorter. A caller that sets no min_valid thus
// keeps getting the cached token through an identity-provider outage
// until about 10 % of its lifetime is left.
func DefaultMinValidFor(lifetime time.Duration) time.Duration {
	if lifetime <= 0 {
		return DefaultMinValid
	}
	return min(DefaultMinValid, lifetime/10)
}

// Request is a token request for Get.
type Request struct {
	// Tenant names the tenant; Scopes the scope set (none: the tenant's
	// default scopes).
	Tenant string
	Scopes []string
	// MinValid, when set, is the least remaining validity of the returned
	// token, honoured exactly (capped at MaxMinValid; negative is invalid).
	// Nil selects the default: DefaultMinValidFor the token's lifetime.
	MinValid *time.Duration
}

// Token is Get with minValid zero meaning the default rule.
func (b *Broker) Token(ctx context.Context, tenantName string, scopes []string, minValid time.Duration) (*Token, error) {
	r := Request{Tenant: tenantName, Scopes: scopes}
	if minValid != 0 {
		r.MinValid = &minValid
	}
	return b.Get(ctx, r)
}

// Get returns a token for the tenant and scopes that stays valid for at
// least the requested minimum. It never waits for the identity provider
// while such a token is cached; otherwise it waits for one coalesced
// request, bounded by ctx and by Config.FetchTimeout. Cancelling ctx does
// not cancel the request for other callers.
//
// While the key has no usable token and is backing off after a failure,
// a caller's request (or the key's watchers) starts one early, coalesced
// attempt at most every CallerRetryInterval (never during a Retry-After or
// after a permanent error), so that recovery does not wait for the backoff
// timer; other callers get the last error at once. If the identity provider did not
// answer the last attempt at all, callers do not wait for the next one
// either: they get the last error at once while it runs. Callers waiting
// when the tenant is removed or reconfigured return at once with
// ErrTenantRemoved or ErrTenantChanged.
//
// A minimum longer than the lifetimes of all the key's recent tokens
// fails with *TooShortLivedError without a request, until a refresh brings
// a longer lifetime. One that only the latest token falls short of
// fetches a new token, or fails with ErrShortLivedToken if the key's last
// request started within CallerRetryInterval.
//
// A new scope set is created for the owner in ctx (WithOwner), within that
// owner's share of the tenant's budget (Config.Limits.MaxScopeSetsPerTenant); past
// it, Get fails with ErrTooManyScopeSets. Owners creating new scope sets
// faster than Config.Limits.NewScopeSetsPerSecond get ErrNewScopeSetsTooFast.
func (b *Broker) Get(ctx context.Context, r Request) (*Token, error) {
	var want minValid
	if r.MinValid != nil {
		want.set = true
		switch d := *r.MinValid; {
		case d < 0:
			return nil, fmt.Errorf("%w: min_valid %s is negative; omit it for the default", ErrInvalidArgument, d)
		case d > MaxMinValid:
			want.d = MaxMinValid
		default:
			want.d = d
		}
	}
	return withEntry(b, ctx, r.Tenant, r.Scopes, func(e *entry) (*Token, error) { return e.get(ctx, want) })
}

// Invalidate reports that a resource server rejected the token whose
// Fingerprint is sha256Hex. If that token is still the key's current one,
// the broker fetches a replacement, coalesced with every concurrent report,
// and returns it; otherwise it returns the current token. Forced refreshes
// of a key are at most one per ForcedRefreshInterval: a report within it
// gets the current token. The rejected token stays available to other
// callers until a replacement arrives (they may not share the problem).
func (b *Broker) Invalidate(ctx context.Context, tenantName string, scopes []string, sha256Hex string) (*Token, error) {
	if !isSHA256Hex(sha256Hex) {
		return nil, fmt.Errorf("%w: token_sha256 must be the 64 lower-case hex digits of the access token's SHA-256", ErrInvalidArgument)
	}
	return withEntry(b, ctx, tenantName, scopes, func(e *entry) (*Token, error) { return e.invalidate(ctx, sha256Hex) })
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Watch subscribes to a key. The first update, the current state, is
// ready at once. The caller must Close the watch.
func (b *Broker) Watch(tenantName string, scopes []string) (*Watch, error) {
	return b.WatchContext(context.Background(), tenantName, scopes)
}

// WatchContext is Watch on behalf of the owner in ctx (WithOwner). ctx is
// read only for that; it does not bound the watch.
func (b *Broker) WatchContext(ctx context.Context, tenantName string, scopes []string) (*Watch, error) {
	return withEntry(b, ctx, tenantName, scopes, func(e *entry) (*Watch, error) { return e.watch(nil) })
}

// WatchNotify is WatchContext for a reader that does not wait on Ready
// (which is then nil): notify is called instead whenever Next has
// something new — the current state at once, later updates, the end. It
// is called with the broker's locks held, so it must not block or call
// the broker; a server pushing to many watches queues the watch for a
// worker that then calls Next. Spurious calls are allowed: Next may
// then return nothing.
func (b *Broker) WatchNotify(ctx context.Context, tenantName string, scopes []string, notify func()) (*Watch, error) {
	if notify == nil {
		return nil, fmt.Errorf("%w: WatchNotify needs a notify function", ErrInvalidArgument)
	}
	return withEntry(b, ctx, tenantName, scopes, func(e *entry) (*Watch, error) { return e.watch(notify) })
}
