package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/credentials/insecure"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// echoSecret holds the characters that URL, base64, JSON and HTML encode
// differently.
const echoSecret = `n4sty/se+cr=et&50%25"<x>`

// echoConfig: %[1]s, %[2]s, %[3]s are the token URLs of three echoing
// endpoints.
const echoConfig = `listen: 127.0.0.1:0
strict_file_permissions: true
tenants:
  - name: echo-json
    token_url: %[1]s
    client_id: echo client
    client_secret_file: echo.secret
  - name: echo-basic
    token_url: %[2]s
    client_id: echo client
    client_secret_file: echo.secret
    auth_style: basic
  - name: echo-html
    token_url: %[3]s
    client_id: echo client
    client_secret_file: echo.secret
audit:
  path: audit.log
`

// TestServeNeverEchoesIdPText is issue 7 §2 through the real serve path:
// token endpoints that echo the request (form body with client_secret,
// Authorization: Basic) in error_description and in an HTML page leak no
// form of the secret into logs, the audit file, gRPC errors,
// ListTenants.last_error or `broker token` output.
func TestServeNeverEchoesIdPText(t *testing.T) {
	jsonIdP, basicIdP, htmlIdP := faultidp.Start(), faultidp.Start(), faultidp.Start()
	for _, f := range []*faultidp.Server{jsonIdP, basicIdP, htmlIdP} {
		defer f.Close()
	}
	jsonIdP.SetDefault(faultidp.EchoJSON(401))
	basicIdP.SetDefault(faultidp.EchoJSON(400))
	htmlIdP.SetDefault(faultidp.EchoHTML(502))

	dir := t.TempDir()
	testpki.WriteFile(t, filepath.Join(dir, "echo.secret"), []byte(echoSecret+"\n"))
	cfg := filepath.Join(dir, "broker.yaml")
	testpki.WriteFile(t, cfg, fmt.Appendf(nil, echoConfig, jsonIdP.TokenURL(), basicIdP.TokenURL(), htmlIdP.TokenURL()))

	ctx, cancel := context.WithCancel(t.Context())
	s := &secured{t: t, logs: &logtest.Buffer{}, stdout: &logtest.Buffer{}}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", cfg, "--log-format", "json", "--log-level", "debug"}, envFunc(), s.stdout, s.logs)
	}()
	defer func() { cancel(); <-done }()
	s.addr = s.waitLog("listening", done).Addr
	api := s.dial(insecure.NewCredentials())

	outputs := map[string]*strings.Builder{}
	add := func(where, text string) {
		if outputs[where] == nil {
			outputs[where] = &strings.Builder{}
		}
		outputs[where].WriteString(text + "\n")
	}
	for _, tenant := range []string{"echo-json", "echo-basic", "echo-html"} {
		if _, err := s.get(ctx, api, tenant); err == nil {
			t.Fatalf("%s: GetToken succeeded", tenant)
		} else {
			add("gRPC errors", err.Error())
		}
		var out, errOut strings.Builder
		err := run(ctx, []string{"token", "--addr", s.addr, "--tenant", tenant, "--timeout", "10s"}, envFunc(), &out, &errOut)
		if err == nil {
			t.Fatalf("%s: broker token succeeded", tenant)
		}
		add("broker token output", out.String()+errOut.String()+err.Error())
	}
	list, err := api.ListTenants(ctx, &tbv1.ListTenantsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range list.GetTenants() {
		if tn.GetStatus().GetLastError() == "" {
			t.Errorf("%s: ListTenants shows no last_error", tn.GetName())
		}
		add("ListTenants", tn.GetStatus().GetLastError())
	}
	raw, _ := json.Marshal(list.GetTenants())
	add("ListTenants", string(raw))
	add("logs", s.logs.String())
	add("stdout", s.stdout.String())
	add("audit file", readFile(t, filepath.Join(dir, "audit.log")))

	// The capture is what we think it is: the failures are there, named.
	if got := outputs["gRPC errors"].String(); !strings.Contains(got, "invalid_client") || !strings.Contains(got, "HTTP 502: Bad Gateway, not an OAuth2 error response") {
		t.Fatalf("gRPC errors do not describe the failures:\n%s", got)
	}
	if !strings.Contains(outputs["logs"].String(), `"msg":"token request failed"`) || !strings.Contains(outputs["audit file"].String(), "echo-json") {
		t.Fatalf("logs or audit incomplete:\nlogs %s\naudit %s", outputs["logs"], outputs["audit file"])
	}
	for where, b := range outputs {
		text := b.String()
		for _, form := range echoSecretForms("echo client", echoSecret) {
			if strings.Contains(text, form) {
				t.Errorf("the %s contain the secret form %q", where, form)
			}
		}
		if strings.Contains(text, "<pre>") {
			t.Errorf("the %s contain the HTML error page", where)
		}
	}
}

// echoSecretForms are the forms in which an IdP may echo a credential.
func echoSecretForms(id, secret string) []string {
	forms := []string{secret, url.QueryEscape(secret), url.PathEscape(secret), strings.ToLower(url.QueryEscape(secret))}
	j, _ := json.Marshal(secret)
	forms = append(forms, strings.Trim(string(j), `"`))
	for _, p := range []string{secret, id + ":" + secret, url.QueryEscape(id) + ":" + url.QueryEscape(secret)} {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			forms = append(forms, enc.EncodeToString([]byte(p)))
		}
	}
	return forms
}
