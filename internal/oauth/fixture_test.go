package oauth_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/guard"
	"github.com/tokenbroker/tokenbroker/internal/oauth"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/server"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Callers of every fixture: ci (an API key) may use team-* (tenants
// team-a and team-b; team-x exists nowhere); reader (another key) only
// team-a and only scopes read:*; acme exists and is nobody's.
var (
	ciKey     = "tbk_ci_" + strings.Repeat("5a", 16)
	readerKey = "tbk_reader_" + strings.Repeat("c3", 16)
	wrongKey  = "tbk_wrong_" + strings.Repeat("e1", 16)
)

func digest(key string) string { s := sha256.Sum256([]byte(key)); return hex.EncodeToString(s[:]) }

func callers() []policy.Caller {
	return []policy.Caller{
		{Name: "ci", APIKeySHA256: digest(ciKey), Tenants: []string{"team-*"}},
		{Name: "reader", APIKeySHA256: digest(readerKey), Tenants: []string{"team-a"}, Scopes: []string{"read:*"}},
	}
}

type options struct {
	callers  []policy.Caller // nil: callers(); empty non-nil: open mode
	limits   limits.Limits
	extra    []broker.Tenant // more tenants
	lifetime time.Duration   // the dev IdP's token lifetime; 0: an hour
	auditTo  io.Writer       // wraps the audit buffer
}

// fixture is the endpoint on a loopback listener with the connection
// caps, over a real guard and broker fetching from the development IdP.
type fixture struct {
	t       *testing.T
	URL     string // base URL, http://127.0.0.1:port
	Addr    string
	IdP     *devidp.Server
	Broker  *broker.Broker
	Guard   *guard.Guard
	Server  *oauth.Server
	Audit   *logtest.Buffer
	Logs    *logtest.Buffer
	results sync.Map // result -> *int (OnResult)
	mu      sync.Mutex
	secrets map[string]string
}

func start(t *testing.T, o options) *fixture {
	t.Helper()
	f := &fixture{t: t, Audit: &logtest.Buffer{}, Logs: &logtest.Buffer{}, secrets: map[string]string{
		"ci key": ciKey, "reader key": readerKey, "wrong key": wrongKey,
	}}
	log := slog.New(slog.NewJSONHandler(f.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	client := devidp.NewClient()
	f.secrets["IdP client secret"] = client.Secret
	var err error
	if f.IdP, err = devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}, TokenLifetime: o.lifetime, Logger: log}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.IdP.Close() })
	var tenants []broker.Tenant
	for _, name := range []string{"team-a", "team-b", "acme"} {
		tenants = append(tenants, broker.Tenant{Name: name, TokenURL: f.IdP.TokenURL(), ClientID: client.ID, ClientSecret: creds.Secret(client.Secret)})
	}
	if f.Broker, err = broker.New(broker.Config{Tenants: append(tenants, o.extra...), Logger: log, Limits: o.limits}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Broker.Close() })
	cs := o.callers
	if cs == nil {
		cs = callers()
	}
	pol, err := policy.New(cs)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := policy.NewHolder(pol)
	if err != nil {
		t.Fatal(err)
	}
	var aw io.Writer = f.Audit
	if o.auditTo != nil {
		aw = o.auditTo
	}
	trail := audit.New(aw)
	t.Cleanup(func() { _ = trail.Close() })
	if f.Guard, err = guard.New(guard.Config{Policy: holder, Audit: trail, Logger: log, Limits: o.limits}); err != nil {
		t.Fatal(err)
	}
	f.Server, err = oauth.New(oauth.Config{Broker: f.Broker, Guard: f.Guard, Logger: log, Limits: o.limits, OnResult: f.count})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.Addr = lis.Addr().String()
	f.URL = "http://" + f.Addr
	served := make(chan error, 1)
	go func() { served <- f.Server.Serve(server.LimitListener(lis, o.limits)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := f.Server.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		logtest.AssertNone(t, map[string]string{"logs": f.Logs.String(), "audit trail": f.Audit.String()}, f.secrets)
	})
	return f
}

func (f *fixture) count(result string) {
	n, _ := f.results.LoadOrStore(result, new(int))
	f.mu.Lock()
	*n.(*int)++
	f.mu.Unlock()
}

// Results returns how many requests ended with result (OnResult).
func (f *fixture) Results(result string) int {
	n, ok := f.results.Load(result)
	if !ok {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return *n.(*int)
}

// Secret adds a value that must never appear in the logs or audit trail.
func (f *fixture) Secret(name, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secrets[name] = value
}

// answer is an endpoint's answer, read whole.
type answer struct {
	Status int
	Header http.Header
	Body   string
	JSON   map[string]any
}

// post sends a token request: form as the body (form-encoded), and
// header (e.g. Authorization); path "" is oauth.Path.
func (f *fixture) post(path string, form url.Values, header http.Header) answer {
	f.t.Helper()
	if path == "" {
		path = oauth.Path
	}
	req, err := http.NewRequestWithContext(f.t.Context(), http.MethodPost, f.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, vs := range header {
		req.Header[k] = vs
	}
	return f.do(req)
}

func (f *fixture) do(req *http.Request) answer {
	f.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	a := answer{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
	_ = json.Unmarshal(body, &a.JSON)
	if tok, ok := a.JSON["access_token"].(string); ok {
		f.Secret("access token "+tok[:8], tok)
	}
	return a
}

// form is a client_credentials form with client_id, and client_secret
// if secret is not "".
func form(tenant, secret string, kv ...string) url.Values {
	v := url.Values{"grant_type": {"client_credentials"}, "client_id": {tenant}}
	if secret != "" {
		v.Set("client_secret", secret)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

// basic is an Authorization header with Basic credentials, form-encoded
// as RFC 6749 §2.3.1 has them.
func basic(id, secret string) http.Header {
	req, _ := http.NewRequest(http.MethodPost, "http://x", nil)
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	return http.Header{"Authorization": req.Header.Values("Authorization")}
}

// brokerToken is the broker's current token of tenant's default scopes.
func (f *fixture) brokerToken(tenant string, scopes ...string) *broker.Token {
	f.t.Helper()
	tok, err := f.Broker.Get(f.t.Context(), broker.Request{Tenant: tenant, Scopes: scopes})
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

// oauth2Client is the http.Client x/oauth2 uses, in ctx.
func oauth2Context(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Timeout: 10 * time.Second})
}

// auditRecords parses the audit lines written so far.
func auditRecords(t *testing.T, f *fixture) []audit.Record {
	t.Helper()
	var out []audit.Record
	for _, ln := range strings.Split(strings.TrimSpace(f.Audit.String()), "\n") {
		if ln == "" {
			continue
		}
		var r audit.Record
		if err := json.Unmarshal([]byte(ln), &r); err != nil {
			t.Fatalf("audit line %q: %v", ln, err)
		}
		out = append(out, r)
	}
	return out
}
