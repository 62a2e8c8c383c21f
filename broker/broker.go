package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jonboulle/clockwork"
	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker/credentials"
	"github.com/tokenbroker/tokenbroker/broker/names"
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
	// request may start one early, coalesced attempt at most this often,
	// instead of waiting for the backoff timer (never during a Retry-After
	// or after a permanent error).
	CallerRetryInterval = time.Second
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

// Fetcher requests tokens for one tenant from its identity provider.
// *upstream.Client implements it.
type Fetcher interface {
	Fetch(ctx context.Context, scopes []string) (upstream.Grant, error)
}

// Tenant configures one tenant.
type Tenant struct {
	// Name matches [a-z0-9][a-z0-9-]{0,62}.
	Name string
	// TokenURL is the identity provider's token endpoint.
	TokenURL     string
	ClientID     string
	ClientSecret credentials.Secret
	// Fallbacks are older credentials held during a rotation, tried in
	// order when the IdP answers invalid_client (see upstream.Config).
	Fallbacks []upstream.Credential
	// Scopes are the default scopes, requested when a caller names none.
	Scopes []string
	// AuthStyle is oauth2.AuthStyleInParams (default) or AuthStyleInHeader.
	AuthStyle oauth2.AuthStyle
	// RootCAs, when set, are the CAs trusted for the token endpoint's TLS
	// certificate instead of the system roots (hygiene.RootCAs adds a
	// private CA to them). Certificate verification is never disabled.
	RootCAs *x509.CertPool
	// Fetcher, when set, replaces the upstream client built from the fields
	// above (TokenURL is then informational).
	Fetcher Fetcher
}

// same reports whether two tenant configurations would fetch the same way.
func (t Tenant) same(o Tenant) bool {
	return t.Name == o.Name && t.TokenURL == o.TokenURL && t.ClientID == o.ClientID &&
		t.ClientSecret.Reveal() == o.ClientSecret.Reveal() && slices.Equal(t.Scopes, o.Scopes) &&
		t.AuthStyle == o.AuthStyle && t.Fetcher == o.Fetcher && t.RootCAs.Equal(o.RootCAs) &&
		slices.EqualFunc(t.Fallbacks, o.Fallbacks, upstream.Credential.Equal)
}

// Config configures a Broker. Zero values mean defaults.
type Config struct {
	Tenants []Tenant
	Logger  *slog.Logger
	// Clock drives refresh timers and expiry; tests pass a fake clock.
	Clock clockwork.Clock
	// HTTPClient is used for identity-provider requests.
	HTTPClient *http.Client
	// UserAgent is sent to identity providers.
	UserAgent string
	// FetchTimeout bounds one identity-provider request (default 30s).
	FetchTimeout time.Duration
	// MaxKeysPerTenant bounds the scope sets per tenant, its default set
	// included (default 64), and MaxKeys the non-default scope sets of the
	// whole broker (default 4096). Each named owner (WithOwner) may hold at
	// most half of a tenant's non-default sets; see Token.
	MaxKeysPerTenant int
	MaxKeys          int
	// IdleTimeout drops a scope set nobody asked for or watched for this
	// long, at its next refresh (default 1h). Default scopes are kept.
	IdleTimeout time.Duration
	// OnTenantHealth, when set, is called whenever a tenant's default-scope
	// token becomes valid (true) or stops being valid (false), and with
	// false when the tenant is removed. It must not block or call the Broker.
	OnTenantHealth func(tenant string, serving bool)
}

// Broker caches and refreshes tokens for its tenants. It is safe for
// concurrent use. It must be closed to stop its background refreshes.
type Broker struct {
	cfg   Config
	log   *slog.Logger
	clock clockwork.Clock

	mu      sync.Mutex // guards tenants, nkeys and lock-orders before entry.mu
	tenants map[string]*tenant
	nkeys   int // non-default scope sets of all tenants

	// version numbers every token of the broker, so that a key's versions
	// only increase, across reconfigurations and evictions too.
	version atomic.Uint64

	// life guards closed against wg.Add racing Close's wg.Wait.
	life    sync.RWMutex
	closed  bool
	base    context.Context // the broker's own context for upstream requests
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closeMu sync.Mutex
}

type tenant struct {
	spec    Tenant
	fetcher Fetcher
	keys    map[string]*entry
	def     *entry
	owned   map[string]int // non-default scope sets per owner
}

// New returns a Broker serving cfg.Tenants and starts fetching every
// tenant's default-scope token in the background.
func New(cfg Config) (*Broker, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 30 * time.Second
	}
	if cfg.MaxKeysPerTenant <= 0 {
		cfg.MaxKeysPerTenant = 64
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 4096
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = time.Hour
	}
	b := &Broker{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, tenants: map[string]*tenant{}}
	b.base, b.cancel = context.WithCancel(context.Background())
	if err := b.SetTenants(cfg.Tenants); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// SetTenants replaces the broker's tenants. New tenants start fetching
