package upstream_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// Issue 10 §7: during a rotation a client holds the new and the old
// secret; the IdP (a real OAuth2 server) knows one, both or neither.
func TestRotationFallsBackOnInvalidClient(t *testing.T) {
	const newSecret, oldSecret = "rotation-new-secret-1", "rotation-old-secret-0"
	for _, tc := range []struct {
		name      string
		idpSecret string // "" registers no client
		wantErr   string
		wantReqs  []int64 // IdP requests after the first and second Fetch
		wantLog   string
	}{
		{"new works", newSecret, "", []int64{1, 2}, ""},
		{"only old works", oldSecret, "", []int64{2, 3}, "old.secret"},
		{"none works", "", "invalid_client (Client authentication failed) (all 2 configured credentials were rejected)", []int64{2, 4}, "trying the next"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := devidp.Client{ID: "rotating", Secret: tc.idpSecret}
			var clients []devidp.Client
			if tc.idpSecret != "" {
				clients = append(clients, client)
			}
			idp, err := devidp.Start(t.Context(), devidp.Config{Clients: clients})
			if err != nil {
				t.Fatal(err)
			}
			defer idp.Close()
			var logs bytes.Buffer
			c, err := upstream.New(upstream.Config{
				TokenURL: idp.TokenURL(), ClientID: "rotating", ClientSecret: newSecret,
				Fallbacks: []upstream.Credential{{Name: "client_secret_files /etc/tb/old.secret", ClientID: "rotating", ClientSecret: oldSecret}},
				Logger:    slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range tc.wantReqs {
				g, err := c.Fetch(t.Context(), nil)
				if tc.wantErr == "" && (err != nil || g.AccessToken == "") {
					t.Fatalf("fetch %d: %v", i+1, err)
				}
				if tc.wantErr != "" {
					ue, ok := errors.AsType[*upstream.Error](err)
					if !ok || !ue.Permanent || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("fetch %d: err %v, want a permanent error containing %q", i+1, err, tc.wantErr)
					}
				}
				// The working credential is remembered: one request per
				// fetch once it is known.
				if got := idp.Requests(); got != want {
					t.Errorf("after fetch %d: %d IdP requests, want %d", i+1, got, want)
				}
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("logs %q do not name %q", logs.String(), tc.wantLog)
			}
			for _, s := range []string{newSecret, oldSecret} {
				if strings.Contains(logs.String(), s) {
					t.Error("logs contain a secret")
				}
			}
		})
	}
}

