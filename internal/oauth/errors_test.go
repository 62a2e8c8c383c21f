package oauth_test

import (
	"cmp"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/internal/oauth"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// idpText is what the failing IdPs say; no answer may repeat it.
const idpText = "IdP says xyzzy plugh"

// faultTenant is a tenant whose IdP always answers r.
func faultTenant(t *testing.T, name string, r faultidp.Response) broker.Tenant {
	idp := faultidp.Start()
	t.Cleanup(idp.Close)
	idp.SetDefault(r)
	return broker.Tenant{Name: name, TokenURL: idp.TokenURL(), ClientID: "id", ClientSecret: creds.Secret("FAKE-idp-secret")}
}

// TestErrorPaths: every refusal is an RFC 6749 §5.2 answer with its
// status, error code and headers, and a description that names no
// secret, no IdP text, and not whether a forbidden tenant exists.
func TestErrorPaths(t *testing.T) {
	f := start(t, options{extra: []broker.Tenant{
		faultTenant(t, "team-down", faultidp.OAuthError(503, "temporarily_unavailable", idpText)),
		faultTenant(t, "team-limited", faultidp.Response{Status: 429, Header: http.Header{"Retry-After": {"42"}}, Body: idpText}),
		faultTenant(t, "team-rejected", faultidp.OAuthError(401, "invalid_client", idpText)),
		faultTenant(t, "team-badscope", faultidp.OAuthError(400, "invalid_scope", idpText)),
	}})
	ok := form("team-a", ciKey)
	for _, tc := range []struct {
		name   string
		method string // default POST
		ctype  string // default form
		query  string
		form   url.Values
		header http.Header
		status int
		code   string
		desc   string // in error_description
	}{
		{name: "GET", method: http.MethodGet, form: ok, status: 405, code: "invalid_request", desc: "POST only"},
		{name: "JSON body", ctype: "application/json", form: ok, status: 400, code: "invalid_request", desc: "Content-Type must be application/x-www-form-urlencoded"},
		{name: "no content type", ctype: "-", form: ok, status: 400, code: "invalid_request", desc: "Content-Type"},
		{name: "no grant_type", form: url.Values{"client_id": {"team-a"}, "client_secret": {ciKey}}, status: 400, code: "invalid_request", desc: "grant_type is missing"},
		{name: "repeated grant_type", form: form("team-a", ciKey, "grant_type", "x"), status: 400, code: "invalid_request", desc: "grant_type is repeated"},
		{name: "unknown grant", form: url.Values{"grant_type": {"password"}, "client_id": {"team-a"}, "client_secret": {ciKey}},
			status: 400, code: "unsupported_grant_type", desc: `grant_type "password" is not supported`},
		{name: "repeated client_id", form: form("team-a", ciKey, "client_id", "team-b"), status: 400, code: "invalid_request", desc: "client_id is repeated"},
		{name: "repeated scope", form: form("team-a", ciKey, "scope", "a", "scope", "b"), status: 400, code: "invalid_request", desc: "scope is repeated"},
		{name: "secret in the URL", query: "client_secret=" + url.QueryEscape(ciKey), form: form("team-a", ""), status: 400, code: "invalid_request", desc: "client_secret is in the URL"},
		{name: "basic and form secret", form: ok, header: basic("team-a", ciKey), status: 400, code: "invalid_request", desc: "authenticates twice"},
		{name: "basic id differs", form: form("team-b", ""), header: basic("team-a", ciKey), status: 400, code: "invalid_request", desc: "client_id in the form differs"},
		{name: "repeated authorization", form: form("team-a", ""), header: http.Header{"Authorization": {basic("team-a", ciKey).Get("Authorization"), "Basic eA=="}},
			status: 400, code: "invalid_request", desc: "Authorization header is repeated"},
		{name: "no client_id", form: url.Values{"grant_type": {"client_credentials"}, "client_secret": {ciKey}}, status: 400, code: "invalid_request", desc: "client_id is missing"},
		{name: "bad client_id", form: form("Team A", ciKey), status: 400, code: "invalid_request", desc: "client_id names the tenant"},
		{name: "not a form", form: nil, status: 400, code: "invalid_request", desc: "not form-encoded"},
		{name: "no credentials", form: form("team-a", ""), status: 401, code: "invalid_client", desc: "no client authentication"},
		{name: "wrong key, basic", form: url.Values{"grant_type": {"client_credentials"}}, header: basic("team-a", wrongKey), status: 401, code: "invalid_client", desc: "API key not recognised"},
		{name: "wrong key, form", form: form("team-a", wrongKey), status: 401, code: "invalid_client", desc: "API key not recognised"},
		{name: "empty secret", form: url.Values{"grant_type": {"client_credentials"}, "client_id": {"team-a"}, "client_secret": {""}}, status: 401, code: "invalid_client", desc: "client secret is empty"},
		{name: "bearer scheme", form: form("team-a", ""), header: http.Header{"Authorization": {"Bearer " + ciKey}}, status: 401, code: "invalid_client", desc: `must be "Basic "`},
		{name: "basic not base64", form: form("team-a", ""), header: http.Header{"Authorization": {"Basic %%%"}}, status: 401, code: "invalid_client", desc: `must be "Basic "`},
		{name: "forbidden tenant", form: form("acme", readerKey), status: 400, code: "unauthorized_client", desc: `caller "reader" may not use tenant "acme"`},
		{name: "forbidden missing tenant", form: form("nowhere", readerKey), status: 400, code: "unauthorized_client", desc: `caller "reader" may not use tenant "nowhere"`},
		{name: "allowed missing tenant", form: form("team-x", ciKey), status: 400, code: "unauthorized_client", desc: "names no tenant of this broker"},
		{name: "scope not allowed", form: form("team-a", readerKey, "scope", "read:a write:b"), status: 400, code: "unauthorized_client", desc: `may not request scope "write:b"`},
		{name: "scope syntax", form: form("team-a", ciKey, "scope", `a"b`), status: 400, code: "invalid_scope", desc: "printable ASCII"},
		{name: "too many scopes", form: form("team-a", ciKey, "scope", manyScopes(33)), status: 400, code: "invalid_scope", desc: "more than 32 distinct scopes"},
		{name: "a huge scope", form: form("team-a", ciKey, "scope", strings.Repeat("x", 60<<10)), status: 400, code: "invalid_scope", desc: "1 to 256 printable"},
		{name: "IdP down", form: form("team-down", ciKey), status: 503, code: "temporarily_unavailable", desc: "the identity provider is unavailable"},
		{name: "IdP 429", form: form("team-limited", ciKey), status: 503, code: "temporarily_unavailable", desc: "the identity provider is unavailable"},
		{name: "IdP rejects the tenant", form: form("team-rejected", ciKey), status: 500, code: "server_error", desc: "rejects the broker's credentials"},
		{name: "IdP rejects the scopes", form: form("team-badscope", ciKey, "scope", "x"), status: 400, code: "invalid_scope", desc: "refused the requested scopes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.form.Encode()
			if tc.form == nil {
				body = "grant_type=%zz"
			}
			req, err := http.NewRequestWithContext(t.Context(), cmp.Or(tc.method, http.MethodPost), f.URL+oauth.Path+"?"+tc.query, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if ct := cmp.Or(tc.ctype, "application/x-www-form-urlencoded"); ct != "-" {
				req.Header.Set("Content-Type", ct)
			}
			for k, v := range tc.header {
				req.Header[k] = v
			}
			a := f.do(req)
			desc, _ := a.JSON["error_description"].(string)
			if a.Status != tc.status || a.JSON["error"] != tc.code || !strings.Contains(desc, tc.desc) {
				t.Errorf("HTTP %d %s; want %d %s with %q", a.Status, a.Body, tc.status, tc.code, tc.desc)
			}
			h := a.Header
			if h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "no-store" || h.Get("Pragma") != "no-cache" {
				t.Errorf("headers %v, want JSON, no-store, no-cache", h)
			}
			if (tc.status == 401) != (h.Get("WWW-Authenticate") == `Basic realm="tokenbroker"`) {
				t.Errorf("HTTP %d with WWW-Authenticate %q", tc.status, h.Get("WWW-Authenticate"))
			}
			if (tc.status == 405) != (h.Get("Allow") == "POST") {
				t.Errorf("HTTP %d with Allow %q", tc.status, h.Get("Allow"))
			}
			if tc.status == 503 && h.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			for _, leak := range []string{idpText, "xyzzy", ciKey, readerKey, wrongKey, "FAKE-idp-secret"} {
				if strings.Contains(a.Body, leak) {
					t.Errorf("the answer repeats %q", leak[:6])
				}
			}
		})
	}
	if n := f.Results("invalid_client"); n != 6 {
		t.Errorf("OnResult counted %d invalid_client, want 6", n)
	}
}

// TestForbiddenTenantsLookAlike: a caller not allowed a tenant gets the
// same answer, word for word but the name, whether it exists or not.
func TestForbiddenTenantsLookAlike(t *testing.T) {
	f := start(t, options{})
	exists := f.post("", form("acme", readerKey), nil)
	missing := f.post("", form("nowhere", readerKey), nil)
	if exists.Status != missing.Status || exists.Body != strings.ReplaceAll(missing.Body, "nowhere", "acme") {
		t.Errorf("existing tenant: %d %s\nmissing tenant: %d %s", exists.Status, exists.Body, missing.Status, missing.Body)
	}
}

// TestScopeLimit: limits.max_scopes_per_request applies as on gRPC;
// duplicates count once.
func TestScopeLimit(t *testing.T) {
	f := start(t, options{limits: limits.Limits{MaxScopesPerRequest: 2}})
	a := f.post("", form("team-a", ciKey, "scope", "a b c"), nil)
	if a.Status != 400 || a.JSON["error"] != "invalid_scope" || !strings.Contains(a.Body, "3 distinct scopes requested; at most 2 are allowed per request (limits.max_scopes_per_request)") {
		t.Errorf("3 scopes over a limit of 2: %d %s", a.Status, a.Body)
	}
	if a := f.post("", form("team-a", ciKey, "scope", "a b a b a"), nil); a.Status != 200 || a.JSON["scope"] != "a b" {
		t.Errorf("2 distinct scopes, repeated: %d %s", a.Status, a.Body)
	}
}

// TestRetryAfter: the IdP's own Retry-After is passed on (capped); a
// caller over its rate limit gets 429 with Retry-After.
func TestRetryAfter(t *testing.T) {
	f := start(t, options{
		limits: limits.Limits{RequestsPerSecond: 0.001, Burst: 2},
		extra:  []broker.Tenant{faultTenant(t, "team-slow", faultidp.TooManyRequests("42"))},
	})
	a := f.post("", form("team-slow", ciKey), nil)
	if a.Status != 503 || a.Header.Get("Retry-After") != "42" {
		t.Errorf("IdP answered 429 with Retry-After 42: HTTP %d, Retry-After %q", a.Status, a.Header.Get("Retry-After"))
	}
	f.post("", form("team-a", ciKey), nil)
	a = f.post("", form("team-a", ciKey), nil)
	if a.Status != 429 || a.JSON["error"] != "temporarily_unavailable" || a.Header.Get("Retry-After") != "1" ||
		!strings.Contains(a.JSON["error_description"].(string), "over its rate limit") {
		t.Errorf("the third request of a burst of 2: %d %v %s", a.Status, a.Header, a.Body)
	}
}

// TestAuditFailureHandsOutNothing: a token whose audit line cannot be
// written is not handed out: 503.
func TestAuditFailureHandsOutNothing(t *testing.T) {
	fw := &failWriter{}
	f := start(t, options{auditTo: fw})
	fw.w = f.Audit
	if a := f.post("", form("team-a", ciKey), nil); a.Status != 200 {
		t.Fatalf("HTTP %d %s", a.Status, a.Body)
	}
	fw.fail.Store(true)
	a := f.post("", form("team-a", ciKey), nil)
	if a.Status != 503 || a.JSON["access_token"] != nil || !strings.Contains(a.Body, "audit trail") {
		t.Errorf("with the audit trail failing: %d %s", a.Status, a.Body)
	}
}

// TestOpenMode: without callers, loopback clients get tokens with any
// secret or none, as over gRPC; audited as caller "loopback".
func TestOpenMode(t *testing.T) {
	f := start(t, options{callers: []policy.Caller{}})
	for _, a := range []answer{f.post("", form("acme", "anything"), nil), f.post("", form("team-a", ""), nil), f.post("", url.Values{"grant_type": {"client_credentials"}}, basic("team-b", "x"))} {
		if a.Status != 200 {
			t.Errorf("open mode: HTTP %d %s", a.Status, a.Body)
		}
	}
	if r := auditRecords(t, f); len(r) != 3 || r[0].Caller != "loopback" {
		t.Errorf("audit lines %+v", r)
	}
}

type failWriter struct {
	w    io.Writer
	fail atomic.Bool
}

func (f *failWriter) Write(p []byte) (int, error) {
	if f.fail.Load() {
		return 0, io.ErrShortWrite
	}
	return f.w.Write(p)
}

func manyScopes(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = "s" + strings.Repeat("x", i)
	}
	return strings.Join(s, " ")
}