// their default token; removed tenants end their watches with
// ErrTenantRemoved; reconfigured tenants (credentials, URL or scopes
// changed) drop their tokens, end their watches with ErrTenantChanged and
// fetch again at once. Unchanged tenants keep their tokens, but a scope set
// that failed permanently (invalid_client…) is retried at once: the
// operator may have fixed the client at the identity provider. Token
// versions keep increasing across all of this. On error nothing changes.
func (b *Broker) SetTenants(specs []Tenant) error {
	next := map[string]Tenant{}
	for _, s := range specs {
		if err := names.ValidTenant(s.Name); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
		if _, dup := next[s.Name]; dup {
			return fmt.Errorf("broker: tenant %q configured twice", s.Name)
		}
		scopes, err := names.NormalizeScopes(s.Scopes)
		if err != nil {
			return fmt.Errorf("broker: tenant %q: default scopes: %w", s.Name, err)
		}
		s.Scopes = slices.Clone(scopes)
		next[s.Name] = s
	}
	fetchers := map[string]Fetcher{}
	for name, s := range next {
		if s.Fetcher != nil {
			fetchers[name] = s.Fetcher
			continue
		}
		hc, err := httpClientFor(b.cfg.HTTPClient, s.RootCAs)
		if err != nil {
			return fmt.Errorf("broker: tenant %q: %w", name, err)
		}
		c, err := upstream.New(upstream.Config{
			TokenURL: s.TokenURL, ClientID: s.ClientID, ClientSecret: s.ClientSecret,
			AuthStyle: s.AuthStyle, HTTPClient: hc, UserAgent: b.cfg.UserAgent,
			Fallbacks: s.Fallbacks, Logger: b.log.With("tenant", name),
		})
		if err != nil {
			return fmt.Errorf("broker: tenant %q: %w", name, err)
		}
		fetchers[name] = c
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed() {
		return ErrClosed
	}
	for name, t := range b.tenants {
		s, keep := next[name]
		switch {
		case !keep:
			b.dropTenantLocked(t, ErrTenantRemoved)
			b.log.Info("tenant removed", "tenant", name)
		case !t.spec.same(s):
			b.dropTenantLocked(t, ErrTenantChanged)
			b.log.Info("tenant reconfigured", "tenant", name)
		default:
			for _, e := range t.keys {
				e.retryPermanent()
			}
		}
	}
	for name, s := range next {
		if _, ok := b.tenants[name]; ok {
			continue
		}
		t := &tenant{spec: s, fetcher: fetchers[name], keys: map[string]*entry{}, owned: map[string]int{}}
		b.tenants[name] = t
		t.def = b.newEntryLocked(t, nil, "")
		if b.cfg.OnTenantHealth != nil {
			b.cfg.OnTenantHealth(name, false)
		}
		t.def.mu.Lock()
		t.def.startLocked()
		t.def.mu.Unlock()
		b.log.Info("tenant added", "tenant", name, "token_url", s.TokenURL, "default_scopes", s.Scopes)
	}
	return nil
}

// httpClientFor returns base (nil: upstream's default) if roots is nil,
// else a copy of it whose transport trusts roots.
func httpClientFor(base *http.Client, roots *x509.CertPool) (*http.Client, error) {
	if roots == nil {
		return base, nil
	}
	c := http.Client{Timeout: 30 * time.Second}
	if base != nil {
		c = *base
	}
	var tr *http.Transport
	switch t := c.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, fmt.Errorf("RootCAs need Config.HTTPClient's Transport to be an *http.Transport, not %T", t)
	}
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tr.TLSClientConfig.RootCAs = roots
	tr.TLSClientConfig.InsecureSkipVerify = false
	c.Transport = tr
	return &c, nil
}

func (b *Broker) dropTenantLocked(t *tenant, reason error) {
	for _, e := range t.keys {
		e.kill(reason)
	}
	b.nkeys -= len(t.keys) - 1 // all but the default set
	delete(b.tenants, t.spec.Name)
	if b.cfg.OnTenantHealth != nil {
		b.cfg.OnTenantHealth(t.spec.Name, false)
	}
}

func (b *Broker) isClosed() bool {
	b.life.RLock()
	defer b.life.RUnlock()
	return b.closed
}

