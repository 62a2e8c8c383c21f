package upstream_test

import (
	"cmp"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "upstream-test-secret-42"

func client(t *testing.T, f *faultidp.Server, style oauth2.AuthStyle) *upstream.Client {
	t.Helper()
	c, err := upstream.New(upstream.Config{
		TokenURL: f.TokenURL(), ClientID: "cid", ClientSecret: secret, AuthStyle: style,
		UserAgent: "tokenbroker-test/1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFetchSendsTheConfiguredRequest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		style oauth2.AuthStyle
		basic bool
	}{
		{"body (client_secret_post) is the default", 0, false},
		{"basic (client_secret_basic)", oauth2.AuthStyleInHeader, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := faultidp.Start()
			defer f.Close()
			f.Push(faultidp.OK("at-1", 3600))
			g, err := client(t, f, tc.style).Fetch(t.Context(), []string{"read", "write"})
			if err != nil {
				t.Fatal(err)
			}
			if g.AccessToken != "at-1" || g.TokenType != "Bearer" || g.ExpiresIn != time.Hour {
				t.Errorf("grant = %v, want at-1, Bearer, 1h", g)
			}
			form, header := f.LastRequest()
			if form.Get("grant_type") != "client_credentials" || form.Get("scope") != "read write" {
				t.Errorf("form = %v", form)
			}
			_, _, hasBasic := (&http.Request{Header: header}).BasicAuth()
			if hasBasic != tc.basic || (form.Get("client_secret") == secret) == tc.basic {
				t.Errorf("basic auth %v, secret in body %v; want basic=%v", hasBasic, form.Get("client_secret") == secret, tc.basic)
			}
			if ua := header.Get("User-Agent"); ua != "tokenbroker-test/1" {
				t.Errorf("User-Agent = %q", ua)
			}
			if strings.Contains(g.String(), "at-1") {
				t.Error("Grant.String() shows the access token")
			}
		})
	}
}

func TestFetchErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		resp       faultidp.Response
		permanent  bool
		status     int
		retryAfter time.Duration
		msg        string
	}{
		{"invalid_client is permanent", faultidp.OAuthError(401, "invalid_client", "Client authentication failed"), true, 401, 0,
			"failed: HTTP 401: invalid_client (Client authentication failed)"},
		{"unauthorized_client is permanent", faultidp.OAuthError(400, "unauthorized_client", ""), true, 400, 0,
			"failed: HTTP 400: unauthorized_client"},
		{"server error is transient", faultidp.OAuthError(503, "temporarily_unavailable", ""), false, 503, 0,
			"failed: HTTP 503: temporarily_unavailable"},
		{"429 with Retry-After", faultidp.TooManyRequests("30"), false, 429, 30 * time.Second,
			"failed: HTTP 429: Too Many Requests, not an OAuth2 error response (content type \"text/plain\", 13 bytes; body not shown); retry after 30s"},
		{"garbage body is summarised", faultidp.Garbage(), false, 200, 0,
			"failed: HTTP 200: OK, not a valid OAuth2 token response (content type \"text/html\", 24 bytes; body not shown)"},
		{"HTML error page is summarised", faultidp.Response{Status: 502, Body: "<html>bad gateway</html>", Header: http.Header{"Content-Type": {"text/html"}}}, false, 502, 0,
			"failed: HTTP 502: Bad Gateway, not an OAuth2 error response (content type \"text/html\", 24 bytes; body not shown)"},
		{"unregistered error code is dropped with its description", faultidp.OAuthError(400, "my_custom_error", "free text from the IdP"), false, 400, 0,
			"failed: HTTP 400: Bad Request, an unregistered OAuth2 error code (content type \"application/json\""},
		{"missing access_token", faultidp.Response{Status: 200, Body: `{"token_type":"Bearer"}`, Header: http.Header{"Content-Type": {"application/json"}}}, false, 200, 0,
			"a token response without access_token"},
		{"description echoing the secret", faultidp.OAuthError(401, "invalid_client", "bad secret "+secret), true, 401, 0,
			"invalid_client (description withheld)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := faultidp.Start()
			defer f.Close()
			f.Push(tc.resp)
			_, err := client(t, f, 0).Fetch(t.Context(), nil)
			var ue *upstream.Error
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want *upstream.Error", err)
			}
			if ue.Permanent != tc.permanent || ue.StatusCode != tc.status || ue.RetryAfter != tc.retryAfter {
				t.Errorf("permanent %v status %d retry-after %s; want %v %d %s", ue.Permanent, ue.StatusCode, ue.RetryAfter, tc.permanent, tc.status, tc.retryAfter)
			}
			if !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(err.Error(), "upstream: token request to "+f.TokenURL()) {
				t.Errorf("message %q does not contain %q", err, tc.msg)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "<html") || strings.Contains(err.Error(), "free text") {
				t.Errorf("message leaks the secret or the body: %q", err)
			}
		})
	}
}

