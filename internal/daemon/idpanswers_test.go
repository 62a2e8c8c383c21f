package daemon_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/broker/config"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// idpAnswersConfig: tenant good fetches from a real IdP, echo from one
// that answers with the client secret as access_token, crlf from one
// whose token holds CR LF; every token_url carries a key in its query.
const idpAnswersConfig = `listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
tenants:
  - name: good
    token_url: %[1]s?api-key=%[4]s
    client_id: %[5]s
    client_secret_file: good.secret
  - name: echo
    token_url: %[2]s?api-key=%[4]s&x=1
    client_id: echo-client
    client_secret_file: echo.secret
  - name: crlf
    token_url: %[3]s?api-key=%[4]s
    client_id: crlf-client
    client_secret_file: echo.secret
audit:
  path: audit.log
`

// TestServeChecksWhatTheIdPReturns is issue 16 §4 through the running
// service: an IdP that echoes the client secret as access_token, or
// answers a token holding CR LF, gets GetToken an UNAVAILABLE naming the
// access_token, never the secret or the token; and the key in a token
// URL's query is in no log line, span, error, metric, audit record,
// ListTenants answer or status page.
func TestServeChecksWhatTheIdPReturns(t *testing.T) {
	const key, echoSecret = "K3y-from-the-query-55x1", "Echo/S3cret+Value-0042"
	const crlfToken = "tok\r\nX-Injected: 1"
	client := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	echo, crlf := faultidp.Start(), faultidp.Start()
	defer echo.Close()
	defer crlf.Close()
	echo.SetDefault(faultidp.EchoAccessToken(func(_, s string) string { return s }))
	crlf.SetDefault(faultidp.OK(crlfToken, 3600))

	dir := t.TempDir()
	testpki.WriteFile(t, filepath.Join(dir, "good.secret"), []byte(client.Secret+"\n"))
	testpki.WriteFile(t, filepath.Join(dir, "echo.secret"), []byte(echoSecret+"\n"))
	path := filepath.Join(dir, "broker.yaml")
	testpki.WriteFile(t, path, fmt.Appendf(nil, idpAnswersConfig, idp.TokenURL(), echo.TokenURL(), crlf.TokenURL(), key, client.ID))
	logs := &logtest.Buffer{}
	cfg, err := config.LoadWith(path, config.Options{Logger: jsonLogger(logs)})
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(t.Context()) }()
	d := brokertest.Run(t, cfg, daemon.Options{Logger: jsonLogger(logs), TracerProvider: tp})
	api := api(t, d)

	out := map[string]*strings.Builder{}
	add := func(where, text string) {
		if out[where] == nil {
			out[where] = &strings.Builder{}
		}
		out[where].WriteString(text + "\n")
	}
	tok, err := api.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "good"})
	if err != nil {
		t.Fatalf("good: %v (the IdP is reached with its key)", err)
	}
	add("tokens", tok.GetToken().GetAccessToken())
	for tenant, why := range map[string]string{"echo": "echoes the client credentials", "crlf": "is not an RFC 6750 token"} {
		tok, err := api.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: tenant})
		brokertest.WantStatus(t, tenant, err, codes.Unavailable)
		if !strings.Contains(fmt.Sprint(err), "access_token "+why) {
			t.Errorf("%s: error %v, want it to say the access_token %s", tenant, err, why)
		}
		add("tokens", tok.GetToken().GetAccessToken())
		add("gRPC errors", fmt.Sprint(err))
	}
	list, err := api.ListTenants(t.Context(), &tbv1.ListTenantsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(list.GetTenants())
	add("ListTenants", string(raw))
	for _, tn := range list.GetTenants() {
		if !strings.HasPrefix(tn.GetTokenUrl(), "http://127.0.0.1:") || !strings.HasSuffix(tn.GetTokenUrl(), "/v1/auth/oauth/token") {
			t.Errorf("ListTenants: %s token_url %q, want scheme, host and path", tn.GetName(), tn.GetTokenUrl())
		}
	}
	eventually(t, "the IdP request spans", func() bool { return len(rec.Ended()) >= 3 })
	for _, sp := range rec.Ended() {
		add("spans", fmt.Sprintf("span %s %s %s", sp.Name(), sp.Status().Code, sp.Status().Description))
		for _, kv := range sp.Attributes() {
			add("spans", fmt.Sprintf("%s=%s", kv.Key, kv.Value.String()))
		}
	}
	for _, p := range []string{"/", "/status.json", "/metrics"} {
		code, body := adminGet(t, d, p)
		if code != 200 {
			t.Errorf("GET %s = %d", p, code)
		}
		add("admin "+p, body)
	}
	add("logs", logs.String())
	add("audit file", readFile(t, filepath.Join(dir, "audit.log")))

	// The capture is what we think it is.
	if !strings.Contains(out["spans"].String(), "url.full="+idp.TokenURL()+"\n") ||
		!strings.Contains(out["logs"].String(), `"token_url":"`+echo.TokenURL()+`"`) ||
		!strings.Contains(out["admin /status.json"].String(), "access_token echoes the client credentials") {
		t.Fatalf("spans, logs or status incomplete:\n%s\n%s\n%s", out["spans"], out["logs"], out["admin /status.json"])
	}
	haystacks := map[string]string{}
	for where, b := range out {
		haystacks[where] = b.String()
	}
	needles := map[string]string{"query key": key, "query": "?api-key", "CR LF token": crlfToken, "token's header": "X-Injected"}
	for i, f := range faultidp.SecretForms("echo-client", echoSecret) {
		needles[fmt.Sprintf("echoed secret form %d", i)] = f
	}
	logtest.AssertNone(t, haystacks, needles)
}
