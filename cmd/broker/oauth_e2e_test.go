package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"github.com/tokenbroker/tokenbroker/internal/test/pyclient"
)

// oauthE2EConfig runs the dev broker with the token endpoint and one
// API-key caller; %s is the key's SHA-256.
const oauthE2EConfig = `listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
shutdown:
  drain: 0s
oauth:
  listen: 127.0.0.1:0
tenants:
  - name: unreachable
    token_url: http://127.0.0.1:1/token
    client_id: id
    client_secret_file: s
callers:
  - name: ci
    api_key_sha256: %s
    tenants: [demo]
`

// listenAddrs reads the broker's JSON log until it reports its
// addresses: gRPC and the token endpoint.
func listenAddrs(t *testing.T, logs io.Reader) (grpcAddr, oauthAddr string) {
	t.Helper()
	sc := bufio.NewScanner(logs)
	for sc.Scan() {
		var line struct{ Msg, Addr, OAuth string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
			go func() { _, _ = io.Copy(io.Discard, logs) }() // keep the pipe flowing
			return line.Addr, line.OAuth
		}
	}
	t.Fatalf("broker exited before listening: %v", sc.Err())
	return "", ""
}

// oauthBroker is the binary serving oauthE2EConfig.
type oauthBroker struct {
	srv                *exec.Cmd
	exited             chan error
	grpcAddr, base     string // base: the token endpoint's http://host:port
	audit, logs        *logtest.Buffer
	key, token, tokSum string // the caller's API key; the token gRPC hands out, and its SHA-256
}

// startOAuthBroker runs `serve --dev --config` with oauthE2EConfig and
// gets the demo tenant's token over gRPC with `broker token`.
func startOAuthBroker(t *testing.T) *oauthBroker {
	t.Helper()
	tools, err := e2eTools()
	if err != nil {
		t.Fatal(err)
	}
	b := &oauthBroker{key: "tbk_e2e_6f1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c", audit: &logtest.Buffer{}, logs: &logtest.Buffer{}, exited: make(chan error, 1)}
	dir := t.TempDir()
	writeFile(t, dir, "s", "FAKE-e2e-secret\n")
	writeFile(t, dir, "broker.yaml", fmt.Sprintf(oauthE2EConfig, fmt.Sprintf("%x", sha256.Sum256([]byte(b.key)))))
	b.srv = exec.Command(tools["broker"], "serve", "--dev", "--config", filepath.Join(dir, "broker.yaml"), "--log-format", "json")
	b.srv.Env = append(os.Environ(), "KOGNIC_CREDENTIALS=", "KOGNIC_CLIENT_ID=", "KOGNIC_CLIENT_SECRET=")
	stderr, err := b.srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	b.srv.Stdout = b.audit
	if err := b.srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if b.srv.ProcessState == nil {
			_ = b.srv.Process.Kill()
		}
	})
	var oauthAddr string
	b.grpcAddr, oauthAddr = listenAddrs(t, io.TeeReader(stderr, b.logs))
	go func() { b.exited <- b.srv.Wait() }()
	if oauthAddr == "" {
		t.Fatal("the listening line names no oauth address")
	}
	b.base = "http://" + oauthAddr
	out, err := exec.CommandContext(t.Context(), tools["broker"], "token", "--addr", b.grpcAddr, "--tenant", "demo", "--api-key-file", writeFile(t, dir, "key", b.key)).Output()
	if err != nil {
		t.Fatalf("broker token: %v", err)
	}
	b.token = strings.TrimSpace(string(out))
	b.tokSum = fmt.Sprintf("%x", sha256.Sum256([]byte(b.token)))
	return b
}

// stop sends SIGTERM and waits for a clean exit.
func (b *oauthBroker) stop(t *testing.T) {
	_ = b.srv.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-b.exited:
		if err != nil {
			t.Errorf("broker exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("broker did not exit after SIGTERM")
	}
}

// TestOAuthEndToEnd runs the real binary with oauth.listen and gets the
// dev tenant's token through it with curl (Basic and form), Go's
// x/oauth2 and Python's clients (kognic-auth's session with
// KOGNIC_AUTH_SERVER pointing at the broker): the same token `broker
// token` gets over gRPC, each with its audit line; then SIGTERM.
func TestOAuthEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	b := startOAuthBroker(t)
	t.Run("curl", func(t *testing.T) {
		curl, err := exec.LookPath("curl")
		if err != nil {
			t.Skip("curl is not installed (.ci/run installs it)")
		}
		for _, args := range [][]string{
			{"-u", "demo:" + b.key, "-d", "grant_type=client_credentials", b.base + "/oauth2/token"},
			{"-d", "grant_type=client_credentials&client_id=demo&client_secret=" + b.key, b.base + "/v1/auth/oauth/token"},
		} {
			out, err := exec.CommandContext(t.Context(), curl, append([]string{"-sS", "--fail-with-body"}, args...)...).Output()
			var got struct {
				AccessToken string `json:"access_token"`
				TokenType   string `json:"token_type"`
			}
			if err != nil || json.Unmarshal(out, &got) != nil || got.AccessToken != b.token || got.TokenType != "Bearer" {
				t.Errorf("curl %s: %v, the gRPC token: %v", args[0], err, got.AccessToken == b.token)
			}
		}
	})
	t.Run("x/oauth2", func(t *testing.T) {
		tok, err := (&clientcredentials.Config{ClientID: "demo", ClientSecret: b.key, TokenURL: b.base + "/oauth2/token"}).Token(t.Context())
		if err != nil || tok.AccessToken != b.token || time.Until(tok.Expiry) < 50*time.Minute {
			t.Errorf("x/oauth2: %v, the gRPC token: %v", err, err == nil && tok.AccessToken == b.token)
		}
	})
	for _, c := range pyclient.Clients {
		t.Run(c.Name, func(t *testing.T) {
			got := pyclient.Run(t, c.Name, b.base, "demo", b.key, "tbk_wrong")
			if got.TokenSHA256 != b.tokSum || got.WrongKey != "invalid_client" {
				t.Errorf("%s: %+v, want the gRPC token (sha256 %s…) and invalid_client for a wrong key", c.Name, got, b.tokSum[:12])
			}
		})
	}
	t.Run("GET", func(t *testing.T) {
		resp, err := http.Get(b.base + "/oauth2/token")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
			t.Errorf("GET: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
		}
	})
	b.stop(t)
	audit := b.audit.String()
	if n := strings.Count(audit, `"method":"POST /oauth2/token"`) + strings.Count(audit, `"method":"POST /v1/auth/oauth/token"`); n < 4 {
		t.Errorf("%d audit lines of the token endpoint, want one per request:\n%s", n, audit)
	}
	logtest.AssertNone(t, map[string]string{"logs": b.logs.String(), "audit": audit}, map[string]string{"token": b.token, "API key": b.key})
}
