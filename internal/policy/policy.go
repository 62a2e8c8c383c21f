package policy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tokenbroker/tokenbroker/internal/authn"
)

// Caller is one entry of the callers list in the config.
type Caller struct {
	// Name identifies the caller in logs, audit lines and errors.
	Name string `yaml:"name"`
	// Exactly one of the following identifies the caller.
	SPIFFEID     string `yaml:"spiffe_id"`
	DNSName      string `yaml:"dns_name"`
	CommonName   string `yaml:"common_name"`
	APIKeySHA256 string `yaml:"api_key_sha256"`
	// UnixUID and UnixGID name a peer on a Unix socket by the kernel's
	// word (SO_PEERCRED): a uid caller before a gid caller.
	UnixUID *uint32 `yaml:"unix_uid"`
	UnixGID *uint32 `yaml:"unix_gid"`
	// Tenants are globs of the tenants the caller may use; at least one.
	Tenants []string `yaml:"tenants"`
	// Scopes, if not empty, are globs every requested scope must match.
	// Empty means any scope.
	Scopes []string `yaml:"scopes"`
}

// Identity returns the identity the caller is configured with. For an API
// key caller it is KindAPIKey with an empty Value.
func (c *Caller) Identity() authn.Identity {
	switch {
	case c.SPIFFEID != "":
		return authn.Identity{Kind: authn.KindSPIFFE, Value: c.SPIFFEID}
	case c.DNSName != "":
		return authn.Identity{Kind: authn.KindDNS, Value: strings.ToLower(c.DNSName)}
	case c.CommonName != "":
		return authn.Identity{Kind: authn.KindCommonName, Value: c.CommonName}
	case c.APIKeySHA256 != "":
		return authn.Identity{Kind: authn.KindAPIKey}
	case c.UnixUID != nil:
		return authn.Identity{Kind: authn.KindUnixUID, Value: strconv.FormatUint(uint64(*c.UnixUID), 10)}
	case c.UnixGID != nil:
		return authn.Identity{Kind: authn.KindUnixGID, Value: strconv.FormatUint(uint64(*c.UnixGID), 10)}
	}
	return authn.Identity{}
}

// scopeMeta are the characters that make a requested scope literal-only:
// glob metacharacters of this and other matchers, and the list separator.
const scopeMeta = "*?[]\\,"

// TenantAllowed reports whether the caller may use tenant.
func (c *Caller) TenantAllowed(tenant string) bool { return matchAny(c.Tenants, tenant) }

// ScopesAllowed reports whether the caller may request every scope. A
// requested scope containing a glob metacharacter ('*', '?', '[', ']',
// '\\') or ',' matches only an identical entry of the allow-list, never a
// glob: an IdP may read it as a wildcard, a class or a list, and so grant
// more than the glob meant.
func (c *Caller) ScopesAllowed(scopes []string) bool {
	if len(c.Scopes) == 0 {
		return true
	}
	for _, s := range scopes {
		if strings.ContainsAny(s, scopeMeta) {
			if !slices.Contains(c.Scopes, s) {
				return false
			}
			continue
		}
		if !matchAny(c.Scopes, s) {
			return false
		}
	}
	return true
}

// RestrictsScopes reports whether the caller has a scope allow-list.
func (c *Caller) RestrictsScopes() bool { return len(c.Scopes) > 0 }

