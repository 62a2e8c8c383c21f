package clientlib

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestSameOrigin(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"https://api.example.com/a", "https://api.example.com/b?q=1", true},
		{"https://api.example.com/", "https://API.Example.com:443/", true},
		{"http://127.0.0.1/", "http://127.0.0.1:80/x", true},
		{"https://api.example.com/", "http://api.example.com/", false},           // downgrade
		{"https://api.example.com:8443/", "http://api.example.com:8443/", false}, // downgrade, same port
		{"http://api.example.com/", "https://api.example.com/", false},
		{"https://api.example.com/", "https://api.example.com:8443/", false},
		{"https://example.com/", "https://api.example.com/", false}, // a subdomain is another origin
		{"https://api.example.com/", "https://example.com/", false},
		{"https://api.example.com/", "https://api.example.com.evil.test/", false},
		{"https://127.0.0.1/", "https://127.0.0.2/", false},
		{"https://[::1]:443/", "https://[::1]/", true},
	} {
		a, _ := url.Parse(tc.a)
		b, _ := url.Parse(tc.b)
		if got := sameOrigin(a, b); got != tc.want {
			t.Errorf("sameOrigin(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// A redirect chain whose links are missing, or endless, has no known
// origin: no token.
func TestForEntryOriginBrokenChain(t *testing.T) {
	u, _ := url.Parse("https://api.example.com/")
	entry := &http.Request{URL: u}
	hop := &http.Request{URL: u, Response: &http.Response{Request: entry}}
	if !forEntryOrigin(entry) || !forEntryOrigin(hop) {
		t.Fatal("a request, or a redirect within its origin, should get the token")
	}
	if forEntryOrigin(&http.Request{URL: u, Response: &http.Response{}}) {
		t.Error("a redirect without its previous request got the token")
	}
	loop := &http.Request{URL: u}
	loop.Response = &http.Response{Request: loop}
	if forEntryOrigin(loop) {
		t.Error("an endless chain got the token")
	}
}

func TestExcerptRedactsTokens(t *testing.T) {
	const tok = "ab/cd+ef==gh-the-token"
	pad := strings.Repeat("x", maxExcerpt-5)
	for _, tc := range []struct {
		name, body string
		more       bool
		want       string
	}{
		{"raw", `{"error":"token ` + tok + ` expired"}`, false, `{"error":"token [REDACTED] expired"}`},
		{"JSON-escaped", `{"t":"ab\/cd+ef==gh-the-token"}`, false, `{"t":"[REDACTED]"}`},
		{"URL-escaped", "see /x?t=ab%2Fcd%2Bef%3D%3Dgh-the-token", false, "see /x?t=[REDACTED]"},
		{"after Bearer", "got Bearer " + tok, false, "got Bearer [REDACTED]"},
		{"control characters", "a\x00b\nc " + tok + "\x1b[31m", false, "a b c [REDACTED] [31m"},
		{"cut by the excerpt's end", pad + tok + strings.Repeat("y", 100), false, pad + "…"},
		{"cut by the read limit", pad + tok[:7], true, pad + "…"},
		// Other spellings of the token (red team, issue 16: D) withhold the body.
		{"path-escaped, lower case", "see /s/ab%2fcd%2bef%3d%3dgh-the-token", false, bodyWithheld},
		{"JSON \\u escapes", `{"t":"ab\/cd\u002Bef==gh-the-token"}`, false, bodyWithheld},
		{"HTML entities", "<p>ab&#x2F;cd&#43;ef==gh-the-token</p>", false, bodyWithheld},
		{"split by a newline", "ab/cd+ef\n==gh-the-token", false, bodyWithheld},
		{"a prefix of it, cut by the read limit", pad + tok[:9], true, bodyWithheld},
		{"whole before the end", tok + pad, false, "[REDACTED]" + pad[:maxExcerpt-len("[REDACTED]")] + "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := excerpt([]byte(tc.body), tc.more, []string{"", tok})
			if got != tc.want {
				t.Errorf("excerpt =\n%q\nwant\n%q", got, tc.want)
			}
			if strings.Contains(got, tok[:5]) {
				t.Errorf("excerpt %q shows the start of the token", got)
			}
		})
	}
}
