package daemon_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/oauth"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

const oauthSection = "oauth:\n  listen: 127.0.0.1:0\n"

// tokenPost posts a client-credentials request to the daemon's token
// endpoint over client, with Basic credentials if secret is not "".
func tokenPost(t *testing.T, d *daemon.Daemon, client *http.Client, scheme, tenant, secret string) (int, map[string]any) {
	t.Helper()
	v := url.Values{"grant_type": {"client_credentials"}}
	if secret == "" {
		v.Set("client_id", tenant)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, scheme+"://"+d.OAuthAddr().String()+oauth.Path, strings.NewReader(v.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret != "" {
		req.SetBasicAuth(tenant, secret)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 1 {
		t.Errorf("the token endpoint spoke %s, want HTTP/1.1 only", resp.Proto)
	}
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// TestServeOAuthOverTLS: with oauth.listen, the daemon serves the token
// endpoint with the gRPC listener's TLS (certificate and client CA): an
// API key in Basic and a client certificate (client_id naming the
// tenant) each get the token gRPC hands out, under the same policy and
// audit trail; plaintext HTTP to it fails; the requests are counted.
func TestServeOAuthOverTLS(t *testing.T) {
	s := brokertest.StartSecuredConfig(t, daemon.Options{}, oauthSection)
	d := s.Daemon
	ctx := t.Context()
	// ALPN offers h2 first, as browsers and curl do: the endpoint answers
	// HTTP/1.1.
	tlsOnly := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ServerCA.Pool(), NextProtos: []string{"h2", "http/1.1"}}, ForceAttemptHTTP2: true}}
	cert := s.ClientCA.Issue(t, testpki.Options{CommonName: "client", URIs: []string{brokertest.BillingSPIFFE}}).TLSCertificate(t)
	mtls := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ServerCA.Pool(), Certificates: []tls.Certificate{cert}}}}

	viaGRPC, err := s.Get(brokertest.Bearer(ctx, s.APIKey), s.API(s.TLSOnly()), "team-a")
	if err != nil {
		t.Fatal(err)
	}
	code, body := tokenPost(t, d, tlsOnly, "https", "team-a", s.APIKey)
	if code != 200 || body["access_token"] != viaGRPC.GetAccessToken() {
		t.Errorf("API key over TLS: HTTP %d, the gRPC token: %v", code, body["access_token"] == viaGRPC.GetAccessToken())
	}
	s.Record(&tbv1.Token{AccessToken: fmt.Sprint(body["access_token"])}, nil)

	acme, err := s.Get(ctx, s.API(s.WithCert(brokertest.BillingSPIFFE)), "acme")
	if err != nil {
		t.Fatal(err)
	}
	if code, body = tokenPost(t, d, mtls, "https", "acme", ""); code != 200 || body["access_token"] != acme.GetAccessToken() {
		t.Errorf("client certificate: HTTP %d %v", code, body["error"])
	}
	if code, body = tokenPost(t, d, mtls, "https", "team-a", ""); code != 400 || body["error"] != "unauthorized_client" {
		t.Errorf("client certificate, a tenant not its own: HTTP %d %v", code, body)
	}
	if code, body = tokenPost(t, d, tlsOnly, "https", "team-a", s.WrongKey); code != 401 || body["error"] != "invalid_client" {
		t.Errorf("a wrong key: HTTP %d %v", code, body)
	}
	// Plaintext to the TLS port: net/http's own 400, never a token.
	if resp, err := http.Post("http://"+d.OAuthAddr().String()+oauth.Path, "application/x-www-form-urlencoded", strings.NewReader("grant_type=client_credentials")); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || strings.Contains(string(b), "access_token") {
			t.Errorf("plaintext to the TLS port: %d %s", resp.StatusCode, b)
		}
	}

	var methods []string
	for _, r := range s.AuditRecords() {
		if strings.HasPrefix(r.Method, "POST ") {
			methods = append(methods, r.Event+" "+r.Caller+" "+r.Identity+" "+r.Tenant+" "+r.Result)
		}
	}
	want := []string{"issue ci api_key team-a ok", "issue billing spiffe_id=" + brokertest.BillingSPIFFE + " acme ok",
		"deny billing spiffe_id=" + brokertest.BillingSPIFFE + " team-a denied", "deny    denied"}
	if strings.Join(methods, "|") != strings.Join(want, "|") {
		t.Errorf("audit lines of the endpoint:\n%s\nwant\n%s", strings.Join(methods, "\n"), strings.Join(want, "\n"))
	}
	_, scrape := adminGet(t, d, "/metrics")
	for series, want := range map[string]float64{
		`tokenbroker_oauth_requests_total{result="ok"}`:                  2,
		`tokenbroker_oauth_requests_total{result="invalid_client"}`:      1,
		`tokenbroker_oauth_requests_total{result="unauthorized_client"}`: 1,
		`tokenbroker_denials_total{code="Unauthenticated"}`:              1,
	} {
		if got := metricValue(scrape, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	tokens, _ := s.Seen()
	needles := map[string]string{"API key": s.APIKey, "wrong key": s.WrongKey, "IdP secret": s.Client.Secret}
	for i, tok := range tokens {
		needles[fmt.Sprint("token ", i)] = tok
	}
	logtest.AssertNone(t, map[string]string{"logs": s.Logs.String(), "audit": readFile(t, s.AuditPath)}, needles)
}

// TestServeOAuthPlaintextRule: oauth.listen follows listen's one rule
// (daemon.checkPlaintext): with callers and no tls, a non-loopback
// address is refused unless insecure_plaintext, for either listener.
func TestServeOAuthPlaintextRule(t *testing.T) {
	for _, tc := range []struct {
		name, extra string
		wantErr     string
	}{
		{"oauth off loopback", "oauth:\n  listen: 0.0.0.0:0\n", "oauth.listen 0.0.0.0:0 is a plaintext listener on a non-loopback address"},
		{"oauth off loopback, insecure_plaintext", "oauth:\n  listen: 0.0.0.0:0\ninsecure_plaintext: true\n", ""},
		{"oauth on loopback", "oauth:\n  listen: 127.0.0.1:0\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			testpki.WriteFile(t, filepath.Join(dir, "s"), []byte("FAKE-secret-value"))
			cfg := filepath.Join(dir, "c.yaml")
			testpki.WriteFile(t, cfg, fmt.Appendf(nil, `listen: 127.0.0.1:0
tenants:
  - name: acme
    token_url: http://127.0.0.1:1/token
    client_id: id
    client_secret_file: s
callers:
  - name: ci
    api_key_sha256: %s
    tenants: [acme]
%s`, strings.Repeat("a", 64), tc.extra))
			logs := &logtest.Buffer{}
			err := newFromFile(cfg, logs)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatal(err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "insecure_plaintext: true")):
				t.Fatalf("New = %v, want a refusal naming %q", err, tc.wantErr)
			}
			if strings.Contains(tc.name, "insecure_plaintext") && !strings.Contains(logs.String(), `"oauth.listen":"0.0.0.0:0"`) {
				t.Errorf("no INSECURE PLAINTEXT warning naming oauth.listen:\n%s", logs.String())
			}
		})
	}
}

