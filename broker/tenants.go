package broker

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"sort"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
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
	ClientSecret creds.Secret
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

// SetTenants replaces the broker's tenants. New tenants start fetching
// their default token; removed tenants end their watches with
// ErrTenantRemoved; reconfigured tenants (credentials, URL or scopes
// changed) drop their tokens, end their watches with ErrTenantChanged and
// fetch again at once. Unchanged tenants keep their tokens, but a scope set
// that failed permanently (invalid_client…) is retried, since the operator
// may have fixed the client at the identity provider: at once, yet at most
// once per ReloadRetryInterval per key (see there). Token
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
		// upstream logs only about fallback credentials: a tenant without
		// them needs no logger of its own.
		log := b.log
		if len(s.Fallbacks) > 0 {
			log = lazyWith(b.log, "tenant", name)
		}
		hc, err := b.pools.Client(s.TokenURL, s.RootCAs)
		if err != nil {
			return fmt.Errorf("broker: tenant %q: %w", name, err)
		}
		c, err := upstream.New(upstream.Config{
			TokenURL: s.TokenURL, ClientID: s.ClientID, ClientSecret: s.ClientSecret,
			AuthStyle: s.AuthStyle, HTTPClient: hc, UserAgent: b.cfg.UserAgent,
			Fallbacks: s.Fallbacks, Logger: log,
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
	changed := map[string]bool{}
	for name, t := range b.tenants {
		s, keep := next[name]
		switch {
		case !keep:
			b.dropTenantLocked(t, ErrTenantRemoved)
			b.log.Info("tenant removed", "tenant", name)
		case !t.spec.same(s):
			b.dropTenantLocked(t, ErrTenantChanged)
			changed[name] = true // started again below
		default:
			for e := range t.entries() {
				e.retryPermanent()
			}
		}
	}
	for name, s := range next {
		if _, ok := b.tenants[name]; ok {
			continue
		}
		t := &tenant{spec: s, fetcher: fetchers[name], queue: b.queueLocked(s.TokenURL)}
		b.tenants[name] = t
		t.def = b.newEntryLocked(t, nil, "")
		if b.cfg.OnTenantHealth != nil {
			b.cfg.OnTenantHealth(name, false)
		}
		t.def.mu.Lock()
		t.def.startLocked()
		t.def.mu.Unlock()
		msg := "tenant added"
		if changed[name] {
			msg = "tenant reconfigured"
		}
		b.log.Info(msg, "tenant", name, "token_url", upstream.RedactURL(s.TokenURL), "default_scopes", s.Scopes)
	}
	return nil
}

func (b *Broker) dropTenantLocked(t *tenant, reason error) {
	for e := range t.entries() {
		e.drop(reason)
	}
	b.nsets -= len(t.keys)
	delete(b.tenants, t.spec.Name)
	if b.cfg.OnTenantHealth != nil {
		b.cfg.OnTenantHealth(t.spec.Name, false)
	}
}

// TenantInfo describes a tenant and its default-scope token. It holds no
// secret: TokenURL is as upstream.RedactURL shows it, without its query.
type TenantInfo struct {
	Name     string
	TokenURL string
	Scopes   []string
	Status   Status
	// Expiry of the valid default-scope token; zero when none is cached.
	Expiry time.Time
	// ScopeSets counts the tenant's cached scope sets, its default included.
	ScopeSets int
	// Watches counts the open watches over all the tenant's scope sets.
	Watches int
}

// Tenants lists the tenants sorted by name.
func (b *Broker) Tenants() []TenantInfo {
	type view struct {
		t    *tenant
		keys []*entry
	}
	b.mu.Lock()
	vs := make([]view, 0, len(b.tenants))
	for _, t := range b.tenants {
		v := view{t: t, keys: make([]*entry, 0, 1+len(t.keys))}
		for e := range t.entries() {
			v.keys = append(v.keys, e)
		}
		vs = append(vs, v)
	}
	b.mu.Unlock()
	sort.Slice(vs, func(i, j int) bool { return vs[i].t.spec.Name < vs[j].t.spec.Name })
	out := make([]TenantInfo, 0, len(vs))
	for _, v := range vs {
		t := v.t
		u := t.def.snapshot()
		info := TenantInfo{Name: t.spec.Name, TokenURL: upstream.RedactURL(t.spec.TokenURL), Scopes: t.spec.Scopes, Status: u.Status, ScopeSets: len(v.keys)}
		if u.Token != nil {
			info.Expiry = u.Token.Expiry
		}
		for _, e := range v.keys {
			e.mu.Lock()
			info.Watches += len(e.subs)
			e.mu.Unlock()
		}
		out = append(out, info)
	}
	return out
}
