package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestHydraRecipe runs the README's Ory Hydra recipe against a real Hydra
// (opt-in: TOKENBROKER_HYDRA=/path/to/hydra, a v2 binary built with
// -tags sqlite; it runs with DSN=memory on loopback): the client is
// imported with the JWKS `broker keys` prints, and `broker token` gets a
// token that Hydra's introspection attributes to the client. A rotation
// whose new key Hydra does not know yet falls back to the old one (Hydra
// answers invalid_request there).
func TestHydraRecipe(t *testing.T) {
	hydra := os.Getenv("TOKENBROKER_HYDRA")
	if hydra == "" {
		t.Skip("set TOKENBROKER_HYDRA to an Ory Hydra v2 binary (go build -tags sqlite in its module) to run the README's recipe")
	}
	tools, err := e2eTools()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	public, admin := freePort(t), freePort(t)
	issuer := "http://127.0.0.1:" + public
	srv := exec.Command(hydra, "serve", "all", "--dev", "--sqa-opt-out")
	srv.Env = append(os.Environ(), "DSN=memory", "SECRETS_SYSTEM=tokenbroker-hydra-recipe-test-secret",
		"URLS_SELF_ISSUER="+issuer, "SERVE_PUBLIC_HOST=127.0.0.1", "SERVE_PUBLIC_PORT="+public,
		"SERVE_ADMIN_HOST=127.0.0.1", "SERVE_ADMIN_PORT="+admin)
	var hydraLog bytes.Buffer
	srv.Stdout, srv.Stderr = &hydraLog, &hydraLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	waitHTTP(t, "http://127.0.0.1:"+admin+"/health/ready", &hydraLog)

	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	next, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader) // ES256 too: Hydra checks the alg before the kid
	writeKey(t, dir, "acme.pem", ec, 0o600)
	writeKey(t, dir, "next.pem", next, 0o600)
	cfg := writeFile(t, dir, "broker.yaml", fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
audit: {path: audit.log}
tenants:
  - name: acme
    token_url: %[1]s/oauth2/token
    client_id: acme-broker
    auth_style: private_key_jwt
    client_assertion_key_file: acme.pem
    scopes: [read]
  - name: rotating
    token_url: %[1]s/oauth2/token
    client_id: acme-broker
    auth_style: private_key_jwt
    client_assertion_key_files: [next.pem, acme.pem]
    scopes: [read]
`, issuer))
	run := func(stdin string, name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), name, args...)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %v: %v\n%s%s", filepath.Base(name), args, err, out.String(), errOut.String())
		}
		return out.String()
	}
	// The README's registration, word for word but for the endpoint.
	jwks := run("", tools["broker"], "keys", "--config", cfg, "--tenant", "acme")
	client := fmt.Sprintf(`[{"client_id": "acme-broker", "grant_types": ["client_credentials"], "scope": "read",
  "token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "ES256", "jwks": %s}]`, jwks)
	run(client, hydra, "import", "oauth2-client", "--endpoint", "http://127.0.0.1:"+admin)

	b := exec.Command(tools["broker"], "serve", "--config", cfg, "--log-format", "json")
	stderr, err := b.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Process.Kill(); _ = b.Wait() })
	addr := listenAddr(t, stderr)
	for _, tenant := range []string{"acme", "rotating"} {
		tok := strings.TrimSpace(run("", tools["broker"], "token", "--addr", addr, "--tenant", tenant))
		var in struct {
			Active   bool   `json:"active"`
			ClientID string `json:"client_id"`
		}
		if err := json.Unmarshal([]byte(run("", hydra, "introspect", "token", "--endpoint", "http://127.0.0.1:"+admin, "--format", "json", tok)), &in); err != nil || !in.Active || in.ClientID != "acme-broker" {
			t.Errorf("%s: introspection %+v (%v), want an active token of acme-broker", tenant, in, err)
		}
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// waitHTTP polls url until it answers 200 (another process: polling is
// the only signal).
func waitHTTP(t *testing.T, url string, log *bytes.Buffer) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200: %v\n%s", url, err, log.String())
		}
	}
}