// TestTransient: which failures may pass by waiting, and which recur until
// the configuration changes (a command-line tool fails fast on those).
func TestTransient(t *testing.T) {
	closed := func() string { // a loopback port nothing listens on
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return "http://" + l.Addr().String() + "/token"
	}()
	f := faultidp.Start()
	defer f.Close()
	for _, tc := range []struct {
		name        string
		url         string // default: f's token URL
		resp        faultidp.Response
		timeout     time.Duration
		transient   bool
		unreachable bool
	}{
		{name: "connection refused", url: closed, unreachable: true},
		{name: "https to a plain HTTP server", url: strings.Replace(f.TokenURL(), "http:", "https:", 1), unreachable: true},
		{name: "no answer in time", resp: faultidp.Response{Hang: true}, timeout: 100 * time.Millisecond, transient: true},
		{name: "503", resp: faultidp.OAuthError(503, "temporarily_unavailable", ""), transient: true},
		{name: "500 HTML", resp: faultidp.Response{Status: 500, Body: "<html>oops</html>"}, transient: true},
		{name: "429", resp: faultidp.TooManyRequests("1"), transient: true},
		{name: "408", resp: faultidp.Response{Status: 408}, transient: true},
		{name: "404 HTML: not a token endpoint", resp: faultidp.Response{Status: 404, Body: "<html>no</html>"}},
		{name: "501: not a token endpoint", resp: faultidp.Response{Status: 501, Body: "Unsupported method ('POST')"}},
		{name: "redirect", resp: faultidp.Redirect(302, "https://elsewhere.example/token")},
		{name: "invalid_request", resp: faultidp.OAuthError(400, "invalid_request", "")},
		{name: "200 that is no token response", resp: faultidp.Garbage()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := cmp.Or(tc.url, f.TokenURL())
			c, err := upstream.New(upstream.Config{TokenURL: url, ClientID: "cid", ClientSecret: secret})
			if err != nil {
				t.Fatal(err)
			}
			if tc.url == "" {
				f.Push(tc.resp)
			}
			ctx := t.Context()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			_, err = c.Fetch(ctx, nil)
			ue, ok := errors.AsType[*upstream.Error](err)
			if !ok {
				t.Fatalf("err = %v, want *upstream.Error", err)
			}
			te, _ := errors.AsType[*upstream.TransportError](err)
			if ue.Transient() != tc.transient || (te != nil && te.Unreachable()) != tc.unreachable {
				t.Errorf("%v: Transient %v, Unreachable %v; want %v, %v", err, ue.Transient(), te != nil && te.Unreachable(), tc.transient, tc.unreachable)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg upstream.Config
		msg string
	}{
		{upstream.Config{TokenURL: "idp/token", ClientID: "a", ClientSecret: "b"}, `upstream: token URL "idp/token": must be an absolute http(s) URL`},
		{upstream.Config{TokenURL: "https://idp/token", ClientSecret: "b"}, "upstream: client ID is empty"},
		{upstream.Config{TokenURL: "https://idp/token", ClientID: "a"}, "upstream: client secret is empty"},
	} {
		if _, err := upstream.New(tc.cfg); err == nil || err.Error() != tc.msg {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.msg)
		}
	}
}
