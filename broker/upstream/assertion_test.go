package upstream_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

var (
	keysOnce sync.Once
	testKeys map[string]creds.PrivateKey
)

// keys returns one key per algorithm the broker signs with, made once.
func keys(t *testing.T) map[string]creds.PrivateKey {
	t.Helper()
	keysOnce.Do(func() {
		testKeys = map[string]creds.PrivateKey{}
		r, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		add := func(alg string, s crypto.Signer) {
			k, err := creds.NewPrivateKey(s)
			if err != nil {
				panic(err)
			}
			testKeys[alg] = k
		}
		add("RS256", r)
		for alg, c := range map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()} {
			e, err := ecdsa.GenerateKey(c, rand.Reader)
			if err != nil {
				panic(err)
			}
			add(alg, e)
		}
	})
	return testKeys
}

// assertionOf verifies the client assertion of a recorded request with
// pub and returns its header and claims.
func assertionOf(t *testing.T, a string, pub crypto.PublicKey) (jose.Header, map[string]any) {
	t.Helper()
	tok, err := jwt.ParseSigned(a, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.ES384, jose.ES512})
	if err != nil {
		t.Fatalf("client_assertion is not a compact JWS: %v", err)
	}
	var claims map[string]any
	if err := tok.Claims(pub, &claims); err != nil {
		t.Fatalf("client_assertion does not verify with the public key: %v", err)
	}
	return tok.Headers[0], claims
}

func TestAssertionHeaderClaimsAndForm(t *testing.T) {
	for alg, key := range keys(t) {
		for _, tc := range []struct {
			name, kid, aud, tokenQuery string
		}{
			{name: "defaults"},
			{name: "key_id and assertion_audience", kid: "acme-2025", aud: "https://idp.example/realms/acme"},
			{name: "token URL with a query", tokenQuery: "?api-key=q-secret-123"},
		} {
			t.Run(alg+"/"+tc.name, func(t *testing.T) {
				f := faultidp.Start()
				defer f.Close()
				f.SetDefault(faultidp.OK("at-1", 3600))
				c, err := upstream.New(upstream.Config{
					TokenURL: f.TokenURL() + tc.tokenQuery, ClientID: "acme-client", ClientKey: key, KeyID: tc.kid, AssertionAudience: tc.aud,
					AuthStyle: oauth2.AuthStyleInHeader, // ignored: the assertion goes in the body
				})
				if err != nil {
					t.Fatal(err)
				}
				wantKid := tc.kid
				if wantKid == "" {
					wantKid, _ = upstream.KeyID(key)
				}
				wantAud := tc.aud
				if wantAud == "" {
					wantAud = f.TokenURL() // never the query, which may hold a key
				}
				var jtis []string
				for range 2 {
					start := time.Now().Truncate(time.Second)
					if _, err := c.Fetch(t.Context(), []string{"read", "write"}); err != nil {
						t.Fatal(err)
					}
					jtis = append(jtis, checkRequest(t, f, key, alg, wantKid, wantAud, start))
				}
				if jtis[0] == jtis[1] {
					t.Errorf("two requests carried the same jti %q: an assertion was reused", jtis[0])
				}
			})
		}
	}
}

// checkRequest checks the last request's form and assertion (signed by
// key with alg and kid, for aud, issued after start) and returns its jti.
func checkRequest(t *testing.T, f *faultidp.Server, key creds.PrivateKey, alg, kid, aud string, start time.Time) string {
	t.Helper()
	form, header := f.LastRequest()
	if _, _, ok := (&http.Request{Header: header}).BasicAuth(); ok || form.Has("client_secret") {
		t.Errorf("request carries a secret: basic %v, form %v", ok, form)
	}
	for k, want := range map[string]string{
		"grant_type": "client_credentials", "scope": "read write", "client_id": "acme-client",
		"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
	} {
		if got := form.Get(k); got != want {
			t.Errorf("form %s = %q, want %q", k, got, want)
		}
	}
	h, cl := assertionOf(t, form.Get("client_assertion"), key.Public())
	if h.Algorithm != alg || h.KeyID != kid || h.ExtraHeaders["typ"] != "JWT" {
		t.Errorf("header alg %q kid %q typ %v, want %s, %q, JWT", h.Algorithm, h.KeyID, h.ExtraHeaders["typ"], alg, kid)
	}
	if cl["iss"] != "acme-client" || cl["sub"] != "acme-client" || cl["aud"] != aud {
		t.Errorf("iss %v sub %v aud %v, want the client twice and %q (one string)", cl["iss"], cl["sub"], cl["aud"], aud)
	}
	iat, exp := time.Unix(int64(cl["iat"].(float64)), 0), time.Unix(int64(cl["exp"].(float64)), 0)
	if iat.Before(start) || iat.After(time.Now()) || exp.Sub(iat) != upstream.AssertionLifetime || upstream.AssertionLifetime > 5*time.Minute {
		t.Errorf("iat %v exp %v, want now and %v later (at most 5 minutes)", iat, exp, upstream.AssertionLifetime)
	}
	jti, _ := cl["jti"].(string)
	if len(jti) < 22 { // 128 bits in base32 or base64
		t.Errorf("jti %q is too short to hold 128 random bits", jti)
	}
	return jti
}

