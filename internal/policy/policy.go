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

// identity returns the identity other than an API key the caller is
// configured with: a certificate's (SPIFFE ID, DNS name or common name),
// or a Unix socket peer's uid or gid.
func (c *Caller) identity() authn.Identity {
	switch {
	case c.SPIFFEID != "":
		return authn.Identity{Kind: authn.KindSPIFFE, Value: c.SPIFFEID}
	case c.DNSName != "":
		return authn.Identity{Kind: authn.KindDNS, Value: strings.ToLower(c.DNSName)}
	case c.UnixUID != nil:
		return authn.Identity{Kind: authn.KindUnixUID, Value: strconv.FormatUint(uint64(*c.UnixUID), 10)}
	case c.UnixGID != nil:
		return authn.Identity{Kind: authn.KindUnixGID, Value: strconv.FormatUint(uint64(*c.UnixGID), 10)}
	}
	return authn.Identity{Kind: authn.KindCommonName, Value: c.CommonName}
}

// scopeMeta are the characters that make a requested scope literal-only:
// glob metacharacters of this and other matchers, and the list separator.
const scopeMeta = "*?[]\\,"

// TenantAllowed reports whether the caller may use tenant.
func (c *Caller) TenantAllowed(tenant string) bool { return matchAny(c.Tenants, tenant) }

// ScopesAllowed reports whether the caller may request every scope. A
// requested scope containing a glob metacharacter or ',' matches only an
// identical allow-list entry: an IdP may read it as a wildcard or a list.
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
	byID    map[authn.Identity]*Caller
	keys    *authn.KeySet
	keyOf   []*Caller // keyOf[i] owns keys digest i
}

// New builds a Policy of callers that config validated: each with a
// unique name, exactly one identity and a tenant glob. It checks SPIFFE
// IDs, globs, API key digests and that no identity is two callers'.
func New(callers []Caller) (*Policy, error) {
	p := &Policy{callers: make([]Caller, len(callers)), byID: map[authn.Identity]*Caller{}}
	var digests []authn.KeyDigest
	keyOwner := map[authn.KeyDigest]string{}
	for i, c := range callers {
		field := fmt.Sprintf("callers[%d]", i)
		c.Tenants, c.Scopes = slices.Clone(c.Tenants), slices.Clone(c.Scopes)
		c.UnixUID, c.UnixGID = clone(c.UnixUID), clone(c.UnixGID)
		if err := check(c); err != nil {
			err.Field = field + err.Field
			return nil, err
		}
		p.callers[i] = c
		cp := &p.callers[i]
		if c.APIKeySHA256 != "" {
			d, err := authn.ParseKeyDigest(c.APIKeySHA256)
			if err != nil {
				return nil, &FieldError{Field: field + ".api_key_sha256", Err: err}
			}
			if other, dup := keyOwner[d]; dup {
				return nil, &FieldError{Field: field + ".api_key_sha256", Err: fmt.Errorf("caller %q has the same API key as caller %q", c.Name, other)}
			}
			keyOwner[d] = c.Name
			digests = append(digests, d)
			p.keyOf = append(p.keyOf, cp)
			continue
		}
		id := cp.identity()
		if other, dup := p.byID[id]; dup {
			return nil, &FieldError{Field: field, Err: fmt.Errorf("caller %q has the same identity (%s) as caller %q", c.Name, id, other.Name)}
		}
		p.byID[id] = cp
	}
	p.keys = authn.NewKeySet(digests)
	return p, nil
}

// check validates a caller's SPIFFE ID and globs; the error's Field is
// relative to the caller's entry.
func check(c Caller) *FieldError {
	if c.SPIFFEID != "" {
		if err := authn.ValidSPIFFEID(c.SPIFFEID); err != nil {
			return &FieldError{Field: ".spiffe_id", Err: err}
		}
	}
	for _, l := range []struct {
		key   string
		globs []string
	}{{"tenants", c.Tenants}, {"scopes", c.Scopes}} {
		for j, g := range l.globs {
			if err := validGlob(g); err != nil {
				return &FieldError{Field: fmt.Sprintf(".%s[%d]", l.key, j), Err: fmt.Errorf("%q: %v", g, err)}
			}
		}
	}
	return nil
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

// Lookup returns the caller with the identity id (a certificate's, or a
// Unix socket peer's uid or gid).
func (p *Policy) Lookup(id authn.Identity) (*Caller, bool) {
	if p == nil {
		return nil, false
	}
	c, ok := p.byID[id]
	return c, ok
}

// LookupKeyDigest returns the caller whose API key has digest d, comparing
// digests in constant time.
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

// ErrNoPolicy is returned by NewHolder and Store for a nil policy.
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

// OnStore registers f, kept for the Holder's lifetime, to be called by
// every later Store with the new policy, after Load returns it and before
// Store returns, so that a change takes effect synchronously (the guard
// ends the streams it revokes). f runs under the Holder's lock: it must
// not call Store or OnStore, and should not block for long.
func (h *Holder) OnStore(f func(*Policy)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.observers = append(h.observers, f)
}

// Store makes p the current policy and runs the OnStore observers in
// registration order.
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
