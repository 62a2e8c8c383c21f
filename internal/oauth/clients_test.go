package oauth_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/oauth"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"github.com/tokenbroker/tokenbroker/internal/test/pyclient"
)

// TestXOAuth2ClientCredentials: golang.org/x/oauth2/clientcredentials,
// pointed at either path with either auth style, gets the broker's
// cached token, reuses it while valid, and scopes select the scope set.
func TestXOAuth2ClientCredentials(t *testing.T) {
	f := start(t, options{})
	ctx := oauth2Context(t.Context())
	want := f.brokerToken("team-a")
	for _, tc := range []struct {
		name  string
		path  string
		style oauth2.AuthStyle
	}{
		{"basic", oauth.Path, oauth2.AuthStyleInHeader},
		{"post", oauth.Path, oauth2.AuthStyleInParams},
		{"kognic path", oauth.KognicPath, oauth2.AuthStyleInParams},
		{"autodetect", oauth.Path, oauth2.AuthStyleAutoDetect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := clientcredentials.Config{ClientID: "team-a", ClientSecret: ciKey, TokenURL: f.URL + tc.path, AuthStyle: tc.style}
			before := f.Results("ok")
			ts := cfg.TokenSource(ctx)
			tok, err := ts.Token()
			if err != nil {
				t.Fatal(err)
			}
			if tok.AccessToken != want.AccessToken || tok.TokenType != "Bearer" || time.Until(tok.Expiry) < 59*time.Minute || time.Until(tok.Expiry) > time.Hour {
				t.Errorf("token: the broker's %v, type %q, expiry in %s; want the broker's, Bearer, in an hour", tok.AccessToken == want.AccessToken, tok.TokenType, time.Until(tok.Expiry))
			}
			if _, err := ts.Token(); err != nil {
				t.Fatal(err)
			}
			if n := f.Results("ok") - before; n != 1 {
				t.Errorf("%d requests for two Token calls, want 1 (reused while valid)", n)
			}
		})
	}
	t.Run("scopes", func(t *testing.T) {
		cfg := clientcredentials.Config{ClientID: "team-b", ClientSecret: ciKey, TokenURL: f.URL + oauth.Path, Scopes: []string{"write:x", "read:y"}}
		tok, err := cfg.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if scope, _ := tok.Extra("scope").(string); scope != "read:y write:x" || tok.AccessToken != f.brokerToken("team-b", "read:y", "write:x").AccessToken {
			t.Errorf("scope %q (want %q) or not the broker's token of that scope set", scope, "read:y write:x")
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		cfg := clientcredentials.Config{ClientID: "team-a", ClientSecret: wrongKey, TokenURL: f.URL + oauth.Path, AuthStyle: oauth2.AuthStyleInHeader}
		_, err := cfg.Token(ctx)
		re, ok := err.(*oauth2.RetrieveError)
		if !ok || re.Response.StatusCode != 401 || re.ErrorCode != "invalid_client" {
			t.Errorf("a wrong key: %v, want a RetrieveError 401 invalid_client", err)
		}
	})
	wantIssueLines(t, f, "ci")
}

// wantIssueLines checks that every token handed out has its audit line,
// of caller, with the method named.
func wantIssueLines(t *testing.T, f *fixture, caller string) {
	t.Helper()
	var n int
	for _, r := range auditRecords(t, f) {
		if r.Event != audit.EventIssue || r.Result != audit.ResultOK {
			continue
		}
		n++
		if r.Caller != caller || r.Identity != "api_key" || (r.Method != "POST "+oauth.Path && r.Method != "POST "+oauth.KognicPath) || r.TokenFingerprint == "" {
			t.Errorf("issue line %+v", r)
		}
	}
	if n != f.Results("ok") {
		t.Errorf("%d issue lines for %d tokens handed out", n, f.Results("ok"))
	}
}

