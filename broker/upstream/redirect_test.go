package upstream_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// A token endpoint that redirects must not get the secret re-sent
// elsewhere: the second host receives nothing, whatever the status, auth
// style, or redirect policy of the HTTP client the caller passed.
func TestFetchNeverFollowsRedirects(t *testing.T) {
	for _, status := range []int{301, 302, 303, 307, 308} {
		for _, style := range []struct {
			name  string
			style oauth2.AuthStyle
		}{{"client_secret_post", oauth2.AuthStyleInParams}, {"client_secret_basic", oauth2.AuthStyleInHeader}} {
			t.Run(fmt.Sprintf("%d %s", status, style.name), func(t *testing.T) {
				idp, other := faultidp.Start(), faultidp.Start()
				defer idp.Close()
				defer other.Close()
				other.SetDefault(faultidp.OK("token-from-the-other-host", 3600))
				idp.Push(faultidp.Redirect(status, other.TokenURL()+"?leak=query-part"))
				// A client whose own policy follows redirects (the default).
				c, err := upstream.New(upstream.Config{
					TokenURL: idp.TokenURL(), ClientID: "cid", ClientSecret: secret,
					AuthStyle: style.style, HTTPClient: &http.Client{},
				})
				if err != nil {
					t.Fatal(err)
				}
				g, err := c.Fetch(t.Context(), []string{"read"})
				if other.Requests() != 0 {
					t.Fatalf("the redirect target received %d requests, want 0", other.Requests())
				}
				if g.AccessToken != "" {
					t.Fatalf("Fetch returned a token from the redirect target")
				}
				ue, ok := errors.AsType[*upstream.Error](err)
				if !ok {
					t.Fatalf("err = %v, want *upstream.Error", err)
				}
				host := strings.TrimPrefix(other.URL(), "http://")
				if ue.StatusCode != status || ue.RedirectHost != host || ue.Permanent {
					t.Errorf("status %d, redirect host %q, permanent %v; want %d, %q, transient", ue.StatusCode, ue.RedirectHost, ue.Permanent, status, host)
				}
				msg := err.Error()
				want := fmt.Sprintf("HTTP %d: redirect to host %q refused", status, host)
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not contain %q", msg, want)
				}
				if strings.Contains(msg, "leak=") || strings.Contains(msg, "query-part") || strings.Contains(msg, secret) {
					t.Errorf("message %q shows the Location's query or the secret", msg)
				}
				if idp.Requests() != 1 {
					t.Errorf("token endpoint got %d requests, want 1", idp.Requests())
				}
			})
		}
	}
}

func TestRedirectWithoutUsableLocation(t *testing.T) {
	for _, loc := range []string{"", "/relative/path?x=1", "http://user:pw@[bad"} {
		idp := faultidp.Start()
		idp.Push(faultidp.Redirect(307, loc))
		c, err := upstream.New(upstream.Config{TokenURL: idp.TokenURL(), ClientID: "cid", ClientSecret: secret})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Fetch(t.Context(), nil)
		idp.Close()
		ue, ok := errors.AsType[*upstream.Error](err)
		if !ok || ue.StatusCode != 307 || strings.Contains(err.Error(), "relative") || strings.Contains(err.Error(), "pw") {
			t.Errorf("Location %q: err = %v", loc, err)
		}
		u, _ := url.Parse(idp.URL())
		if loc == "/relative/path?x=1" && ue.RedirectHost != u.Host {
			t.Errorf("relative Location: host %q, want the token endpoint's %q", ue.RedirectHost, u.Host)
		}
	}
}
