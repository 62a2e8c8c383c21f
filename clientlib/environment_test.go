package clientlib_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokenbroker/tokenbroker/clientlib"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// writeCreds writes a Kognic credentials file for c into dir.
func writeCreds(t *testing.T, dir, name string, c devidp.Client, scopes ...string) string {
	t.Helper()
	m := map[string]any{"clientId": c.ID, "clientSecret": c.Secret, "email": "a@example.com", "userId": 7, "issuer": "kognic"}
	if scopes != nil {
		m["scopes"] = scopes
	}
	b, _ := json.Marshal(m)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// claimsOf returns the subject and scope of a dev IdP token.
func claimsOf(t *testing.T, tok string) (sub, scope string) {
	t.Helper()
	var c struct {
		jwt.RegisteredClaims
		Scope string `json:"scope"`
	}
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil {
		t.Fatalf("not a JWT: %v", err)
	}
	return c.Subject, c.Scope
}

// TestWithEnvironmentScopes checks kognic-auth's order: explicit scopes,
// else the environment's, else the credentials file's; and that "~" works
// in the environment's credentials path.
func TestWithEnvironmentScopes(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	c := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{c}})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	writeCreds(t, home, "creds.json", c, "file:scope")
	envFile := filepath.Join(home, "environments.json")
	body := fmt.Sprintf(`{"environments":{
	  "scoped":   {"host":"a.test","auth_server":%q,"credentials":"~/creds.json","scopes":["env:scope"]},
	  "unscoped": {"host":"b.test","auth_server":%q,"credentials":"~/creds.json"}}}`, idp.URL(), idp.URL())
	if err := os.WriteFile(envFile, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, env, want string
		opts            []clientlib.Option
	}{
		{"explicit wins", "scoped", "explicit", []clientlib.Option{clientlib.WithScopes("explicit")}},
		{"environment over file", "scoped", "env:scope", nil},
		{"file last", "unscoped", "file:scope", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := append([]clientlib.Option{env(), clientlib.WithEnvironmentsFile("~/environments.json"), clientlib.WithEnvironment(tc.env)}, tc.opts...)
			hc := newHTTPClient(t, opts...)
			tok, err := hc.Source().Token()
			if err != nil {
				t.Fatal(err)
			}
			if sub, scope := claimsOf(t, tok.AccessToken); sub != c.ID || scope != tc.want {
				t.Errorf("token for %q with scope %q, want %q with %q", sub, scope, c.ID, tc.want)
			}
		})
	}
	_, err = clientlib.NewHTTPClient(t.Context(), env(), clientlib.WithEnvironmentsFile(envFile), clientlib.WithEnvironment("nope"))
	if err == nil || !strings.Contains(err.Error(), `environment "nope" is not in `+envFile+"; known environments: scoped, unscoped") {
		t.Errorf("unknown environment: %v", err)
	}
}