// TestXOAuth2Refresh: a client that asks again once its token nears
// expiry gets the broker's refreshed token (the IdP's tokens live 3 s:
// x/oauth2 asks on every Token, the broker refreshes ahead).
func TestXOAuth2Refresh(t *testing.T) {
	f := start(t, options{lifetime: 3 * time.Second})
	ctx := oauth2Context(t.Context())
	w, err := f.Broker.Watch("team-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ts := (&clientcredentials.Config{ClientID: "team-a", ClientSecret: ciKey, TokenURL: f.URL + oauth.Path}).TokenSource(ctx)
	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(first.Expiry); d > 3*time.Second || d < 0 {
		t.Errorf("expires_in of a 3 s token: expiry in %s", d)
	}
	deadline := time.After(10 * time.Second)
	for refreshed := false; !refreshed; {
		select {
		case <-w.Ready():
			u, ok, _ := w.Next()
			refreshed = ok && u.Token != nil && u.Token.AccessToken != first.AccessToken
		case <-deadline:
			t.Fatal("the broker did not refresh a 3 s token within 10 s")
		}
	}
	next, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if next.AccessToken == first.AccessToken || !next.Expiry.After(first.Expiry) {
		t.Errorf("after the broker's refresh x/oauth2 got the old token (expiry %s, was %s)", next.Expiry, first.Expiry)
	}
}

// TestCurl: curl with Basic (-u) and with the credentials in the form
// gets the token; curl is what a shell script uses. Skipped without curl.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (.ci/run installs it)")
	}
	f := start(t, options{})
	want := f.brokerToken("team-a")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"basic", []string{"-u", "team-a:" + ciKey, "-d", "grant_type=client_credentials", f.URL + oauth.Path}},
		{"form", []string{"-d", "grant_type=client_credentials", "-d", "client_id=team-a", "--data-urlencode", "client_secret=" + ciKey, f.URL + oauth.KognicPath}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			cmd := exec.CommandContext(t.Context(), curl, append([]string{"-sS", "--fail-with-body", "-i"}, tc.args...)...)
			cmd.Stdout, cmd.Stderr = &out, &errOut
			if err := cmd.Run(); err != nil {
				t.Fatalf("curl: %v: %s", err, errOut.String())
			}
			head, body, _ := strings.Cut(strings.ReplaceAll(out.String(), "\r\n", "\n"), "\n\n")
			var got struct {
				AccessToken string `json:"access_token"`
				TokenType   string `json:"token_type"`
				ExpiresIn   int    `json:"expires_in"`
			}
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("curl output: %v", err)
			}
			if got.AccessToken != want.AccessToken || got.TokenType != "Bearer" || got.ExpiresIn < 3500 || got.ExpiresIn > 3600 {
				t.Errorf("curl got the broker's token %v, type %q, expires_in %d", got.AccessToken == want.AccessToken, got.TokenType, got.ExpiresIn)
			}
			for _, h := range []string{"Cache-Control: no-store", "Pragma: no-cache", "Content-Type: application/json"} {
				if !strings.Contains(head, h) {
					t.Errorf("headers lack %q:\n%s", h, head)
				}
			}
		})
	}
	t.Run("wrong key", func(t *testing.T) {
		var out bytes.Buffer
		cmd := exec.CommandContext(t.Context(), curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", "team-a:"+wrongKey, "-d", "grant_type=client_credentials", f.URL+oauth.Path)
		cmd.Stdout = &out
		_ = cmd.Run()
		if out.String() != "401" {
			t.Errorf("curl with a wrong key: HTTP %s, want 401", out.String())
		}
	})
}

// TestPythonClients: Python's OAuth2 clients, which nobody here wrote,
// get the broker's tokens (see pyclient): kognic-auth's session on the
// Kognic path with the form, authlib with Basic, requests-oauthlib.
func TestPythonClients(t *testing.T) {
	f := start(t, options{})
	want := f.brokerToken("team-a")
	sum := sha256.Sum256([]byte(want.AccessToken))
	wantSum := hex.EncodeToString(sum[:])
	for _, c := range pyclient.Clients {
		t.Run(c.Name, func(t *testing.T) {
			got := pyclient.Run(t, c.Name, f.URL, "team-a", ciKey, wrongKey)
			if got.TokenSHA256 != wantSum || !strings.EqualFold(got.TokenType, "bearer") || got.ExpiresIn < 3500 {
				t.Errorf("%s got %+v; want the broker's token (sha256 %s…), Bearer, an hour", c.Name, got, wantSum[:12])
			}
			if got.WrongKey != "invalid_client" {
				t.Errorf("%s with a wrong key: %q, want invalid_client", c.Name, got.WrongKey)
			}
			logtest.AssertNone(t, map[string]string{"python output": got.Output}, map[string]string{"token": want.AccessToken, "ci key": ciKey, "wrong key": wrongKey})
		})
	}
}
