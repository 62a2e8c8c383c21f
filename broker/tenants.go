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
	// ClientKey, KeyID and AssertionAudience authenticate the client with
	// private_key_jwt instead of ClientSecret (see upstream.Config).
	ClientKey         creds.PrivateKey
	KeyID             string
	AssertionAudience string
	// Fallbacks are older credentials held during a rotation, tried in
	// order when the IdP answers invalid_client (see upstream.Config).
	Fallbacks []upstream.Credential
	// Scopes are the default scopes, requested when a caller names none.
	Scopes []string
	// AuthStyle is oauth2.AuthStyleInParams (default) or AuthStyleInHeader.
	AuthStyle oauth2.AuthStyle
	// RootCAs, when set, are the CAs trusted for the token endpoint's TLS
	// certificate instead of the system roots (upstream.RootCAs adds a
	// private CA to them). Certificate verification is never disabled.
	RootCAs *x509.CertPool
	// Fetcher, when set, replaces the upstream client built from the fields
	// above (TokenURL is then informational).
	Fetcher Fetcher
}

// same reports whether two tenant configurations would fetch the same way.
func (t Tenant) same(o Tenant) bool {
	return t.Name == o.Name && t.TokenURL == o.TokenURL && t.ClientID == o.ClientID &&
		t.ClientSecret.Equal(o.ClientSecret) && t.ClientKey.Equal(o.ClientKey) && t.KeyID == o.KeyID &&
		t.AssertionAudience == o.AssertionAudience && slices.Equal(t.Scopes, o.Scopes) &&
		t.AuthStyle == o.AuthStyle && t.Fetcher == o.Fetcher && t.RootCAs.Equal(o.RootCAs) &&
		slices.EqualFunc(t.Fallbacks, o.Fallbacks, upstream.Credential.Equal)
}

// sameClient reports whether o only changes how the same client
// authenticates: same token endpoint and default scopes, and a client_id
// in common (a rotation may list the old client among the fallbacks). A
// new secret or key (key id, assertion audience), fallback, auth style,
// CA set or Fetcher qualifies; another
// client or endpoint is another identity, whose tokens must not be
// served in its name.
func (t Tenant) sameClient(o Tenant) bool {
	return t.Name == o.Name && t.TokenURL == o.TokenURL && slices.Equal(t.Scopes, o.Scopes) &&
		slices.ContainsFunc(t.clientIDs(), func(id string) bool { return slices.Contains(o.clientIDs(), id) })
}

func (t Tenant) clientIDs() []string {
	ids := []string{t.ClientID}
	for _, f := range t.Fallbacks {
		ids = append(ids, f.ClientID)
	}
	return ids
}

// setCredentials gives t the credentials of s, a sameClient change:
// every field but Name, TokenURL and Scopes, which stay the same.
func (t *tenant) setCredentials(s Tenant, f Fetcher) {
	t.spec.ClientID, t.spec.ClientSecret, t.spec.Fallbacks = s.ClientID, s.ClientSecret, s.Fallbacks
	t.spec.ClientKey, t.spec.KeyID, t.spec.AssertionAudience = s.ClientKey, s.KeyID, s.AssertionAudience
	t.spec.AuthStyle, t.spec.RootCAs, t.spec.Fetcher = s.AuthStyle, s.RootCAs, s.Fetcher
	t.fetcher.Store(&f)
}