// Only invalid_client moves to the next credential: an outage or another
// rejection is not a reason to try an old secret.
func TestRotationKeepsCredentialOnOtherErrors(t *testing.T) {
	for _, resp := range []faultidp.Response{
		faultidp.OAuthError(400, "invalid_scope", ""),
		faultidp.OAuthError(400, "invalid_request", ""),
		faultidp.OAuthError(503, "temporarily_unavailable", ""),
		faultidp.Garbage(),
	} {
		idp := faultidp.Start()
		idp.Push(resp)
		c, err := upstream.New(upstream.Config{
			TokenURL: idp.TokenURL(), ClientID: "a", ClientSecret: "new",
			Fallbacks: []upstream.Credential{{ClientID: "a", ClientSecret: creds.Secret("old")}},
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Fetch(t.Context(), nil)
		form, _ := idp.LastRequest()
		if err == nil || idp.Requests() != 1 || form.Get("client_secret") != "new" {
			t.Errorf("status %d: err %v, %d requests, secret sent %q; want one failed request with the new secret", resp.Status, err, idp.Requests(), form.Get("client_secret"))
		}
		idp.Close()
	}
}

// private_key_jwt rotation: client_assertion_key_files [new, old] against
// an IdP (the dev IdP, verifying assertions) that knows one, both or
// neither of the public keys; the old key is tried only on invalid_client.
func TestKeyRotationFallsBackOnInvalidClient(t *testing.T) {
	newKey, oldKey := keys(t)["ES256"], keys(t)["RS256"]
	newJWKS, _ := upstream.JWKS(upstream.Credential{Key: newKey})
	oldJWKS, _ := upstream.JWKS(upstream.Credential{Key: oldKey})
	bothJWKS, _ := upstream.JWKS(upstream.Credential{Key: newKey}, upstream.Credential{Key: oldKey})
	for _, tc := range []struct {
		name     string
		jwks     []byte // nil registers no client
		wantErr  string
		wantReqs []int64
		wantLog  string
	}{
		{"new registered", newJWKS, "", []int64{1, 2}, ""},
		{"both registered", bothJWKS, "", []int64{1, 2}, ""},
		{"only old registered", oldJWKS, "", []int64{2, 3}, "old.pem"},
		{"none registered", nil, "invalid_client (no client with registered keys is named by the assertion issuer) (all 2 configured credentials were rejected)", []int64{2, 4}, "trying the next"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var clients []devidp.Client
			if tc.jwks != nil {
				clients = append(clients, devidp.Client{ID: "rotating", JWKS: tc.jwks})
			}
			idp, err := devidp.Start(t.Context(), devidp.Config{Clients: clients})
			if err != nil {
				t.Fatal(err)
			}
			defer idp.Close()
			var logs bytes.Buffer
			c, err := upstream.New(upstream.Config{
				TokenURL: idp.TokenURL(), ClientID: "rotating", ClientKey: newKey,
				Fallbacks: []upstream.Credential{{Name: "client_assertion_key_files /etc/tb/old.pem", ClientID: "rotating", Key: oldKey}},
				Logger:    slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range tc.wantReqs {
				_, err := c.Fetch(t.Context(), nil)
				if tc.wantErr == "" && err != nil {
					t.Fatalf("fetch %d: %v", i+1, err)
				}
				if ue, ok := errors.AsType[*upstream.Error](err); tc.wantErr != "" && (!ok || !ue.Permanent || !strings.Contains(err.Error(), tc.wantErr)) {
					t.Fatalf("fetch %d: err %v, want a permanent error containing %q", i+1, err, tc.wantErr)
				}
				if got := idp.Requests(); got != want {
					t.Errorf("after fetch %d: %d IdP requests, want %d", i+1, got, want)
				}
			}
			if !strings.Contains(logs.String(), tc.wantLog) || strings.Contains(logs.String(), "eyJ") {
				t.Errorf("logs %q: want %q and no assertion", logs.String(), tc.wantLog)
			}
		})
	}
}

// Ory Hydra answers an assertion whose kid it does not know with
// invalid_request (400), not invalid_client: for keys, that moves to the
// next one too (a secret's invalid_request does not, see
// TestRotationKeepsCredentialOnOtherErrors).
func TestKeyRotationFallsBackOnHydrasUnknownKid(t *testing.T) {
	newKey, oldKey := keys(t)["ES256"], keys(t)["ES384"]
	idp := faultidp.Start()
	defer idp.Close()
	idp.Push(faultidp.OAuthError(400, "invalid_request", "The JSON Web Token uses signing key with kid 'x', which could not be found."))
	idp.SetDefault(faultidp.OK("at-old", 3600))
	c, err := upstream.New(upstream.Config{
		TokenURL: idp.TokenURL(), ClientID: "a", ClientKey: newKey,
		Fallbacks: []upstream.Credential{{ClientID: "a", Key: oldKey}},
	})
	if err != nil {
		t.Fatal(err)
	}
	g, err := c.Fetch(t.Context(), nil)
	form, _ := idp.LastRequest()
	oldKid, _ := upstream.KeyID(oldKey)
	if h, _ := assertionOf(t, form.Get("client_assertion"), oldKey.Public()); err != nil || g.AccessToken != "at-old" || idp.Requests() != 2 || h.KeyID != oldKid {
		t.Errorf("err %v, token %v, %d requests, last kid %q; want the old key's token after 2 requests", err, g, idp.Requests(), h.KeyID)
	}
}

// Only a rejection of the key moves to the old one.
func TestKeyRotationKeepsKeyOnOtherErrors(t *testing.T) {
	newKey, oldKey := keys(t)["ES256"], keys(t)["ES384"]
	for _, resp := range []faultidp.Response{
		faultidp.OAuthError(400, "invalid_scope", ""),
		faultidp.OAuthError(401, "unauthorized_client", ""),
		faultidp.OAuthError(503, "temporarily_unavailable", ""),
		faultidp.Garbage(),
	} {
		idp := faultidp.Start()
		idp.Push(resp)
		c, err := upstream.New(upstream.Config{
			TokenURL: idp.TokenURL(), ClientID: "a", ClientKey: newKey,
			Fallbacks: []upstream.Credential{{ClientID: "a", Key: oldKey}},
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Fetch(t.Context(), nil)
		form, _ := idp.LastRequest()
		wantKid, _ := upstream.KeyID(newKey)
		h, _ := assertionOf(t, form.Get("client_assertion"), newKey.Public())
		if err == nil || idp.Requests() != 1 || h.KeyID != wantKid {
			t.Errorf("status %d: err %v, %d requests, kid %q; want one failed request with the new key", resp.Status, err, idp.Requests(), h.KeyID)
		}
		idp.Close()
	}
}
