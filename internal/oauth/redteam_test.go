package oauth_test

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/oauth"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// The red team's findings against the endpoint (issue 20), each kept
// fixed here.

// rawBasic is an Authorization header with the parts as curl -u and most
// HTTP libraries send them: not form-encoded.
func rawBasic(id, secret string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))}}
}

// F1: a web page cannot get tokens: no request with a browser's Origin
// or Sec-Fetch-Mode is served, and in open mode a Host that is not an IP
// or localhost (a name rebound to loopback) is refused.
func TestBrowsersAndRebindingRefused(t *testing.T) {
	open := start(t, options{callers: []policy.Caller{}})
	secured := start(t, options{})
	for _, tc := range []struct {
		name   string
		f      *fixture
		header http.Header
		host   string
		status int
	}{
		{"open mode, a rebound name", open, nil, "rebind.attacker.example", http.StatusMisdirectedRequest},
		{"open mode, an Origin", open, http.Header{"Origin": {"http://127.0.0.1:8000"}}, "", http.StatusForbidden},
		{"open mode, Sec-Fetch-Mode", open, http.Header{"Sec-Fetch-Mode": {"cors"}}, "", http.StatusForbidden},
		{"with callers, an Origin", secured, http.Header{"Origin": {"https://evil.example"}, "Authorization": basic("team-a", ciKey)["Authorization"]}, "", http.StatusForbidden},
		{"open mode, localhost", open, nil, "localhost:50052", http.StatusOK},
		{"open mode, an IP", open, nil, "", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, tc.f.URL+oauth.Path, strings.NewReader(form("team-a", "any").Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			for k, v := range tc.header {
				req.Header[k] = v
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			a := tc.f.do(req)
			if a.Status != tc.status {
				t.Errorf("HTTP %d %s, want %d", a.Status, a.Body, tc.status)
			}
			if tc.status != http.StatusOK && (a.JSON["access_token"] != nil || a.Header.Get("Cache-Control") != "no-store") {
				t.Errorf("refusal %s with Cache-Control %q", a.Body, a.Header.Get("Cache-Control"))
			}
		})
	}
}

// F2: a key with '+' or '%' works in Basic whether the client
// form-encodes it (RFC 6749 §2.3.1, x/oauth2) or not (curl -u, requests).
func TestBasicKeyEncodedOrNot(t *testing.T) {
	key := "tbk_plus+and%2Fpercent_" + strings.Repeat("7", 20)
	f := start(t, options{callers: []policy.Caller{{Name: "ci", APIKeySHA256: digest(key), Tenants: []string{"team-*"}}}})
	f.Secret("key", key)
	for name, h := range map[string]http.Header{"form-encoded": basic("team-a", key), "raw": rawBasic("team-a", key)} {
		if a := f.post("", url.Values{"grant_type": {"client_credentials"}}, h); a.Status != http.StatusOK {
			t.Errorf("%s Basic: HTTP %d %s", name, a.Status, a.Body)
		}
	}
	if a := f.post("", url.Values{"grant_type": {"client_credentials"}}, rawBasic("team-a", key+"x")); a.Status != http.StatusUnauthorized {
		t.Errorf("a wrong raw key: HTTP %d %s", a.Status, a.Body)
	}
}

// F3: Basic that cannot be read is invalid_client (401, WWW-Authenticate),
// audited and charged like any bad credential, not invalid_request.
func TestBadBasicIsInvalidClient(t *testing.T) {
	f := start(t, options{})
	for name, v := range map[string]string{
		"no colon":     "Basic " + base64.StdEncoding.EncodeToString([]byte("team-a")),
		"bad base64":   "Basic %%%",
		"empty secret": "Basic " + base64.StdEncoding.EncodeToString([]byte("team-a:")),
		"bearer":       "Bearer " + ciKey,
	} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, f.URL+oauth.Path, strings.NewReader("grant_type=client_credentials"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", v)
		a := f.do(req)
		if a.Status != http.StatusUnauthorized || a.JSON["error"] != "invalid_client" || a.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: HTTP %d %s (WWW-Authenticate %q)", name, a.Status, a.Body, a.Header.Get("WWW-Authenticate"))
		}
	}
	denials := 0
	for _, r := range auditRecords(t, f) {
		if r.Event == "deny" && r.Code == "Unauthenticated" {
			denials++
		}
	}
	if denials == 0 {
		t.Error("no audit line for the refused Basic credentials")
	}
}

// Answers for other paths are RFC 6749 §5.2 JSON, uncacheable, and no
// path is redirected (ServeMux's //x → /x).
func TestOtherPathsAreJSONAndNotRedirected(t *testing.T) {
	f := start(t, options{})
	for _, path := range []string{"/oauth2/token/", "//oauth2/token", "/", "/oauth2/../oauth2/token"} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, f.URL, strings.NewReader(form("team-a", ciKey).Encode()))
		req.URL.Path = path
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		a := f.do(req)
		if a.Status != http.StatusNotFound || a.JSON["error"] != "invalid_request" || a.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: HTTP %d %s (Cache-Control %q)", path, a.Status, a.Body, a.Header.Get("Cache-Control"))
		}
	}
}