func TestAssertionConfigErrors(t *testing.T) {
	key := keys(t)["ES256"]
	for _, tc := range []struct {
		name string
		cfg  upstream.Config
		want string
	}{
		{"key and secret", upstream.Config{ClientID: "a", ClientSecret: "s", ClientKey: key}, "both a client secret and a private key"},
		{"fallback key and secret", upstream.Config{ClientID: "a", ClientKey: key,
			Fallbacks: []upstream.Credential{{Name: "old.pem", ClientID: "a", ClientSecret: "s", Key: key}}}, "fallback 1 (old.pem) has both"},
		{"neither", upstream.Config{ClientID: "a"}, "client secret is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.TokenURL = "https://idp.example/token"
			_, err := upstream.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// An IdP that echoes the request's assertion, in an error or as the
// access token, is treated like one echoing a secret: the assertion never
// reaches an error, a log or a caller.
func TestAssertionEchoesAreRefused(t *testing.T) {
	key := keys(t)["RS256"]
	full := func(_, a string) string { return a }
	sigOnly := func(_, a string) string { return a[strings.LastIndexByte(a, '.')+1:] }
	for _, tc := range []struct {
		name string
		resp faultidp.Response
	}{
		{"error_description echoing the request", faultidp.EchoJSON(401)},
		{"HTML page echoing the request", faultidp.EchoHTML(500)},
		{"description holding the assertion", faultidp.EchoEncoded(400, full)},
		{"description holding its signature", faultidp.EchoEncoded(400, sigOnly)},
		{"access_token is the assertion", faultidp.EchoAccessToken(full)},
		{"access_token is its signature", faultidp.EchoAccessToken(sigOnly)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := faultidp.Start()
			defer f.Close()
			f.Push(tc.resp)
			var logs bytes.Buffer
			c, err := upstream.New(upstream.Config{TokenURL: f.TokenURL(), ClientID: "acme", ClientKey: key,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			g, err := c.Fetch(t.Context(), nil)
			form, _ := f.LastRequest()
			a := form.Get("client_assertion")
			sig := a[strings.LastIndexByte(a, '.')+1:]
			if err == nil {
				t.Fatalf("fetch served %v, want an error", g)
			}
			for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err), logs.String()} {
				if strings.Contains(text, sig[:12]) || strings.Contains(text, sig[len(sig)-12:]) {
					t.Errorf("text shows the assertion: %s", text)
				}
			}
		})
	}
}

// The assertion is never in an error of a request that failed on its way
// (a refused connection, a redirect), nor in the Client's own text.
func TestAssertionNotInErrorsOrStrings(t *testing.T) {
	key := keys(t)["ES256"]
	f := faultidp.Start()
	f.Push(faultidp.Redirect(302, "https://elsewhere.example/token"), faultidp.OAuthError(401, "invalid_client", "bad assertion"))
	defer f.Close()
	c, err := upstream.New(upstream.Config{TokenURL: f.TokenURL(), ClientID: "acme", ClientKey: key})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_, err := c.Fetch(t.Context(), nil)
		form, _ := f.LastRequest()
		a := form.Get("client_assertion")
		if err == nil || a == "" || strings.Contains(err.Error(), a[len(a)-16:]) {
			t.Errorf("err %v: want an error without the assertion", err)
		}
	}
	cred := upstream.Credential{Name: "k.pem", ClientID: "acme", Key: key}
	j, _ := json.Marshal(cred)
	raw, _ := key.Signer().(*ecdsa.PrivateKey).Bytes()
	d := new(big.Int).SetBytes(raw)
	for _, text := range []string{cred.String(), fmt.Sprintf("%v %+v %#v %s %v", cred, cred, cred, key, []any{key}), string(j)} {
		if !strings.Contains(text, "[REDACTED]") || strings.Contains(text, d.String()) || strings.Contains(text, d.Text(16)) {
			t.Errorf("text shows the key: %s", text)
		}
	}
}

func TestJWKSHoldsOnlyPublicKeys(t *testing.T) {
	var cs []upstream.Credential
	for alg, k := range keys(t) {
		cs = append(cs, upstream.Credential{ClientID: "acme", Key: k, KeyID: map[string]string{"ES384": "explicit"}[alg]})
	}
	cs = append(cs, upstream.Credential{ClientID: "acme", ClientSecret: "a secret"}) // skipped
	out, err := upstream.JWKS(cs...)
	if err != nil {
		t.Fatal(err)
	}
	var set struct{ Keys []map[string]any }
	if err := json.Unmarshal(out, &set); err != nil || len(set.Keys) != 4 {
		t.Fatalf("JWKS %s: %v, want 4 keys", out, err)
	}
	for _, k := range set.Keys {
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k", "oth"} {
			if _, ok := k[private]; ok {
				t.Errorf("JWK %v holds the private member %q", k, private)
			}
		}
		if k["use"] != "sig" || k["kid"] == "" {
			t.Errorf("JWK %v: want use sig and a kid", k)
		}
		var jwk jose.JSONWebKey
		b, _ := json.Marshal(k)
		if err := jwk.UnmarshalJSON(b); err != nil || !jwk.IsPublic() || !jwk.Valid() {
			t.Errorf("JWK %s does not parse as a valid public key: %v", b, err)
		}
	}
	// The kid is the key's thumbprint unless set, as the assertions carry it.
	want, _ := upstream.KeyID(keys(t)["RS256"])
	if !strings.Contains(string(out), `"kid": "`+want+`"`) || !strings.Contains(string(out), `"kid": "explicit"`) {
		t.Errorf("JWKS %s lacks kid %q or \"explicit\"", out, want)
	}
}
