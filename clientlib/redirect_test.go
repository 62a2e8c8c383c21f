package clientlib_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tokenbroker/tokenbroker/clientlib"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// hostSeen is a loopback listener that records the Authorization header of
// every request and answers 401, as a host a redirect names and that must
// never see a token.
type hostSeen struct {
	*httptest.Server
	mu    sync.Mutex
	authz []string
}

// startHostSeen listens on addr ("127.0.0.2:0"…), with TLS if asked.
func startHostSeen(t *testing.T, addr string, withTLS bool) *hostSeen {
	t.Helper()
	h := &hostSeen{}
	h.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.authz = append(h.authz, r.Header.Get("Authorization"))
		h.mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		http.Error(w, "who are you?", http.StatusUnauthorized)
	}))
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	h.Listener.Close()
	h.Listener = lis
	if withTLS {
		h.StartTLS()
	} else {
		h.Start()
	}
	t.Cleanup(h.Close)
	return h
}

func (h *hostSeen) Seen() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.authz)
}

// redirector is an https API on 127.0.0.1 that redirects /to?code=N&url=U
// to U with status N and answers /ok with 200 when it gets a token. It
// records the Authorization header of every request.
type redirector struct {
	*httptest.Server
	mu    sync.Mutex
	authz []string
}

func startRedirector(t *testing.T) *redirector {
	t.Helper()
	r := &redirector{}
	r.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		a := req.Header.Get("Authorization")
		r.mu.Lock()
		r.authz = append(r.authz, a)
		r.mu.Unlock()
		switch req.URL.Path {
		case "/to":
			var code int
			fmt.Sscan(req.URL.Query().Get("code"), &code)
			http.Redirect(w, req, req.URL.Query().Get("url"), code)
		case "/ok":
			if !strings.HasPrefix(a, "Bearer ") {
				http.Error(w, "no token", http.StatusUnauthorized)
				return
			}
			w.Write([]byte("ok"))
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *redirector) Seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.authz)
}

// to is the URL of a redirect with code to target.
func (r *redirector) to(code int, target string) string {
	return r.URL + "/to?" + url.Values{"code": {fmt.Sprint(code)}, "url": {target}}.Encode()
}

// base is a transport that trusts the test servers' certificate.
func (r *redirector) base() http.RoundTripper { return r.Client().Transport }

// checkRedirects sends hc through every redirect status to hosts other than
// the API's origin — plain http on 127.0.0.2, https on another port, plain
// http on 127.0.0.1 (a downgrade) — and checks that the API got the token,
// the other hosts nothing, not even a caller's own Authorization header,
// and that their 401s caused no invalidation; then that a redirect within
// the origin keeps the token.
func checkRedirects(t *testing.T, api *redirector, hc *http.Client, invalidations func() int64) {
	t.Helper()
	others := map[string]*hostSeen{
		"http, other address":         startHostSeen(t, "127.0.0.2:0", false),
		"https, other port":           startHostSeen(t, "127.0.0.1:0", true),
		"http, same host (downgrade)": startHostSeen(t, "127.0.0.1:0", false),
	}
	for name, other := range others {
		for _, code := range []int{301, 302, 303, 307, 308} {
			for _, callerAuthz := range []string{"", "Bearer the-callers-own"} {
				req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, api.to(code, other.URL+"/x"), nil)
				if err != nil {
					t.Fatal(err)
				}
				if callerAuthz != "" {
					req.Header.Set("Authorization", callerAuthz)
				}
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatalf("%s, %d: %v", name, code, err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("%s, %d: status %d, want the other host's 401 passed through", name, code, resp.StatusCode)
				}
			}
		}
		seen := other.Seen()
		if n := len(seen) - len(slices.DeleteFunc(slices.Clone(seen), func(a string) bool { return a != "" })); len(seen) != 10 || n != 0 {
			t.Errorf("%s: the other host got %d requests, %d of them with an Authorization header; want 10 without", name, len(seen), n)
		}
	}
	if slices.ContainsFunc(api.Seen(), func(a string) bool { return !strings.HasPrefix(a, "Bearer ") || a == "Bearer the-callers-own" }) {
		t.Error("the API got a request without the token")
	}
	if n := invalidations(); n != 0 {
		t.Errorf("%d invalidations after 401s from hosts that got no token, want 0", n)
	}
	// Within the origin the token follows the redirect.
	if code, body := getBody(t, hc, api.to(http.StatusTemporaryRedirect, api.URL+"/ok")); code != 200 || body != "ok" {
		t.Errorf("redirect within the origin: %d %q, want 200 with the token", code, body)
	}
}

