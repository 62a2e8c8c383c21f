package upstream_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// jwtOf is a JWT-shaped token (unsigned) with claims as its payload.
func jwtOf(claims map[string]any) string {
	p, _ := json.Marshal(claims)
	sig := make([]byte, 256)
	_, _ = rand.Read(sig)
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc.EncodeToString(p) + "." + enc.EncodeToString(sig)
}

// wantInvalidResponse checks that err is a transient *upstream.Error that
// names the access_token and why, and quotes none of hidden.
func wantInvalidResponse(t *testing.T, g upstream.Grant, err error, why string, hidden ...string) {
	t.Helper()
	ue, ok := errors.AsType[*upstream.Error](err)
	if !ok || ue.Permanent || g.AccessToken != "" {
		t.Fatalf("got grant %v, err %v; want a transient *upstream.Error", g, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "access_token "+why) {
		t.Errorf("message %q, want it to say the access_token %s", msg, why)
	}
	for _, h := range hidden {
		if h != "" && strings.Contains(msg, h) {
			t.Errorf("message %q quotes %q", msg, h)
		}
	}
}

// An access token reaches callers and `broker token` prints it: only RFC
// 6750 b64token syntax is accepted, in JSON and form-encoded responses.
func TestFetchAcceptsOnlyB64TokenAccessTokens(t *testing.T) {
	for _, tc := range []struct {
		name, tok string
		ok        bool
	}{
		{"opaque", "at-1", true},
		{"JWT", jwtOf(map[string]any{"sub": "cid", "client_id": "cid", "scope": "read"}), true},
		{"every b64token character", "AZaz09-._~+/==", true},
		{"padding at the end", "abc=", true},
		{"CR LF (a header injection)", "tok\r\nX-Injected: 1", false},
		{"LF", "tok\n", false},
		{"CR", "tok\r", false},
		{"NUL", "tok\x00en", false},
		{"ESC (a terminal escape)", "\x1b]0;pwned\x07tok", false},
		{"space", "tok en", false},
		{"tab", "tok\ten", false},
		{"DEL", "tok\x7f", false},
		{"padding inside", "a=b", false},
		{"padding only", "==", false},
		{"non-ASCII", "tokén", false},
		{"quote", `tok"en`, false},
		{"comma", "tok,en", false},
		{"percent escape", "tok%0D%0A", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idp := faultidp.Start()
			defer idp.Close()
			idp.Push(faultidp.OK(tc.tok, 3600))
			g, err := client(t, idp, 0).Fetch(t.Context(), nil)
			if tc.ok {
				if err != nil || g.AccessToken != tc.tok {
					t.Fatalf("got %q, %v; want the token", g.AccessToken, err)
				}
				return
			}
			hidden := []string{tc.tok}
			if len(tc.tok) < 3 {
				hidden = nil
			}
			wantInvalidResponse(t, g, err, "is not an RFC 6750 token", hidden...)
		})
	}
	t.Run("form-encoded CR LF", func(t *testing.T) {
		idp := faultidp.Start()
		defer idp.Close()
		idp.Push(faultidp.Response{Body: "access_token=tok%0D%0AX-Injected%3A+1&token_type=bearer&expires_in=3600",
			Header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}})
		g, err := client(t, idp, 0).Fetch(t.Context(), nil)
		wantInvalidResponse(t, g, err, "is not an RFC 6750 token", "X-Injected")
	})
}

// An endpoint that echoes the request would hand out the client secret
// as a token: an access_token that carries any credential the client
// holds, fallbacks included, raw or in the forms a b64token can take
// (upper case, base64 of the Basic credential, a JWT claim, a run of it),
// is an invalid response that quotes none of it.
func TestFetchRefusesAnAccessTokenEchoingACredential(t *testing.T) {
	const id, primary, fallback = "echo-client", "Pr1mary/S3cret+Value-xyz", "Fa11back_S3cret.Value~abc"
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	encodings := []faultidp.Encoding{
		{Name: "raw", Encode: func(_, s string) string { return s }},
		{Name: "upper case", Encode: func(_, s string) string { return strings.ToUpper(s) }},
		{Name: "base64 of id:secret (the Basic credential)", Encode: func(id, s string) string { return b64(id + ":" + s) }},
		{Name: "base64url of the secret, unpadded", Encode: func(_, s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }},
		{Name: "JWT claim", Encode: func(id, s string) string { return jwtOf(map[string]any{"sub": id, "secret": s}) }},
		{Name: "JWT claim, PHP-escaped", Encode: func(id, s string) string {
			p := `{"sub":"` + id + `","secret":"` + faultidp.PHPJSON(s) + `"}`
			return "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString([]byte(p)) + "."
		}},
		{Name: "base64 glued to base64url", Encode: func(_, s string) string {
			return base64.RawStdEncoding.EncodeToString([]byte("\xfb\xff"+s)) + "_x" // "+/...": neither alphabet decodes the run
		}},
		{Name: "first 13 characters", Encode: func(_, s string) string { return s[:13] }},
		{Name: "prefixed", Encode: func(_, s string) string { return "at-" + s + "-1" }},
	}
	for _, enc := range encodings {
		for _, useFallback := range []bool{false, true} {
			name := enc.Name
			if useFallback {
				name += "/fallback"
			}
			t.Run(name, func(t *testing.T) {
				idp := faultidp.Start()
				defer idp.Close()
				if useFallback {
					idp.Push(faultidp.OAuthError(401, "invalid_client", ""))
				}
				idp.Push(faultidp.EchoAccessToken(enc.Encode))
				c, err := upstream.New(upstream.Config{TokenURL: idp.TokenURL(), ClientID: id, ClientSecret: primary,
					Fallbacks: []upstream.Credential{{Name: "old.secret", ClientID: id, ClientSecret: fallback}}})
				if err != nil {
					t.Fatal(err)
				}
				g, err := c.Fetch(t.Context(), nil)
				hidden := append(faultidp.SecretForms(id, primary), faultidp.SecretForms(id, fallback)...)
				wantInvalidResponse(t, g, err, "echoes the client credentials", hidden...)
			})
		}
	}
}

// The echo check is exact (whole secrets and runs of 12 of their
// characters), so genuine tokens pass: ones that name the client, share a
// few characters with the secret, or are large.
func TestFetchAcceptsTokensThatEchoNothing(t *testing.T) {
	const id, sec = "cid", "Sh0rt-s3cret-Value"
	big := make([]byte, 150<<10)
	_, _ = rand.Read(big)
	for _, tc := range []struct{ name, tok string }{
		{"JWT naming the client", jwtOf(map[string]any{"sub": id, "client_id": id, "azp": id})},
		{"11 characters of the secret", "tok-" + sec[:11] + "-x"},
		{"the secret's letters, shuffled", "Value-s3cret-Sh0rt"},
		{"200 KB", base64.RawURLEncoding.EncodeToString(big)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idp := faultidp.Start()
			defer idp.Close()
			idp.Push(faultidp.OK(tc.tok, 3600))
			c, err := upstream.New(upstream.Config{TokenURL: idp.TokenURL(), ClientID: id, ClientSecret: creds.Secret(sec)})
			if err != nil {
				t.Fatal(err)
			}
			if g, err := c.Fetch(t.Context(), nil); err != nil || g.AccessToken != tc.tok {
				t.Fatalf("refused a token that echoes nothing: %v", err)
			}
		})
	}
}
