package broker

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// Token lifecycle constants; the README's "Token lifecycle" tells the
// whole rule. A token whose lifetime is not stated is short-lived, never
// eternal.
const (
	// DefaultLifetime is assumed when the IdP sends no expires_in.
	DefaultLifetime = 5 * time.Minute
	// MaxLifetime caps an absurdly large expires_in.
	MaxLifetime = 24 * time.Hour
	// DefaultMinValid is the default min_valid of tokens that live ten
	// minutes or longer; shorter-lived ones get a tenth of their lifetime.
	DefaultMinValid = 60 * time.Second
	// MaxMinValid caps min_valid, so that a fresh one-hour token always
	// satisfies it.
	MaxMinValid = 30 * time.Minute
	// ForcedRefreshInterval is the least time between two refreshes of one
	// key forced by Invalidate.
	ForcedRefreshInterval = 5 * time.Second
	// CallerRetryInterval: while a key has no usable token, its callers and
	// watchers start an attempt ahead of the backoff timer at most this
	// often (never during a Retry-After or after a permanent error).
	CallerRetryInterval = time.Second
	// CredentialGrace: for this long after a credential change, or after an
	// attempt that got no answer or a 5xx, invalid_client and
	// unauthorized_client are retried within seconds instead of being
	// permanent: an IdP may register new clients, or restart, late.
	CredentialGrace = 2 * time.Minute
	// CredentialGraceRetryMax caps the retry interval within CredentialGrace.
	CredentialGraceRetryMax = 4 * time.Second
	// lifetimeMemory is how many recent token lifetimes a key remembers:
	// a min_valid longer than all of them is refused (TooShortLivedError).
	lifetimeMemory = 3
	// ReloadRetryInterval: a reload that leaves a tenant unchanged retries
	// its permanently failed keys at once, but at most once per this
	// interval per key, so that a storm of reloads cannot hammer the IdP.
	ReloadRetryInterval = 30 * time.Second
	// MinAttemptTimeout is the least timeout of one request when the
	// tokens' lifetime shortens FetchTimeout.
	MinAttemptTimeout = time.Second
	// refreshFloor: a token is refreshed no later than the larger of this
	// and a quarter of its lifetime before it expires (see refreshLead).
	refreshFloor = time.Minute
	// permanentRetry is the retry interval after a permanent error such as
	// invalid_client.
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
	// one token endpoint host and CA set share a copy and its connections.
	HTTPClient *http.Client
	// Limits: the broker reads MaxIdPRequestsPerHost (requests running at
	// once per token endpoint host, custom Fetchers included; the others
	// wait in order), MaxScopeSetsPerTenant, MaxScopeSets,
	// NewScopeSetsPerSecond and NewScopeSetBurst (see Get).
	Limits limits.Limits
	// UserAgent is sent to identity providers.
	UserAgent string
	// FetchTimeout bounds one identity-provider request (default 10s), or
	// a sixth of the key's token lifetime if shorter (at least
	// MinAttemptTimeout), so that a hung request leaves room for retries.
	FetchTimeout time.Duration
	// IdleTimeout drops a non-default scope set nobody asked for or
	// watched for this long, at its next refresh (default 1h).
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

// tenant is one configured tenant. Its Name, TokenURL and Scopes never
// change; a credential change (sameClient) replaces the other spec fields
// and the fetcher under Broker.mu.
type tenant struct {
	spec    Tenant
	fetcher atomic.Pointer[Fetcher]
	queue   *fetchQueue       // of the token endpoint's host
	def     *entry            // the default scope set
	keys    map[string]*entry // the other scope sets; nil while none (most tenants)
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
// tenant's scope-set budget fairly (see Get); it is not an authorization.
// Requests without an owner act for the embedding program itself.
func WithOwner(ctx context.Context, owner string) context.Context {
	return context.WithValue(ctx, ownerKey{}, owner)
}

func ownerFrom(ctx context.Context) string {
	o, _ := ctx.Value(ownerKey{}).(string)
	return o
}

// DefaultMinValidFor is the min_valid of a request that sets none, for a
// token of the given lifetime: DefaultMinValid or a tenth of the lifetime,
// whichever is shorter, so that an IdP outage leaves room for retries.
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
// request, bounded by ctx and the attempt's timeout. Cancelling ctx does
// not cancel the request for other callers.
//
// While the key backs off after a failure, a caller starts an early
// attempt at most every CallerRetryInterval; the others get the last error
// at once, as every caller does while an IdP that did not answer the last
// attempt is tried again. Callers waiting when the tenant is removed or
// reconfigured return at once with ErrTenantRemoved or ErrTenantChanged.
//
// A minimum longer than all the key's recent tokens lived fails with
// *TooShortLivedError without a request; one that only the latest token
// falls short of fetches anew, or fails with ErrShortLivedToken within
// CallerRetryInterval of the key's last request.
//
// A new scope set counts against the share of the owner in ctx (WithOwner)
// of Limits.MaxScopeSetsPerTenant (else ErrTooManyScopeSets) and against
// its Limits.NewScopeSetsPerSecond (else ErrNewScopeSetsTooFast).
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
// Fingerprint is sha256Hex. If it is still the key's current token, a
// replacement is fetched, coalesced with concurrent reports, at most once
// per ForcedRefreshInterval, and returned; otherwise, or within that
// interval, the current token is returned. Other callers keep the
// rejected token until the replacement arrives.
func (b *Broker) Invalidate(ctx context.Context, tenantName string, scopes []string, sha256Hex string) (*Token, error) {
	if len(sha256Hex) != 64 || strings.Trim(sha256Hex, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("%w: token_sha256 must be the 64 lower-case hex digits of the access token's SHA-256", ErrInvalidArgument)
	}
	return withEntry(b, ctx, tenantName, scopes, func(e *entry) (*Token, error) { return e.invalidate(ctx, sha256Hex) })
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
// (which is then nil): notify is called whenever Next may have something
// new (the current state at once, updates, the end; spurious calls are
// allowed), with the broker's locks held, so it must not block or call
// the broker.
func (b *Broker) WatchNotify(ctx context.Context, tenantName string, scopes []string, notify func()) (*Watch, error) {
	if notify == nil {
		return nil, fmt.Errorf("%w: WatchNotify needs a notify function", ErrInvalidArgument)
	}
	return withEntry(b, ctx, tenantName, scopes, func(e *entry) (*Watch, error) { return e.watch(notify) })
}
