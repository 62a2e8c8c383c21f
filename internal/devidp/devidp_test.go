package devidp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"go.uber.org/goleak"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start starts a server closed at the end of the test.
func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// fetch requests a token with golang.org/x/oauth2/clientcredentials over a
// transport that is torn down with the test.
func fetch(t *testing.T, s *Server, c Client, style oauth2.AuthStyle, scopes ...string) (*oauth2.Token, error) {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, &http.Client{Transport: tr})
	cc := clientcredentials.Config{
		ClientID: c.ID, ClientSecret: c.Secret, TokenURL: s.TokenURL(),
		Scopes: scopes, AuthStyle: style,
	}
	return cc.Token(ctx)
}

func wantErrorCode(t *testing.T, err error, code string, status int) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("error = %v, want *oauth2.RetrieveError", err)
	}
	if re.ErrorCode != code || re.Response.StatusCode != status {
		t.Fatalf("error code %q status %d, want %q %d", re.ErrorCode, re.Response.StatusCode, code, status)
	}
}

func TestClientAuthentication(t *testing.T) {
	c := NewClient()
	s := start(t, Config{Clients: []Client{c}})
	for _, tc := range []struct {
		name     string
		client   Client
		style    oauth2.AuthStyle
		wantCode string
	}{
		{"body", c, oauth2.AuthStyleInParams, ""},
		{"basic", c, oauth2.AuthStyleInHeader, ""},
		{"body wrong secret", Client{ID: c.ID, Secret: c.Secret + "x"}, oauth2.AuthStyleInParams, "invalid_client"},
		{"basic wrong secret", Client{ID: c.ID, Secret: "nope"}, oauth2.AuthStyleInHeader, "invalid_client"},
		{"empty secret", Client{ID: c.ID}, oauth2.AuthStyleInParams, "invalid_client"},
		{"unknown client", NewClient(), oauth2.AuthStyleInParams, "invalid_client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := fetch(t, s, tc.client, tc.style)
			if tc.wantCode != "" {
				wantErrorCode(t, err, tc.wantCode, http.StatusUnauthorized)
				return
			}
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			if tok.AccessToken == "" || tok.Type() != "Bearer" || tok.RefreshToken != "" {
				t.Fatalf("token = %q type %q refresh %q; want a Bearer access token and no refresh token",
					tok.AccessToken, tok.Type(), tok.RefreshToken)
			}
		})
	}
}

func TestBasicAuthSpecialCharacters(t *testing.T) {
	c := Client{ID: "tenant:a b", Secret: "s%e:c+r/e t"}
	s := start(t, Config{Clients: []Client{c}})
	if _, err := fetch(t, s, c, oauth2.AuthStyleInHeader); err != nil {
		t.Fatalf("basic: %v", err)
	}
	if _, err := fetch(t, s, c, oauth2.AuthStyleInParams); err != nil {
		t.Fatalf("body: %v", err)
	}
}

func TestUnsupportedGrantType(t *testing.T) {
	c := NewClient()
	s := start(t, Config{Clients: []Client{c}})
	for _, grant := range []string{"password", "authorization_code", "refresh_token", "urn:x", ""} {
		t.Run(grant, func(t *testing.T) {
			form := url.Values{"grant_type": {grant}, "client_id": {c.ID}, "client_secret": {c.Secret},
				"username": {"u"}, "password": {"p"}, "code": {"c"}, "redirect_uri": {"http://x"}, "refresh_token": {"r"}}
			resp, err := http.PostForm(s.TokenURL(), form)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body.String(), `"error":"unsupported_grant_type"`) {
				t.Fatalf("got %d %s, want 400 unsupported_grant_type", resp.StatusCode, body.String())
			}
		})
	}
	http.DefaultClient.CloseIdleConnections()
	if got := s.IssuedFor(c.ID); got != 0 {
		t.Fatalf("IssuedFor = %d, want 0", got)
	}
}

func TestExpiresIn(t *testing.T) {
	c := NewClient()
	s := start(t, Config{Clients: []Client{c}, TokenLifetime: 90 * time.Second})
	for _, step := range []struct{ set, want time.Duration }{
		{0, 90 * time.Second}, // from Config
		{5 * time.Minute, 5 * time.Minute},
		{-1, time.Hour}, // non-positive restores the default
	} {
		if step.set != 0 {
			s.SetTokenLifetime(step.set)
		}
		want := step.want
		tok, err := fetch(t, s, c, oauth2.AuthStyleInParams)
		if err != nil {
			t.Fatal(err)
		}
		// x/oauth2 turns expires_in into Expiry; read the wire value.
		if got, _ := tok.Extra("expires_in").(float64); got != want.Seconds() {
			t.Fatalf("expires_in = %v, want %v", tok.Extra("expires_in"), want.Seconds())
		}
		cl := parse(t, s, tok.AccessToken)
		if got := cl.ExpiresAt.Sub(cl.IssuedAt.Time); got != want {
			t.Fatalf("exp-iat = %v, want %v", got, want)
		}
	}
}