// SetTenants replaces the broker's tenants; on error nothing changes. New
// tenants start fetching their default token; removed ones end their
// watches with ErrTenantRemoved. A credential change for the same client
// (Tenant.sameClient) keeps serving the cached tokens and the watches
// until the new credentials obtain a token (see CredentialGrace); another
// identity drops them, ends the watches with ErrTenantChanged and fetches
// anew. An unchanged tenant's permanently failed keys are retried (see
// ReloadRetryInterval). No request is made during a Retry-After; token
// versions keep increasing across all of this.
func (b *Broker) SetTenants(specs []Tenant) error {
	next, err := normalize(specs)
	if err != nil {
		return err
	}
	fetchers, err := b.fetchers(next)
	if err != nil {
		return err
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
		case t.spec.same(s):
			for e := range t.entries() {
				e.retryPermanent()
			}
		case t.spec.sameClient(s):
			t.setCredentials(s, fetchers[name])
			t.grace = b.clock.Now().Add(CredentialGrace)
			for e := range t.entries() {
				e.rotate()
			}
			b.log.Info("tenant reconfigured", "tenant", name, "token_url", upstream.RedactURL(s.TokenURL), "default_scopes", s.Scopes,
				"tokens", "kept until the new credentials obtain one")
		default:
			b.dropTenantLocked(t, ErrTenantChanged)
			changed[name] = true // added again below
		}
	}
	for name, s := range next {
		if _, ok := b.tenants[name]; !ok {
			b.addTenantLocked(s, fetchers[name], changed[name])
		}
	}
	return nil
}

// normalize validates specs and returns them by name, their default scopes
// normalized.
func normalize(specs []Tenant) (map[string]Tenant, error) {
	next := map[string]Tenant{}
	for _, s := range specs {
		if err := names.ValidTenant(s.Name); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		if _, dup := next[s.Name]; dup {
			return nil, fmt.Errorf("broker: tenant %q configured twice", s.Name)
		}
		scopes, err := names.NormalizeScopes(s.Scopes)
		if err != nil {
			return nil, fmt.Errorf("broker: tenant %q: default scopes: %w", s.Name, err)
		}
		s.Scopes = slices.Clone(scopes)
		next[s.Name] = s
	}
	return next, nil
}

// addTenantLocked adds the tenant s and starts fetching its default token.
// changed marks a tenant whose identity changed.
func (b *Broker) addTenantLocked(s Tenant, f Fetcher, changed bool) {
	t := &tenant{spec: s, queue: b.queueLocked(s.TokenURL)}
	if changed {
		// A new identity is a credential change too: the IdP may
		// register it a little after the broker learns of it.
		t.grace = b.clock.Now().Add(CredentialGrace)
	}
	t.fetcher.Store(&f)
	b.tenants[s.Name] = t
	t.def = b.newEntryLocked(t, nil, "")
	if b.cfg.OnTenantHealth != nil {
		b.cfg.OnTenantHealth(s.Name, false)
	}
	t.def.mu.Lock()
	t.def.startLocked()
	t.def.mu.Unlock()
	if changed {
		b.log.Info("tenant reconfigured", "tenant", s.Name, "token_url", upstream.RedactURL(s.TokenURL), "default_scopes", s.Scopes,
			"tokens", "dropped: the client identity changed")
	} else {
		b.log.Info("tenant added", "tenant", s.Name, "token_url", upstream.RedactURL(s.TokenURL), "default_scopes", s.Scopes)
	}
}

// fetchers returns each tenant's Fetcher: its own, or an upstream client.
func (b *Broker) fetchers(specs map[string]Tenant) (map[string]Fetcher, error) {
	fetchers := make(map[string]Fetcher, len(specs))
	for name, s := range specs {
		if s.Fetcher != nil {
			fetchers[name] = s.Fetcher
			continue
		}
		// upstream logs only about fallback credentials: a tenant without
		// them needs no logger of its own.
		log := b.log
		if len(s.Fallbacks) > 0 {
			log = b.log.With("tenant", name)
		}
		hc, err := b.pools.Client(s.TokenURL, s.RootCAs)
		if err != nil {
			return nil, fmt.Errorf("broker: tenant %q: %w", name, err)
		}
		c, err := upstream.New(upstream.Config{
			TokenURL: s.TokenURL, ClientID: s.ClientID, ClientSecret: s.ClientSecret,
			ClientKey: s.ClientKey, KeyID: s.KeyID, AssertionAudience: s.AssertionAudience,
			AuthStyle: s.AuthStyle, HTTPClient: hc, UserAgent: b.cfg.UserAgent,
			Fallbacks: s.Fallbacks, Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("broker: tenant %q: %w", name, err)
		}
		fetchers[name] = c
	}
	return fetchers, nil
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
