package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// TestPrivateKeyJWTEndToEnd runs the binary with a private_key_jwt tenant
// against the dev IdP, which knows the client only by the JWKS that
// `broker keys` printed: GetToken works, a rotated key file is picked up
// by the file watch, and neither the logs nor the audit trail hold a key
// or an assertion (or any JWT).
func TestPrivateKeyJWTEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	tools, err := e2eTools()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key2, _ := rsa.GenerateKey(rand.Reader, 2048)
	writeKey(t, dir, "acme.pem", key1, 0o600)
	writeKey(t, dir, "next.pem", key2, 0o600)
	idp, err := devidp.Start(t.Context(), devidp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	cfg := writeFile(t, dir, "broker.yaml", fmt.Sprintf(`listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
shutdown:
  drain: 0s
strict_file_permissions: true
audit:
  path: audit.log
tenants:
  - name: acme
    token_url: %s
    client_id: acme-jwt
    auth_style: private_key_jwt
    client_assertion_key_file: acme.pem
`, idp.TokenURL()))
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), tools[name], args...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, errOut.String())
		}
		return out.String()
	}

	// Register the public key as an operator would: broker keys' output.
	if err := idp.AddClient(devidp.Client{ID: "acme-jwt", JWKS: []byte(run("broker", "keys", "--config", cfg, "--tenant", "acme"))}); err != nil {
		t.Fatal(err)
	}
	srv := exec.Command(tools["broker"], "serve", "--config", cfg, "--log-format", "json", "--log-level", "debug")
	srv.Env = append(os.Environ(), "KOGNIC_CREDENTIALS=", "KOGNIC_CLIENT_ID=", "KOGNIC_CLIENT_SECRET=")
	stderr, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if srv.ProcessState == nil {
			_ = srv.Process.Kill()
			_ = srv.Wait()
		}
	})
	addr := listenAddr(t, io.TeeReader(stderr, logs))
	getToken := func() string {
		t.Helper()
		var resp struct{ Token struct{ AccessToken string } }
		out := run("grpcurl", "-plaintext", "-d", `{"tenant":"acme"}`, addr, "tokenbroker.v1.TokenBrokerService/GetToken")
		if err := json.Unmarshal([]byte(out), &resp); err != nil {
			t.Fatalf("GetToken: %v", err)
		}
		return resp.Token.AccessToken
	}

	tok1 := getToken()
	if c := claims(t, tok1); c["sub"] != "acme-jwt" || idp.IssuedFor("acme-jwt") != 1 {
		t.Fatalf("token for %v, %d issued; want one token for acme-jwt", c["sub"], idp.IssuedFor("acme-jwt"))
	}

	// Rotate: the IdP now knows only the new key, and the key file is
	// replaced (atomically, as Kubernetes does): the broker re-reads it and
	// signs with the new key at once.
	if err := idp.AddClient(devidp.Client{ID: "acme-jwt", JWKS: []byte(run("broker", "keys", "--key-file", filepath.Join(dir, "next.pem")))}); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "next.pem"), filepath.Join(dir, "acme.pem")); err != nil {
		t.Fatal(err)
	}
	tok2 := tok1
	for deadline := time.Now().Add(15 * time.Second); tok2 == tok1; tok2 = getToken() {
		if time.Now().After(deadline) {
			t.Fatalf("the broker kept the old token after the key file changed; logs:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond) // another process: polling is the only signal
	}
	if idp.IssuedFor("acme-jwt") != 2 || !strings.Contains(logs.String(), `"msg":"configuration re-read"`) {
		t.Errorf("%d tokens issued, re-read logged %v; want 2 and the re-read", idp.IssuedFor("acme-jwt"), strings.Contains(logs.String(), "configuration re-read"))
	}

	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := srv.Wait(); err != nil {
		t.Errorf("broker exited with %v", err)
	}
	audit := auditFingerprints(t, filepath.Join(dir, "audit.log"), tok1, tok2)
	noKeyOrJWT(t, logs.String()+audit, privateForms(key1), privateForms(key2))
}

// auditFingerprints checks that the audit file has a line with the
// fingerprint of each token, and returns the file.
func auditFingerprints(t *testing.T, path string, tokens ...string) string {
	t.Helper()
	audit, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var issued []string
	for sc := bufio.NewScanner(bytes.NewReader(audit)); sc.Scan(); {
		var line struct {
			Tenant           string
			TokenFingerprint string `json:"token_fingerprint"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		issued = append(issued, line.TokenFingerprint)
	}
	for _, tok := range tokens {
		if !strings.Contains(strings.Join(issued, " "), broker.Fingerprint(tok)[:12]) {
			t.Errorf("no audit line with the fingerprint of a token handed out; audit:\n%s", audit)
		}
	}
	return string(audit)
}

// noKeyOrJWT checks that text holds no JWT of any kind (an assertion, a
// token), no PEM and none of the private numbers.
func noKeyOrJWT(t *testing.T, text string, private ...[]string) {
	t.Helper()
	if jws := regexp.MustCompile(`eyJ[\w-]+\.[\w-]+\.`).FindString(text); jws != "" {
		t.Errorf("logs or audit hold a JWT (%s…)", jws[:12])
	}
	for _, bad := range append([]string{"PRIVATE KEY", "client_assertion="}, slices.Concat(private...)...) {
		if i := strings.Index(text, bad); i >= 0 {
			t.Errorf("logs or audit hold %q: …%s…", bad[:min(len(bad), 12)], text[max(0, i-200):i])
		}
	}
}