// TestRedirectTokenStaysWithOrigin checks, for every way of building a
// client, that a redirect takes the token to no other origin and that the
// other host's 401 replaces no token.
func TestRedirectTokenStaysWithOrigin(t *testing.T) {
	t.Run("Transport over any TokenSource", func(t *testing.T) {
		api := startRedirector(t)
		src := &rotatingSource{tokens: []string{"first", "second"}}
		hc := &http.Client{Transport: clientlib.NewTransport(src, clientlib.WithBaseTransport(api.base()))}
		checkRedirects(t, api, hc, func() int64 {
			src.mu.Lock()
			defer src.mu.Unlock()
			return int64(len(src.reported))
		})
	})
	t.Run("broker mode", func(t *testing.T) {
		api := startRedirector(t)
		s := startStack(t, stackConfig{})
		hc := newHTTPClient(t, env(), clientlib.WithBroker(s.Addr(), "default"), clientlib.WithBaseTransport(api.base()))
		checkRedirects(t, api, hc.Client(), func() int64 { return s.Calls("InvalidateToken") })
	})
	t.Run("direct mode", func(t *testing.T) {
		api := startRedirector(t)
		c := devidp.NewClient()
		idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{c}})
		if err != nil {
			t.Fatal(err)
		}
		defer idp.Close()
		hc := newHTTPClient(t, env(), clientlib.WithClientCredentials(c.ID, c.Secret), clientlib.WithAuthServer(idp.URL()),
			clientlib.WithBaseTransport(api.base()))
		checkRedirects(t, api, hc.Client(), func() int64 { return idp.Requests() - 1 })
	})
	t.Run("environment by host", func(t *testing.T) {
		api := startRedirector(t)
		home := t.TempDir()
		c := devidp.NewClient()
		idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{c}})
		if err != nil {
			t.Fatal(err)
		}
		defer idp.Close()
		creds := writeCreds(t, home, "c.json", c)
		envs := filepath.Join(home, "envs.json")
		body := fmt.Sprintf(`{"default_environment":"dev","environments":{"dev":{"host":"127.0.0.1","auth_server":%q,"credentials":%q}}}`, idp.URL(), creds)
		if err := os.WriteFile(envs, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		hc := newHTTPClient(t, env(), clientlib.WithEnvironmentsFile(envs), clientlib.WithEnvironmentByHost(), clientlib.WithBaseTransport(api.base()))
		checkRedirects(t, api, hc.Client(), func() int64 { return idp.Requests() - 1 })
	})
}

// TestStatusErrorsFollowRedirects: with WithStatusErrors a redirect is
// followed, not an error; a 401 from another origin, which got no token,
// is one, and its excerpt shows no token.
func TestStatusErrorsFollowRedirects(t *testing.T) {
	api := startRedirector(t)
	other := startHostSeen(t, "127.0.0.2:0", false)
	hc := directClient(t, clientlib.WithStatusErrors(), clientlib.WithBaseTransport(api.base()))
	for _, code := range []int{301, 302, 303, 307, 308} {
		if status, body := getBody(t, hc.Client(), api.to(code, api.URL+"/ok")); status != 200 || body != "ok" {
			t.Errorf("%d within the origin: %d %q, want 200", code, status, body)
		}
	}
	_, err := hc.Client().Get(api.to(http.StatusFound, other.URL+"/x"))
	var se *clientlib.StatusError
	if !errors.As(err, &se) || se.StatusCode != 401 || se.URL != other.URL+"/x" || se.Body != "who are you?" {
		t.Errorf("redirect to another origin: %v, want the other host's 401 as a *StatusError", err)
	}
	if seen := other.Seen(); len(seen) != 1 || seen[0] != "" {
		t.Errorf("the other host got %d requests, want one without Authorization", len(seen))
	}
}
