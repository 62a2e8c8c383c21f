package devidp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// jwks is the public JWKS of keys, each under its kid.
func jwks(t *testing.T, keys map[string]crypto.Signer) []byte {
	t.Helper()
	var set jose.JSONWebKeySet
	for kid, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Public(), KeyID: kid, Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sign returns a compact JWS of claims signed by key with alg and kid.
func sign(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// post sends a token request with form and returns the status, error and
// error_description.
func post(t *testing.T, s *Server, form url.Values) (int, string, string) {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).PostForm(s.TokenURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK && body.AccessToken == "" {
		t.Fatal("200 without an access token")
	}
	return resp.StatusCode, body.Error, body.Description
}

func assertionForm(id, assertion string) url.Values {
	return url.Values{"grant_type": {"client_credentials"}, "client_id": {id},
		"client_assertion_type": {clientAssertionType}, "client_assertion": {assertion}}
}

// Each way an assertion can be wrong is refused with invalid_client (or
// the code named) and a description saying why.
func TestAssertionRefusals(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const id = "jwt-client"
	s := start(t, Config{Clients: []Client{
		{ID: id, JWKS: jwks(t, map[string]crypto.Signer{"rsa-1": rsaKey, "ec-1": ecKey})},
		{ID: "secret-client", Secret: "s3cret"},
	}})
	now := time.Now()
	good := func() map[string]any {
		return map[string]any{"iss": id, "sub": id, "aud": s.TokenURL(), "jti": randomHex(16),
			"iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix()}
	}
	with := func(k string, v any) map[string]any {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	replayed := sign(t, jose.ES256, ecKey, "ec-1", good())
	for _, tc := range []struct {
		name       string
		form       url.Values
		status     int
		code, desc string
	}{
		{"RS256 accepted", assertionForm(id, sign(t, jose.RS256, rsaKey, "rsa-1", good())), 200, "", ""},
		{"ES256 accepted", assertionForm(id, replayed), 200, "", ""},
		{"issuer as audience accepted", assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", with("aud", s.URL()))), 200, "", ""},
		{"without client_id accepted", func() url.Values {
			f := assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", good()))
			f.Del("client_id")
			return f
		}(), 200, "", ""},
		{"jti replayed", assertionForm(id, replayed), 401, "invalid_client", "client assertion jti was used before"},
		{"signed by another key", assertionForm(id, sign(t, jose.ES256, otherKey, "ec-1", good())), 401, "invalid_client", "signature does not verify"},
		{"unknown kid", assertionForm(id, sign(t, jose.ES256, ecKey, "ec-9", good())), 401, "invalid_client", "signature does not verify"},
		{"HS256 with the public key", assertionForm(id, sign(t, jose.HS256, []byte("public key bytes, as an attacker would use them"), "ec-1", good())), 401, "invalid_client", "not a JWT signed with RS, PS or ES"},
		{"not a JWT", assertionForm(id, "not.a.jwt"), 401, "invalid_client", "not a JWT"},
		{"issuer another client", assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", with("iss", "secret-client"))), 401, "invalid_client", "client id does not match the assertion issuer"},
		{"issuer unknown, no client_id", func() url.Values {
			f := assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", with("iss", "nobody")))
			f.Del("client_id")
			return f
		}(), 401, "invalid_client", "no client with registered keys"},
		{"secret client with an assertion", assertionForm("secret-client", sign(t, jose.ES256, ecKey, "ec-1", with("iss", "secret-client"))), 401, "invalid_client", "no client with registered keys"},
		{"subject another client", assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", with("sub", "secret-client"))), 401, "invalid_client", "subject is not the client"},
		{"wrong audience", assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", with("aud", "https://elsewhere.example/token"))), 401, "invalid_client", "audience is neither"},
		{"no audience", assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", with("aud", nil))), 401, "invalid_client", "audience is neither"},
		{"expired", assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", with("exp", now.Add(-AssertionSkew-time.Second).Unix()))), 401, "invalid_client", "client assertion expired"},
		{"no expiry", assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", with("exp", nil))), 401, "invalid_client", "has no expiry"},
		{"lifetime over 5 minutes", assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", with("exp", now.Add(6*time.Minute).Unix()))), 401, "invalid_client", "lives longer than 5 minutes"},
		{"lifetime over 5 minutes without iat", func() url.Values {
			c := with("iat", nil)
			c["exp"] = now.Add(6 * time.Minute).Unix()
			return assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", c))
		}(), 401, "invalid_client", "lives longer than 5 minutes"},
		{"issued in the future", assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", with("iat", now.Add(AssertionSkew+5*time.Second).Unix()))), 401, "invalid_client", "issued in the future"},
		{"iat within the skew accepted", assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", with("iat", now.Add(AssertionSkew/2).Unix()))), 200, "", ""},
		{"not valid yet", assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", with("nbf", now.Add(time.Minute).Unix()))), 401, "invalid_client", "not valid yet"},
		{"no jti", assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", with("jti", nil))), 401, "invalid_client", "has no jti"},
		{"jti too long", assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", with("jti", strings.Repeat("j", maxJTI+1)))), 401, "invalid_client", "jti is too long"},
		{"wrong assertion type", func() url.Values {
			f := assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", good()))
			f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
			return f
		}(), 401, "invalid_client", "unsupported client assertion type"},
		{"type without assertion", func() url.Values { f := assertionForm(id, ""); return f }(), 401, "invalid_client", "missing client assertion"},
		{"assertion and secret", func() url.Values {
			f := assertionForm(id, sign(t, jose.ES256, ecKey, "ec-1", good()))
			f.Set("client_secret", "s3cret")
			return f
		}(), 400, "invalid_request", "more than one client authentication method"},
		{"jwt client with a secret", url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {"guess"}}, 401, "invalid_client", ""},
		{"jwt client without credentials", url.Values{"grant_type": {"client_credentials"}, "client_id": {id}}, 401, "invalid_client", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, code, desc := post(t, s, tc.form)
			if status != tc.status || code != tc.code || !strings.Contains(desc, tc.desc) {
				t.Errorf("got %d %s (%s), want %d %s (%s)", status, code, desc, tc.status, tc.code, tc.desc)
			}
		})
	}
}

// The jti memory is bounded: when it holds its maximum of live jtis,
// further assertions are refused (never an old jti forgotten early).
func TestAssertionReplayMemoryIsBounded(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s := start(t, Config{Clients: []Client{{ID: "c", JWKS: jwks(t, map[string]crypto.Signer{"k": key})}}})
	s.replay.max = 2
	now := time.Now()
	claims := func(jti string, exp time.Time) map[string]any {
		return map[string]any{"iss": "c", "sub": "c", "aud": s.TokenURL(), "jti": jti, "iat": now.Unix(), "exp": exp.Unix()}
	}
	// One whose memory ends at once (exp + skew in the past is expired,
	// so it is refused; one just valid is remembered until exp + skew).
	first := sign(t, jose.ES256, key, "k", claims("a", now.Add(time.Minute)))
	for i, tc := range []struct {
		assertion  string
		status     int
		code, desc string
	}{
		{first, 200, "", ""},
		{sign(t, jose.ES256, key, "k", claims("b", now.Add(time.Minute))), 200, "", ""},
		{sign(t, jose.ES256, key, "k", claims("c", now.Add(time.Minute))), 503, "temporarily_unavailable", "too many client assertions"},
		{first, 401, "invalid_client", "used before"},
	} {
		status, code, desc := post(t, s, assertionForm("c", tc.assertion))
		if status != tc.status || code != tc.code || !strings.Contains(desc, tc.desc) {
			t.Errorf("request %d: got %d %s (%s), want %d %s (%s)", i+1, status, code, desc, tc.status, tc.code, tc.desc)
		}
	}
	if got := len(s.replay.seen); got != 2 {
		t.Errorf("%d jtis remembered, want 2", got)
	}
	// Expired entries make room.
	if r := s.replay.use("c\x00d", now.Add(time.Hour), now.Add(2*time.Minute)); r != replayFresh {
		t.Errorf("after the others expired: %v, want fresh", r)
	}
}

func TestRegisterJWKSErrors(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	priv, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key, KeyID: "k"}}})
	noKid, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public()}}})
	for _, tc := range []struct {
		name string
		c    Client
		want string
	}{
		{"private key", Client{ID: "a", JWKS: priv}, "register the public keys only"},
		{"no kid", Client{ID: "a", JWKS: noKid}, "has no kid"},
		{"empty set", Client{ID: "a", JWKS: []byte(`{"keys":[]}`)}, "has no keys"},
		{"not JSON", Client{ID: "a", JWKS: []byte(`nope`)}, "JWKS"},
		{"secret and JWKS", Client{ID: "a", Secret: "s", JWKS: jwks(t, map[string]crypto.Signer{"k": key})}, "not both"},
		{"neither", Client{ID: "a"}, "a secret or a JWKS is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, Config{})
			if err := s.AddClient(tc.c); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