// TestWithEnvironmentByHost sends requests to two hosts of two
// environments, each with its own IdP and client, and checks that each
// host gets its own environment's token, that a source starts only when
// its environment is first used, and that Close stops them.
func TestWithEnvironmentByHost(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	var idps [2]*devidp.Server
	var clients [2]devidp.Client
	for i := range idps {
		clients[i] = devidp.NewClient()
		idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{clients[i]}})
		if err != nil {
			t.Fatal(err)
		}
		defer idp.Close()
		idps[i] = idp
		writeCreds(t, home, fmt.Sprintf("c%d.json", i), clients[i])
	}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sub, _ := claimsOf(t, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		fmt.Fprint(w, sub)
	}))
	defer api.Close()
	port := api.Listener.Addr().(*net.TCPAddr).Port
	body := fmt.Sprintf(`{"environments":{
	  "zero": {"host":"127.0.0.1","auth_server":%q,"credentials":"~/c0.json"},
	  "one":  {"host":"localhost","auth_server":%q,"credentials":"~/c1.json"}}}`, idps[0].URL(), idps[1].URL())
	if err := os.WriteFile(filepath.Join(home, "envs.json"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	hc := newHTTPClient(t, env(), clientlib.WithEnvironmentsFile("~/envs.json"), clientlib.WithEnvironmentByHost())
	if hc.Source() != nil || idps[0].Requests()+idps[1].Requests() != 0 {
		t.Fatal("by-host mode started a source before any request")
	}
	for range 2 {
		if _, got := getBody(t, hc.Client(), fmt.Sprintf("http://127.0.0.1:%d/", port)); got != clients[0].ID {
			t.Errorf("127.0.0.1 got a token for %q, want environment zero's %q", got, clients[0].ID)
		}
	}
	if idps[1].Requests() != 0 {
		t.Error("environment one fetched a token before it was used")
	}
	if _, got := getBody(t, hc.Client(), fmt.Sprintf("http://localhost:%d/", port)); got != clients[1].ID {
		t.Errorf("localhost got a token for %q, want environment one's %q", got, clients[1].ID)
	}
	if idps[0].Requests() != 1 || idps[1].Requests() != 1 {
		t.Errorf("IdP requests %d and %d, want one each", idps[0].Requests(), idps[1].Requests())
	}
	if err := hc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := hc.Client().Get(fmt.Sprintf("http://127.0.0.1:%d/", port)); !errors.Is(err, clientlib.ErrClosed) {
		t.Errorf("request after Close: %v, want ErrClosed", err)
	}
}

// TestWithEnvironmentByHostUnknownHost checks that a host no environment
// names gets no token, not default_environment's nor the KOGNIC_*
// variables', and that those serve app.kognic.com and its subdomains.
func TestWithEnvironmentByHostUnknownHost(t *testing.T) {
	home := t.TempDir()
	var idps [2]*devidp.Server
	var clients [2]devidp.Client
	for i := range idps {
		clients[i] = devidp.NewClient()
		idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{clients[i]}})
		if err != nil {
			t.Fatal(err)
		}
		defer idp.Close()
		idps[i] = idp
	}
	creds := writeCreds(t, home, "c.json", clients[0])
	envs := filepath.Join(home, "envs.json")
	body := fmt.Sprintf(`{"default_environment":"dev","environments":{"dev":{"host":"127.0.0.1","auth_server":%q,"credentials":%q}}}`, idps[0].URL(), creds)
	if err := os.WriteFile(envs, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var hosts []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hosts = append(hosts, r.Host)
		mu.Unlock()
		sub, _ := claimsOf(t, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		fmt.Fprint(w, sub)
	}))
	defer api.Close()
	// Every host name leads to the API on loopback.
	var d net.Dialer
	base := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, api.Listener.Addr().String())
	}}
	defer base.CloseIdleConnections()
	hc := newHTTPClient(t, env("KOGNIC_CLIENT_ID", clients[1].ID, "KOGNIC_CLIENT_SECRET", clients[1].Secret, "KOGNIC_AUTH_SERVER", idps[1].URL()),
		clientlib.WithEnvironmentsFile(envs), clientlib.WithEnvironmentByHost(), clientlib.WithBaseTransport(base), clientlib.WithInsecureHTTP())

	for _, host := range []string{"localhost", "evil.test", "evilapp.kognic.com", "kognic.com"} {
		_, err := hc.Client().Get("http://" + host + "/v1/x")
		want := fmt.Sprintf(`no environment for host %q, so no token is sent there: the environments of %s are dev (127.0.0.1), and the KOGNIC_* variables serve only app.kognic.com`, host, envs)
		if !errors.Is(err, clientlib.ErrUnknownHost) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want ErrUnknownHost: …%s…", host, err, want)
		}
	}
	mu.Lock()
	if len(hosts) != 0 || idps[0].Requests()+idps[1].Requests() != 0 {
		t.Fatalf("hosts no environment names: requests reached the API from %q, the IdPs %d and %d; want none", hosts, idps[0].Requests(), idps[1].Requests())
	}
	mu.Unlock()
	for host, want := range map[string]string{
		"127.0.0.1":          clients[0].ID, // the environment
		"app.kognic.com":     clients[1].ID, // the KOGNIC_* variables
		"api.app.kognic.com": clients[1].ID,
	} {
		if code, got := getBody(t, hc.Client(), "http://"+host+"/v1/x"); code != 200 || got != want {
			t.Errorf("%s: %d, token for %q, want %q", host, code, got, want)
		}
	}
}