func TestScopes(t *testing.T) {
	restricted := Client{ID: "restricted", Secret: "s1", Scopes: []string{"read", "write"}}
	open := Client{ID: "open", Secret: "s2"}
	s := start(t, Config{Clients: []Client{restricted, open}})
	for _, tc := range []struct {
		name      string
		client    Client
		scopes    []string
		wantScope string
		wantCode  string
	}{
		{"restricted subset", restricted, []string{"read"}, "read", ""},
		{"restricted all", restricted, []string{"write", "read"}, "write read", ""},
		{"restricted none", restricted, nil, "", ""},
		{"restricted outside", restricted, []string{"read", "admin"}, "", "invalid_scope"},
		{"open any", open, []string{"anything", "goes"}, "anything goes", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := fetch(t, s, tc.client, oauth2.AuthStyleInParams, tc.scopes...)
			if tc.wantCode != "" {
				wantErrorCode(t, err, tc.wantCode, http.StatusBadRequest)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := tok.Extra("scope").(string); got != tc.wantScope {
				t.Fatalf("response scope = %q, want %q", got, tc.wantScope)
			}
			if got := parse(t, s, tok.AccessToken).Scope; got != tc.wantScope {
				t.Fatalf("claim scope = %q, want %q", got, tc.wantScope)
			}
		})
	}
	t.Run("wrong secret with bad scope is invalid_client", func(t *testing.T) {
		_, err := fetch(t, s, Client{ID: restricted.ID, Secret: "bad"}, oauth2.AuthStyleInParams, "admin")
		wantErrorCode(t, err, "invalid_client", http.StatusUnauthorized)
	})
}