// Close ends every watch with ErrClosed, cancels in-flight identity-provider
// requests and waits for the background goroutines. It is idempotent.
func (b *Broker) Close() {
	b.closeMu.Lock()
	defer b.closeMu.Unlock()
	b.life.Lock()
	already := b.closed
	b.closed = true
	b.life.Unlock()
	if already {
		return
	}
	b.mu.Lock()
	for _, t := range b.tenants {
		for _, e := range t.keys {
			e.kill(ErrClosed)
		}
	}
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
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

// key resolves a request to its entry, creating it for owner if needed.
func (b *Broker) key(tenantName string, scopes []string, owner string) (*entry, error) {
	if err := names.ValidTenant(tenantName); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	scopes, err := names.NormalizeScopes(scopes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed() {
		return nil, ErrClosed
	}
	t := b.tenants[tenantName]
	if t == nil {
		return nil, fmt.Errorf("%w %q; ListTenants shows the configured tenants", ErrUnknownTenant, tenantName)
	}
	if len(scopes) == 0 || slices.Equal(scopes, t.spec.Scopes) {
		return t.def.touch(), nil
	}
	var buf [256]byte
	k := appendKey(buf[:0], scopes)
	if e := t.keys[string(k)]; e != nil { // string(k) here does not allocate
		// Touched under b.mu so that idle eviction cannot take it now.
		return e.touch(), nil
	}
	if err := b.makeRoomLocked(t, owner); err != nil {
		return nil, err
	}
	// Cloned: NormalizeScopes may return the caller's own slice.
	return b.newEntryLocked(t, slices.Clone(scopes), owner), nil
}

// makeRoomLocked makes room for one more scope set of owner in tenant t.
//
// A named owner may hold at most half of the tenant's non-default sets:
// past that, its own least recently used set gives way, or the request is
// refused. When the tenant is full, the least recently used set of the
// owner holding the most gives way. So no single owner, even one that
// keeps all its sets watched, can lock the others out. Only sets that are
// not watched and not being fetched are evicted; default sets never are.
func (b *Broker) makeRoomLocked(t *tenant, owner string) error {
	budget := b.cfg.MaxKeysPerTenant - 1 // the default set is always there
	if share := max(1, budget/2); owner != "" && t.owned[owner] >= share {
		if !b.evictLRULocked(t, func(e *entry) bool { return e.owner == owner }) {
			return fmt.Errorf("%w: caller %q already holds %d of tenant %q's scope sets, its share; request fewer distinct scope sets",
				ErrTooManyKeys, owner, t.owned[owner], t.spec.Name)
		}
	}
	if len(t.keys) >= b.cfg.MaxKeysPerTenant {
		owners := make([]string, 0, len(t.owned))
		for o := range t.owned {
			owners = append(owners, o)
		}
		sort.Slice(owners, func(i, j int) bool { return t.owned[owners[i]] > t.owned[owners[j]] })
		evicted := false
		for _, o := range owners {
			if evicted = b.evictLRULocked(t, func(e *entry) bool { return e.owner == o }); evicted {
				break
			}
		}
		if !evicted {
			return fmt.Errorf("%w: tenant %q already has %d in use; request fewer distinct scope sets",
				ErrTooManyKeys, t.spec.Name, b.cfg.MaxKeysPerTenant)
		}
	}
	if b.nkeys >= b.cfg.MaxKeys && !b.evictLRULocked(nil, nil) {
		return fmt.Errorf("%w: the broker already holds %d", ErrTooManyKeys, b.cfg.MaxKeys)
	}
	return nil
}

// appendKey appends the map key of a normalized scope set.
func appendKey(dst []byte, scopes []string) []byte {
	for i, s := range scopes {
		if i > 0 {
			dst = append(dst, ' ')
		}
		dst = append(dst, s...)
	}
	return dst
}

func (b *Broker) newEntryLocked(t *tenant, scopes []string, owner string) *entry {
	e := &entry{
		b: b, t: t, scopes: scopes, isDefault: scopes == nil, owner: owner,
		subs:     map[*Watch]struct{}{},
		lastUsed: b.clock.Now(),
		bo: &backoff.ExponentialBackOff{
			InitialInterval: time.Second, RandomizationFactor: 0.2,
			Multiplier: 2, MaxInterval: 2 * time.Minute,
		},
	}
	e.bo.Reset()
	t.keys[strings.Join(scopes, " ")] = e
	if !e.isDefault {
		b.nkeys++
		t.owned[owner]++
	}
	return e
}

// evictLRULocked drops the least recently used key that is not the
// default, not watched, not being fetched and matches match (nil: any), of
// tenant t or of any tenant when t is nil.
func (b *Broker) evictLRULocked(t *tenant, match func(*entry) bool) bool {
	var victim *entry
	var victimUsed time.Time
	consider := func(tt *tenant) {
		for _, e := range tt.keys {
			if e.isDefault || (match != nil && !match(e)) {
				continue
			}
			e.mu.Lock()
			ok := len(e.subs) == 0 && e.inflight == nil && (victim == nil || e.lastUsed.Before(victimUsed))
			if ok {
				victim, victimUsed = e, e.lastUsed
			}
			e.mu.Unlock()
		}
	}
	if t != nil {
		consider(t)
	} else {
		for _, tt := range b.tenants {
			consider(tt)
		}
	}
	if victim == nil {
		return false
	}
	b.removeEntryLocked(victim, ErrClosed)
	return true
}

func (b *Broker) removeEntryLocked(e *entry, reason error) {
	delete(e.t.keys, strings.Join(e.scopes, " "))
	b.nkeys--
	if e.t.owned[e.owner]--; e.t.owned[e.owner] <= 0 {
		delete(e.t.owned, e.owner)
	}
	e.kill(reason)
	b.log.Debug("scope set dropped", "tenant", e.t.spec.Name, "scopes", e.scopes)
}

// evictIfIdle drops e if nobody used or watched it for IdleTimeout.
func (b *Broker) evictIfIdle(e *entry) bool {
	if e.isDefault {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e.mu.Lock()
	idle := e.dead == nil && len(e.subs) == 0 && b.clock.Since(e.lastUsed) >= b.cfg.IdleTimeout
	e.mu.Unlock()
	if idle && e.t.keys[strings.Join(e.scopes, " ")] == e {
		b.removeEntryLocked(e, ErrClosed)
		return true
	}
	return false
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
// a caller's request starts one early, coalesced attempt at most every
// CallerRetryInterval (never during a Retry-After or after a permanent
// error), so that recovery does not wait for the backoff timer; other
// callers get the last error at once. If the identity provider did not
// answer the last attempt at all, callers do not wait for the next one
// either: they get the last error at once while it runs.
//
// A minimum longer than the lifetime the identity provider grants this
// key fails with *TooShortLivedError without a request, until a scheduled
// refresh brings a longer lifetime.
//
// A new scope set is created for the owner in ctx (WithOwner), within that
// owner's share of the tenant's budget (Config.MaxKeysPerTenant).
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
	e, err := b.key(r.Tenant, r.Scopes, ownerFrom(ctx))
	if err != nil {
		return nil, err
	}
	return e.get(ctx, want)
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
	e, err := b.key(tenantName, scopes, ownerFrom(ctx))
	if err != nil {
		return nil, err
	}
	return e.invalidate(ctx, sha256Hex)
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
	e, err := b.key(tenantName, scopes, ownerFrom(ctx))
	if err != nil {
		return nil, err
	}
	return e.watch()
}

// TenantInfo describes a tenant and its default-scope token. It holds no
// secret.
type TenantInfo struct {
	Name     string
	TokenURL string
	Scopes   []string
	Status   Status
	// Expiry of the valid default-scope token; zero when none is cached.
	Expiry time.Time
}

// Tenants lists the tenants sorted by name.
func (b *Broker) Tenants() []TenantInfo {
	b.mu.Lock()
	ts := make([]*tenant, 0, len(b.tenants))
	for _, t := range b.tenants {
		ts = append(ts, t)
	}
	b.mu.Unlock()
	sort.Slice(ts, func(i, j int) bool { return ts[i].spec.Name < ts[j].spec.Name })
	out := make([]TenantInfo, 0, len(ts))
	for _, t := range ts {
		u := t.def.snapshot()
		info := TenantInfo{Name: t.spec.Name, TokenURL: t.spec.TokenURL, Scopes: t.spec.Scopes, Status: u.Status}
		if u.Token != nil {
			info.Expiry = u.Token.Expiry
		}
		out = append(out, info)
	}
	return out
}

// jitter returns a random duration in [lo, hi).
func jitter(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo)
}

// refreshAt picks when to refresh a token: at 50–80 % of its lifetime,
// but no later than refreshLead before expiry.
func refreshAt(issued time.Time, lifetime time.Duration) time.Time {
	at := issued.Add(jitter(lifetime/2, lifetime*4/5))
	latest := issued.Add(lifetime - refreshLead(lifetime))
	if at.After(latest) {
		return latest
	}
	return at
}

// refreshLead is how long before expiry a refresh starts at the latest:
// a quarter of the lifetime or refreshFloor, whichever is longer, and at
// most half the lifetime. With the default min_valid of a tenth of the
// lifetime, that leaves 15 % of the lifetime (or more) for retries.
func refreshLead(lifetime time.Duration) time.Duration {
	return min(lifetime/2, max(lifetime/4, refreshFloor))
}

// errorsIsAny reports whether err matches any of targets.
func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