// FieldError is a problem with one caller entry.
type FieldError struct {
	// Field is the path of the offending field, e.g. "callers[2].tenants[0]".
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Policy is an immutable set of callers. The zero value and nil have no
// callers and allow nothing.
type Policy struct {
	callers []Caller
	byName  map[string]*Caller
	byID    map[authn.Identity]*Caller
	keys    *authn.KeySet
	keyOf   []*Caller // keyOf[i] owns keys digest i
}

// New validates callers and builds a Policy. Each caller needs a unique
// name, exactly one identity (unique across callers), and at least one
// tenant glob. A uid and a gid are two identities, never one caller's:
// the peer on a socket is the caller of its uid, else of its gid.
func New(callers []Caller) (*Policy, error) {
	p := &Policy{
		callers: make([]Caller, len(callers)),
		byName:  map[string]*Caller{},
		byID:    map[authn.Identity]*Caller{},
	}
	var digests []authn.KeyDigest
	seenDigest := map[authn.KeyDigest]string{}
	for i, c := range callers {
		field := fmt.Sprintf("callers[%d]", i)
		ferr := func(sub string, format string, args ...any) error {
			return &FieldError{Field: field + sub, Err: fmt.Errorf(format, args...)}
		}
		c.Tenants = append([]string(nil), c.Tenants...)
		c.Scopes = append([]string(nil), c.Scopes...)
		c.UnixUID, c.UnixGID = clone(c.UnixUID), clone(c.UnixGID)
		if c.Name == "" {
			return nil, ferr(".name", "is required: it names the caller in logs and audit lines")
		}
		if _, dup := p.byName[c.Name]; dup {
			return nil, ferr(".name", "%q is used by another caller; names must be unique", c.Name)
		}
		n := 0
		for _, set := range []bool{c.SPIFFEID != "", c.DNSName != "", c.CommonName != "", c.APIKeySHA256 != "", c.UnixUID != nil, c.UnixGID != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			return nil, ferr("", "caller %q must have exactly one of spiffe_id, dns_name, common_name, api_key_sha256, unix_uid, unix_gid (has %d)", c.Name, n)
		}
		if c.SPIFFEID != "" {
			if err := authn.ValidSPIFFEID(c.SPIFFEID); err != nil {
				return nil, &FieldError{Field: field + ".spiffe_id", Err: err}
			}
		}
		if len(c.Tenants) == 0 {
			return nil, ferr(".tenants", "caller %q needs at least one tenant glob, e.g. [\"acme\"] or [\"team-*\"]", c.Name)
		}
		for j, g := range c.Tenants {
			if err := validGlob(g); err != nil {
				return nil, ferr(fmt.Sprintf(".tenants[%d]", j), "%q: %v", g, err)
			}
		}
		for j, g := range c.Scopes {
			if err := validGlob(g); err != nil {
				return nil, ferr(fmt.Sprintf(".scopes[%d]", j), "%q: %v", g, err)
			}
		}
		p.callers[i] = c
		cp := &p.callers[i]
		p.byName[c.Name] = cp
		if c.APIKeySHA256 != "" {
			d, err := authn.ParseKeyDigest(c.APIKeySHA256)
			if err != nil {
				return nil, &FieldError{Field: field + ".api_key_sha256", Err: err}
			}
			if other, dup := seenDigest[d]; dup {
				return nil, ferr(".api_key_sha256", "caller %q has the same API key as caller %q", c.Name, other)
			}
			seenDigest[d] = c.Name
			digests = append(digests, d)
			p.keyOf = append(p.keyOf, cp)
			continue
		}
		id := cp.Identity()
		if other, dup := p.byID[id]; dup {
			return nil, ferr("", "caller %q has the same identity (%s) as caller %q", c.Name, id, other.Name)
		}
		p.byID[id] = cp
	}
	p.keys = authn.NewKeySet(digests)
	return p, nil
}

func clone(id *uint32) *uint32 {
	if id == nil {
		return nil
	}
	v := *id
	return &v
}

// Empty reports whether the policy has no callers.
func (p *Policy) Empty() bool { return p == nil || len(p.callers) == 0 }

// Callers returns a copy of the callers.
func (p *Policy) Callers() []Caller {
	if p == nil {
		return nil
	}
	return append([]Caller(nil), p.callers...)
}

// NeedsClientCerts reports whether any caller is identified by a
// certificate, so that the listener needs tls.client_ca_file.
func (p *Policy) NeedsClientCerts() bool {
	return p != nil && slices.ContainsFunc(p.callers, func(c Caller) bool {
		k := c.Identity().Kind
		return k == authn.KindSPIFFE || k == authn.KindDNS || k == authn.KindCommonName
	})
}

// HasAPIKeys reports whether any caller is identified by an API key.
func (p *Policy) HasAPIKeys() bool { return p != nil && len(p.keyOf) > 0 }

// Lookup returns the caller with the identity id (a certificate's, or a
// Unix socket peer's uid or gid).
func (p *Policy) Lookup(id authn.Identity) (*Caller, bool) {
	if p == nil {
		return nil, false
	}
	c, ok := p.byID[id]
	return c, ok
}

// LookupKey returns the caller whose API key is key, comparing digests in
// constant time.
func (p *Policy) LookupKey(key string) (*Caller, bool) {
	if p == nil || p.keys == nil {
		return nil, false
	}
	i, ok := p.keys.Match(key)
	if !ok {
		return nil, false
	}
	return p.keyOf[i], true
}

// LookupKeyDigest returns the caller whose API key has digest d.
func (p *Policy) LookupKeyDigest(d authn.KeyDigest) (*Caller, bool) {
	if p == nil || p.keys == nil {
		return nil, false
	}
	i, ok := p.keys.MatchDigest(d)
	if !ok {
		return nil, false
	}
	return p.keyOf[i], true
}

// Caller returns the caller named name.
func (p *Policy) Caller(name string) (*Caller, bool) {
	if p == nil {
		return nil, false
	}
	c, ok := p.byName[name]
	return c, ok
}

// Allowed reports whether the caller named caller may get tokens of
// tenant with scopes. It never looks at whether tenant exists. An unknown
// caller is allowed nothing.
func (p *Policy) Allowed(caller, tenant string, scopes []string) bool {
	c, ok := p.Caller(caller)
	return ok && c.TenantAllowed(tenant) && c.ScopesAllowed(scopes)
}

// Visible reports whether tenant should be listed to caller.
func (p *Policy) Visible(caller, tenant string) bool {
	c, ok := p.Caller(caller)
	return ok && c.TenantAllowed(tenant)
}

// VisibleTenants returns the tenants caller may see, in order.
func (p *Policy) VisibleTenants(caller string, tenants []string) []string {
	var out []string
	for _, t := range tenants {
		if p.Visible(caller, t) {
			out = append(out, t)
		}
	}
	return out
}

// ErrNoPolicy is returned by NewHolder for a nil policy.
var ErrNoPolicy = errors.New("policy: nil policy")

// Holder holds the current policy. Store replaces it; OnStore registers
// observers that Store runs before it returns.
type Holder struct {
	mu        sync.Mutex // serialises Store and the observers
	cur       atomic.Pointer[Policy]
	observers []func(*Policy) // guarded by mu
}

// NewHolder returns a Holder of p.
func NewHolder(p *Policy) (*Holder, error) {
	if p == nil {
		return nil, ErrNoPolicy
	}
	h := &Holder{}
	h.cur.Store(p)
	return h, nil
}

// Load returns the current policy.
func (h *Holder) Load() *Policy { return h.cur.Load() }

// OnStore registers f to be called by every later Store with the new
// policy, after Load returns it and before Store returns, in registration
// order, one Store at a time: what f does is done when Store returns, so
// that a policy change takes effect synchronously (the guard ends the
// streams it revokes this way). f runs under the Holder's lock: it must
// not call Store or OnStore, and should not block for long. An observer
// is kept for the Holder's lifetime.
func (h *Holder) OnStore(f func(*Policy)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.observers = append(h.observers, f)
}

// Store makes p the current policy and runs the OnStore observers.
func (h *Holder) Store(p *Policy) error {
	if p == nil {
		return ErrNoPolicy
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cur.Store(p)
	for _, f := range h.observers {
		f(p)
	}
	return nil
}