func TestConcurrentRequestCounting(t *testing.T) {
	a, b := NewClient(), NewClient()
	s := start(t, Config{Clients: []Client{a, b}})
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c := a
			if i%5 == 0 {
				c = Client{ID: b.ID, Secret: "wrong"}
			}
			_, _ = fetch(t, s, c, oauth2.AuthStyleInHeader)
		})
	}
	wg.Wait()
	for _, tc := range []struct {
		name      string
		got, want int64
	}{
		{"Requests", s.Requests(), n},
		{"Issued", s.Issued(), n - n/5},
		{"RequestsFor(a)", s.RequestsFor(a.ID), n - n/5},
		{"IssuedFor(a)", s.IssuedFor(a.ID), n - n/5},
		{"RequestsFor(b)", s.RequestsFor(b.ID), n / 5},
		{"IssuedFor(b)", s.IssuedFor(b.ID), 0},
		{"RequestsFor(unknown)", s.RequestsFor("unknown"), 0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

func TestAddRemoveClient(t *testing.T) {
	s := start(t, Config{})
	c := NewClient()
	if _, err := fetch(t, s, c, oauth2.AuthStyleInParams); err == nil {
		t.Fatal("unregistered client got a token")
	}
	if err := s.AddClient(c); err != nil {
		t.Fatal(err)
	}
	if _, err := fetch(t, s, c, oauth2.AuthStyleInParams); err != nil {
		t.Fatalf("after AddClient: %v", err)
	}
	s.RemoveClient(c.ID)
	_, err := fetch(t, s, c, oauth2.AuthStyleInParams)
	wantErrorCode(t, err, "invalid_client", http.StatusUnauthorized)
	if got, want := s.RequestsFor(c.ID), int64(3); got != want {
		t.Fatalf("RequestsFor = %d, want %d", got, want)
	}
	if got, want := s.IssuedFor(c.ID), int64(1); got != want {
		t.Fatalf("IssuedFor = %d, want %d", got, want)
	}
	if err := s.AddClient(Client{ID: "x"}); err == nil {
		t.Fatal("AddClient accepted an empty secret")
	}
}

func parse(t *testing.T, s *Server, token string) *claims {
	t.Helper()
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return s.key, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
		jwt.WithIssuer(s.URL()))
	if err != nil {
		t.Fatalf("parse access token: %v", err)
	}
	return &c
}

func TestJWTClaims(t *testing.T) {
	c := NewClient()
	s := start(t, Config{Clients: []Client{c}})
	tok1, err := fetch(t, s, c, oauth2.AuthStyleInParams, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	tok2, err := fetch(t, s, c, oauth2.AuthStyleInParams)
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := parse(t, s, tok1.AccessToken), parse(t, s, tok2.AccessToken)
	if c1.Subject != c.ID || c1.Issuer != s.URL() || c1.Scope != "a b" {
		t.Fatalf("claims sub=%q iss=%q scope=%q, want %q %q %q", c1.Subject, c1.Issuer, c1.Scope, c.ID, s.URL(), "a b")
	}
	if c1.ID == "" || c1.ID == c2.ID {
		t.Fatalf("jti %q and %q, want unique non-empty", c1.ID, c2.ID)
	}
	if time.Since(c1.IssuedAt.Time) > time.Minute || time.Until(c1.ExpiresAt.Time) < 59*time.Minute {
		t.Fatalf("iat %v exp %v, want now and in an hour", c1.IssuedAt, c1.ExpiresAt)
	}
	// Another server's key must not verify this server's tokens.
	other := start(t, Config{})
	if _, err := jwt.ParseWithClaims(tok1.AccessToken, new(claims), func(*jwt.Token) (any, error) {
		return other.key, nil
	}); !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		t.Fatalf("verify with another server's key: %v, want ErrTokenSignatureInvalid", err)
	}
}

func TestNoSecretsInLogs(t *testing.T) {
	var buf logtest.Buffer
	c := NewClient()
	s := start(t, Config{Clients: []Client{c}, Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	tok, err := fetch(t, s, c, oauth2.AuthStyleInParams, "read")
	if err != nil {
		t.Fatal(err)
	}
	tok2, err := fetch(t, s, c, oauth2.AuthStyleInHeader)
	if err != nil {
		t.Fatal(err)
	}
	wrong := "wrong-" + c.Secret[6:] // hex secrets never start with "wrong-"
	if _, err := fetch(t, s, Client{ID: c.ID, Secret: wrong}, oauth2.AuthStyleInHeader); err == nil {
		t.Fatal("wrong secret accepted")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logs := buf.String()
	if strings.Count(logs, c.ID) < 3 {
		t.Fatalf("logs do not record the 3 requests of %s:\n%s", c.ID, logs)
	}
	for name, secret := range map[string]string{"secret": c.Secret, "wrong secret": wrong,
		"token": tok.AccessToken, "token2": tok2.AccessToken} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain the %s:\n%s", name, logs)
		}
	}
	if got := c.String() + slog.AnyValue(c).String(); strings.Contains(got, c.Secret) {
		t.Errorf("Client String/LogValue reveal the secret: %s", got)
	}
}

func TestStartRejectsNonLoopback(t *testing.T) {
	for _, addr := range []string{":0", "0.0.0.0:0"} {
		if s, err := Start(t.Context(), Config{Addr: addr}); err == nil {
			_ = s.Close()
			t.Errorf("Start(%q) succeeded, want a loopback error", addr)
		}
	}
	if _, err := Start(t.Context(), Config{Clients: []Client{{ID: "x"}}}); err == nil {
		t.Error("Start accepted a client without a secret")
	}
}

func TestCloseIdempotent(t *testing.T) {
	s, err := Start(t.Context(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := http.Post(s.TokenURL(), "", nil); err == nil {
		t.Fatal("server still answering after Close")
	}
}

// TestWhoami: the resource endpoint answers a valid token's client and
// scope, and 401 to no token, another IdP's token or an expired one.
func TestWhoami(t *testing.T) {
	c := NewClient()
	s := start(t, Config{Clients: []Client{c}})
	other := start(t, Config{Clients: []Client{c}})
	get := func(tok string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL()+WhoamiPath, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	tok, err := fetch(t, s, c, oauth2.AuthStyleInParams, "read")
	if err != nil {
		t.Fatal(err)
	}
	if code, m := get(tok.AccessToken); code != 200 || m["client_id"] != c.ID || m["scope"] != "read" {
		t.Errorf("valid token: %d %v", code, m)
	}
	foreign, err := fetch(t, other, c, oauth2.AuthStyleInParams)
	if err != nil {
		t.Fatal(err)
	}
	s.SetTokenLifetime(time.Nanosecond)
	expired, err := fetch(t, s, c, oauth2.AuthStyleInParams)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"none": "", "another IdP's": foreign.AccessToken, "expired": expired.AccessToken, "garbage": "x.y.z"} {
		if code, _ := get(tok); code != http.StatusUnauthorized {
			t.Errorf("%s token: %d, want 401", name, code)
		}
	}
}