// TestServeOAuthReload: oauth.listen is restart-only (a reload that
// moves it warns and the endpoint stays where it is), and the endpoint's
// TLS is the tls section's, which a reload may not remove.
func TestServeOAuthReload(t *testing.T) {
	s := brokertest.StartSecuredConfig(t, daemon.Options{}, oauthSection)
	addr := s.Daemon.OAuthAddr().String()
	cfgText := readFile(t, s.Config)
	s.WriteConfig(strings.Replace(cfgText, oauthSection, "oauth:\n  listen: 127.0.0.1:1\n", 1))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := s.Daemon.OAuthAddr().String(); got != addr || !strings.Contains(s.Logs.String(), "admin and oauth changes take effect only at restart") {
		t.Errorf("after a reload moving oauth.listen: %s (was %s); restart-only warning logged: %v", got, addr, strings.Contains(s.Logs.String(), "oauth changes"))
	}
	noTLS := cfgText[:strings.Index(cfgText, "tls:")] + cfgText[strings.Index(cfgText, "tenants:"):]
	noTLS = strings.ReplaceAll(noTLS, "  - name: billing\n    spiffe_id: "+brokertest.BillingSPIFFE+"\n    tenants: [acme]\n", "")
	s.WriteConfig(noTLS)
	if err := s.Reload(); !errors.Is(err, daemon.ErrLowersSecurity) {
		t.Errorf("a reload removing tls with the token endpoint on: %v, want ErrLowersSecurity", err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ServerCA.Pool()}}}
	if code, _ := tokenPost(t, s.Daemon, client, "https", "team-a", s.APIKey); code != 200 {
		t.Errorf("after the refused reload, over TLS: HTTP %d", code)
	}
}

// TestServeOAuthShutdown: at shutdown a token request waiting on a
// hanging IdP gets 503 temporarily_unavailable when shutdown.timeout
// ends, like a gRPC call; Run returns nil and the port is closed.
func TestServeOAuthShutdown(t *testing.T) {
	hang := faultidp.Start()
	defer hang.Close()
	hang.Push(faultidp.OK("hang-default-token", 3600)) // the default scope set's token
	hang.SetDefault(faultidp.Response{Hang: true})     // every other request hangs
	cfg := &config.Config{
		Listen:   "127.0.0.1:0",
		OAuth:    config.OAuth{Listen: "127.0.0.1:0"},
		Tenants:  []config.Tenant{{Name: "hang", TokenURL: hang.TokenURL(), ClientID: "hang-client", ClientSecret: creds.Secret("FAKE-hang-secret"), AuthStyle: config.AuthStyleBody}},
		Shutdown: config.Shutdown{Timeout: 300 * time.Millisecond},
	}
	logs := &logtest.Buffer{}
	d, err := daemon.New(cfg, daemon.Options{Logger: jsonLogger(logs)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	url := "http://" + d.OAuthAddr().String() + oauth.KognicPath
	// The default token first: the request below must not take its answer.
	eventually(t, "the default token", func() bool { return hang.Requests() >= 1 && hang.InFlight() == 0 })
	type result struct {
		code int
		body string
	}
	hung := make(chan result, 1)
	go func() {
		resp, err := http.Post(url, "application/x-www-form-urlencoded", strings.NewReader("grant_type=client_credentials&client_id=hang&scope=slow"))
		if err != nil {
			hung <- result{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		hung <- result{resp.StatusCode, string(b)}
	}()
	eventually(t, "the hanging IdP request", func() bool { return hang.InFlight() == 1 })
	start := time.Now()
	stop()
	r := <-hung
	if r.code != 503 || !strings.Contains(r.body, `"temporarily_unavailable"`) || !strings.Contains(r.body, "shutting down") {
		t.Errorf("the hanging request at shutdown: %d %s", r.code, r.body)
	}
	if el := time.Since(start); el < 250*time.Millisecond || el > 3*time.Second {
		t.Errorf("it ended %s after SIGTERM, want about shutdown.timeout (300ms)", el)
	}
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := http.Post(url, "application/x-www-form-urlencoded", strings.NewReader("grant_type=client_credentials")); err == nil {
		t.Error("the token endpoint still answers after Run returned")
	}
}
