package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/authn"
)

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"acme", "acme", true},
		{"acme", "acme2", false},
		{"acme", "acm", false},
		{"team-*", "team-a", true},
		{"team-*", "team-", true},
		{"team-*", "team", false},
		{"team-*", "teams-a", false},
		{"*", "anything", true},
		{"*", "", true},
		{"*-prod", "billing-prod", true},
		{"*-prod", "billing-prod-eu", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"read:*", "read:inputs", true},
		{"read:*", "write:inputs", false},
		{"read:*", "read:a/b/c", true}, // unlike path.Match, * crosses '/'
		{"api://x/*", "api://x/read", true},
		{"[ab]", "a", false}, // no character classes: '[' is literal
		{"[ab]", "[ab]", true},
		{"**", "x", true},
		{strings.Repeat("*a", 20) + "b", strings.Repeat("a", 60), false}, // no exponential blow-up
	} {
		if got := Match(tc.pattern, tc.name); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

func digest(key string) string { s := sha256.Sum256([]byte(key)); return hex.EncodeToString(s[:]) }

func testPolicy(t *testing.T) *Policy {
	t.Helper()
	p, err := New([]Caller{
		{Name: "billing", SPIFFEID: "spiffe://prod/ns/billing/sa/api", Tenants: []string{"acme", "team-*"}, Scopes: []string{"read:*"}},
		{Name: "reports", DNSName: "Reports.Prod.svc", Tenants: []string{"acme"}},
		{Name: "batch", CommonName: "batch-job", Tenants: []string{"*"}},
		{Name: "ci", APIKeySHA256: strings.ToUpper(digest("ci-key")), Tenants: []string{"team-ci"}},
		{Name: "ops", APIKeySHA256: digest("ops-key"), Tenants: []string{"*"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLookup(t *testing.T) {
	p := testPolicy(t)
	for id, want := range map[authn.Identity]string{
		{Kind: authn.KindSPIFFE, Value: "spiffe://prod/ns/billing/sa/api"}:   "billing",
		{Kind: authn.KindDNS, Value: "reports.prod.svc"}:                     "reports",
		{Kind: authn.KindCommonName, Value: "batch-job"}:                     "batch",
		{Kind: authn.KindSPIFFE, Value: "spiffe://prod/ns/billing/sa/other"}: "",
		{Kind: authn.KindDNS, Value: "batch-job"}:                            "", // kinds don't mix
		{Kind: authn.KindCommonName, Value: "reports.prod.svc"}:              "",
	} {
		got := ""
		if c, ok := p.Lookup(id); ok {
			got = c.Name
		}
		if got != want {
			t.Errorf("Lookup(%v) = %q, want %q", id, got, want)
		}
	}
	for key, want := range map[string]string{"ci-key": "ci", "ops-key": "ops", "wrong": "", "": ""} {
		c, ok := p.LookupKeyDigest(authn.HashKey(key))
		if ok != (want != "") || ok && c.Name != want {
			t.Errorf("LookupKeyDigest(%q) = %v, %v; want %q", key, c, ok, want)
		}
	}
	if p.Empty() {
		t.Error("Empty wrong")
	}
}

func TestAllowed(t *testing.T) {
	p := testPolicy(t)
	callers := map[string]*Caller{}
	for _, c := range p.callers {
		callers[c.Name] = &c
	}
	for _, tc := range []struct {
		caller, tenant string
		scopes         []string
		want           bool
	}{
		{"billing", "acme", nil, true},
		{"billing", "acme", []string{"read:inputs", "read:x"}, true},
		{"billing", "acme", []string{"read:inputs", "write:inputs"}, false},
		{"billing", "team-a", []string{"read:a"}, true},
		{"billing", "other", []string{"read:a"}, false},
		{"billing", "no-such-tenant", nil, false},
		{"reports", "acme", []string{"write:anything"}, true},
		{"reports", "team-a", nil, false},
		{"batch", "whatever", []string{"x"}, true},
		{"ci", "team-ci", nil, true},
		{"ci", "team-cd", nil, false},
	} {
		c := callers[tc.caller]
		if got := c.TenantAllowed(tc.tenant) && c.ScopesAllowed(tc.scopes); got != tc.want {
			t.Errorf("%s: tenant %q, scopes %v: allowed %v, want %v", tc.caller, tc.tenant, tc.scopes, got, tc.want)
		}
	}
	var empty *Policy
	if !empty.Empty() {
		t.Error("nil policy must be empty")
	}
	if _, ok := empty.Lookup(authn.Identity{Kind: authn.KindCommonName, Value: "batch-job"}); ok {
		t.Error("nil policy must know no caller")
	}
}

// TestNewRejects: a caller's name, identity count and tenant list are
// config's to check (broker/config security_test.go, listen_test.go).
func TestNewRejects(t *testing.T) {
	ok := Caller{Name: "a", CommonName: "a", Tenants: []string{"x"}}
	for _, tc := range []struct {
		name    string
		callers []Caller
		field   string
		want    string
	}{
		{"bad tenant glob", []Caller{{Name: "a", CommonName: "a", Tenants: []string{""}}}, "callers[0].tenants[0]", "empty"},
		{"bad scope glob", []Caller{{Name: "a", CommonName: "a", Tenants: []string{"x"}, Scopes: []string{"read all"}}}, "callers[0].scopes[0]", "space"},
		{"bad spiffe", []Caller{{Name: "a", SPIFFEID: "spiffe://A/b", Tenants: []string{"x"}}}, "callers[0].spiffe_id", "trust domain"},
		{"bad digest", []Caller{{Name: "a", APIKeySHA256: "abc", Tenants: []string{"x"}}}, "callers[0].api_key_sha256", "64 hex"},
		{"dup digest", []Caller{
			{Name: "a", APIKeySHA256: digest("k"), Tenants: []string{"x"}},
			{Name: "b", APIKeySHA256: digest("k"), Tenants: []string{"x"}}}, "callers[1].api_key_sha256", "same API key"},
		{"dup identity", []Caller{ok, {Name: "b", CommonName: "a", Tenants: []string{"x"}}}, "callers[1]", "same identity"},
		{"dup dns case", []Caller{
			{Name: "a", DNSName: "A.example", Tenants: []string{"x"}},
			{Name: "b", DNSName: "a.EXAMPLE", Tenants: []string{"x"}}}, "callers[1]", "same identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.callers)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want field %s and %q", err, tc.field, tc.want)
			}
		})
	}
}

func TestNewCopiesInput(t *testing.T) {
	in := []Caller{{Name: "a", CommonName: "a", Tenants: []string{"x"}}}
	p, err := New(in)
	if err != nil {
		t.Fatal(err)
	}
	in[0].Tenants[0] = "*"
	if c, _ := p.Lookup(authn.Identity{Kind: authn.KindCommonName, Value: "a"}); c.TenantAllowed("y") {
		t.Error("changing the input changed the policy")
	}
}

func TestHolder(t *testing.T) {
	p1, p2 := testPolicy(t), &Policy{}
	h, err := NewHolder(p1)
	if err != nil {
		t.Fatal(err)
	}
	if h.Load() != p1 {
		t.Fatal("Load does not return the policy the Holder was made with")
	}
	if err := h.Store(p2); err != nil {
		t.Fatal(err)
	}
	if h.Load() != p2 {
		t.Fatal("Load does not return the stored policy")
	}
	if h.Store(nil) == nil {
		t.Error("Store(nil) accepted")
	}
	if _, err := NewHolder(nil); err == nil {
		t.Error("NewHolder(nil) accepted")
	}
}

// TestHolderOnStore: Store runs every observer, in registration order,
// with the new policy already current, and returns only after them; a
// Store(nil) runs none.
func TestHolderOnStore(t *testing.T) {
	p1, p2, p3 := testPolicy(t), &Policy{}, testPolicy(t)
	h, err := NewHolder(p1)
	if err != nil {
		t.Fatal(err)
	}
	var calls []string
	for _, name := range []string{"first", "second"} {
		h.OnStore(func(p *Policy) {
			if h.Load() != p {
				t.Errorf("observer %s: Load does not return the policy being stored", name)
			}
			calls = append(calls, name)
		})
	}
	for _, p := range []*Policy{p2, p3} {
		if err := h.Store(p); err != nil {
			t.Fatal(err)
		}
	}
	if h.Store(nil) == nil {
		t.Error("Store(nil) accepted")
	}
	// Read right after Store returned, without other synchronisation:
	// -race reports it if an observer ran after Store returned.
	if got := strings.Join(calls, " "); got != "first second first second" {
		t.Errorf("observers ran %q, want each Store to run first, second", got)
	}
}

// TestScopesWithWildcardOrCommaMatchLiterally: a requested "*" or
// "read:*" or "read:a,write:b" would be read by some IdPs as a wildcard
// or a list, so it passes only an identical allow-list entry, not a glob.
func TestScopesWithWildcardOrCommaMatchLiterally(t *testing.T) {
	c := Caller{Name: "billing", APIKeySHA256: strings.Repeat("a", 64), Tenants: []string{"acme"}, Scopes: []string{"read:*", "admin:*", "admin:all"}}
	for _, tc := range []struct {
		scope string
		want  bool
	}{
		{"read:invoices", true},
		{"read:*", true},  // identical entry
		{"admin:*", true}, // identical entry
		{"*", false},      // the glob read:* must not admit it
		{"read:a*", false},
		{"read:a,write:b", false},
		{"read:a,read:b", false},
		{"write:x", false},
		{"admin:all", true},
		// Other glob metacharacters: '?' and '[' would pass the matcher's
		// '*' but an IdP may expand them (issue D9).
		{"read:?", false},
		{"read:[a-z]", false},
		{"read:a]", false},
		{`read:\x`, false},
		{"read:inv?ices", false},
	} {
		if got := c.ScopesAllowed([]string{tc.scope}); got != tc.want {
			t.Errorf("ScopesAllowed(%q) = %v, want %v", tc.scope, got, tc.want)
		}
	}
	literal := Caller{Name: "lit", APIKeySHA256: strings.Repeat("b", 64), Tenants: []string{"acme"}, Scopes: []string{"read:*", "read:[a-z]"}}
	if !literal.ScopesAllowed([]string{"read:[a-z]"}) {
		t.Error("a scope with '[' must pass an identical allow-list entry")
	}
	unrestricted := Caller{Name: "ops", Tenants: []string{"*"}}
	if !unrestricted.ScopesAllowed([]string{"*", "a,b"}) {
		t.Error("a caller without a scope allow-list may request any scope")
	}
}

func id(v uint32) *uint32 { return &v }

// TestUnixCallers: a uid and a gid are identities of their own kinds, each
// a caller's; a uid is never mistaken for a gid of the same number.
func TestUnixCallers(t *testing.T) {
	p, err := New([]Caller{
		{Name: "billing", UnixUID: id(1000), Tenants: []string{"acme"}},
		{Name: "batch", UnixGID: id(1000), Tenants: []string{"*"}},
		{Name: "root", UnixUID: id(0), Tenants: []string{"ops"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[authn.Identity]string{
		{Kind: authn.KindUnixUID, Value: "1000"}: "billing",
		{Kind: authn.KindUnixGID, Value: "1000"}: "batch",
		{Kind: authn.KindUnixUID, Value: "0"}:    "root",
		{Kind: authn.KindUnixGID, Value: "0"}:    "",
		{Kind: authn.KindUnixUID, Value: "1001"}: "",
	} {
		got := ""
		if c, ok := p.Lookup(id); ok {
			got = c.Name
		}
		if got != want {
			t.Errorf("Lookup(%v) = %q, want %q", id, got, want)
		}
	}
	for _, tc := range []struct {
		name    string
		callers []Caller
		want    string
	}{
		{"same uid twice", []Caller{{Name: "a", UnixUID: id(7), Tenants: []string{"a"}}, {Name: "b", UnixUID: id(7), Tenants: []string{"a"}}},
			`callers[1]: caller "b" has the same identity (unix_uid=7) as caller "a"`},
	} {
		if _, err := New(tc.callers); err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want)
		}
	}
}
