package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// Identities of the secured broker's test callers.
const (
	billingSPIFFE  = "spiffe://prod/ns/billing/sa/api"
	intruderSPIFFE = "spiffe://prod/ns/intruder/sa/api"
)

// secured is a `broker serve --config` run in-process with TLS, mutual
// TLS callers, an API key caller and an audit file, against a real
// identity provider, all from a temporary directory.
type secured struct {
	t         *testing.T
	dir       string
	config    string // path of broker.yaml
	serverCA  *testpki.CA
	clientCA  *testpki.CA
	idp       *devidp.Server
	client    devidp.Client
	apiKey    string
	wrongKey  string
	logs      *logtest.Buffer // serve's stderr (JSON logs)
	stdout    *logtest.Buffer
	addr      string
	auditPath string

	mu     sync.Mutex
	tokens []string // every access token a client received
	errs   []string // every error message a client received
}

func randomKey(t *testing.T) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "tbk_" + hex.EncodeToString(b)
}

func sha256Hex(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }

// securedConfig is the config file; %[1]s is the token URL, %[2]s the
// client id, %[3]s the API key digest.
const securedConfig = `listen: 127.0.0.1:0
strict_file_permissions: true
tls:
  cert_file: server.crt
  key_file: server.key
  client_ca_file: clients.pem
tenants:
  - name: acme
    token_url: %[1]s
    client_id: %[2]s
    client_secret_file: idp.secret
  - name: team-a
    token_url: %[1]s
    client_id: %[2]s
    client_secret_file: idp.secret
  - name: hidden
    token_url: %[1]s
    client_id: %[2]s
    client_secret_file: idp.secret
callers:
  - name: billing
    spiffe_id: ` + billingSPIFFE + `
    tenants: [acme]
  - name: ci
    api_key_sha256: %[3]s
    tenants: ["team-*"]
audit:
  path: audit.log
`

func startSecured(t *testing.T) *secured {
	t.Helper()
	s := &secured{
		t: t, dir: t.TempDir(), serverCA: testpki.NewCA(t, "broker-ca"), clientCA: testpki.NewCA(t, "client-ca"),
		client: devidp.NewClient(), apiKey: randomKey(t), wrongKey: randomKey(t),
		logs: &logtest.Buffer{}, stdout: &logtest.Buffer{},
	}
	var err error
	if s.idp, err = devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{s.client}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.idp.Close() })
	s.serverCA.Server(t).WriteFiles(t, s.dir, "server")
	testpki.WriteFile(t, filepath.Join(s.dir, "clients.pem"), s.clientCA.CertPEM)
	testpki.WriteFile(t, filepath.Join(s.dir, "broker-ca.pem"), s.serverCA.CertPEM)
	testpki.WriteFile(t, filepath.Join(s.dir, "idp.secret"), []byte(s.client.Secret+"\n"))
	s.config = filepath.Join(s.dir, "broker.yaml")
	s.auditPath = filepath.Join(s.dir, "audit.log")
	s.writeConfig(fmt.Sprintf(securedConfig, s.idp.TokenURL(), s.client.ID, sha256Hex(s.apiKey)))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", s.config, "--log-format", "json", "--log-level", "debug"}, envFunc(), s.stdout, s.logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(shutdownTimeout + 5*time.Second):
			t.Error("serve did not stop")
		}
	})
	s.addr = s.waitLog("listening", done).Addr
	return s
}

func (s *secured) writeConfig(yaml string) {
	s.t.Helper()
	if err := os.WriteFile(s.config, []byte(yaml), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

type logLine struct {
	Level, Msg, Addr, Error string
}

// waitLog waits for a log line with msg; done, if not nil, reports serve
// returning early.
func (s *secured) waitLog(msg string, done <-chan error) logLine {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, ln := range strings.Split(s.logs.String(), "\n") {
			var l logLine
			if json.Unmarshal([]byte(ln), &l) == nil && l.Msg == msg {
				return l
			}
		}
		select {
		case err := <-done:
			s.t.Fatalf("serve returned %v before logging %q; logs:\n%s", err, msg, s.logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	s.t.Fatalf("no %q log line; logs:\n%s", msg, s.logs.String())
	return logLine{}
}

func (s *secured) dial(creds credentials.TransportCredentials) tbv1.TokenBrokerServiceClient {
	s.t.Helper()
	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { cc.Close() })
	return tbv1.NewTokenBrokerServiceClient(cc)
}

// tlsOnly connects over TLS without a client certificate.
func (s *secured) tlsOnly() tbv1.TokenBrokerServiceClient {
	return s.dial(credentials.NewTLS(&tls.Config{RootCAs: s.serverCA.Pool()}))
}

// withCert connects over mutual TLS with a client certificate for spiffeID.
func (s *secured) withCert(spiffeID string) tbv1.TokenBrokerServiceClient {
	c := s.clientCA.Issue(s.t, testpki.Options{CommonName: "client", URIs: []string{spiffeID}}).TLSCertificate(s.t)
	return s.dial(credentials.NewTLS(&tls.Config{RootCAs: s.serverCA.Pool(), Certificates: []tls.Certificate{c}}))
}

func bearer(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

// get calls GetToken and records what came back for the leak check.
func (s *secured) get(ctx context.Context, api tbv1.TokenBrokerServiceClient, tenant string) (*tbv1.Token, error) {
	resp, err := api.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: tenant})
	return s.record(resp.GetToken(), err)
}

func (s *secured) invalidate(ctx context.Context, api tbv1.TokenBrokerServiceClient, tenant, token string) (*tbv1.Token, error) {
	resp, err := api.InvalidateToken(ctx, &tbv1.InvalidateTokenRequest{Tenant: tenant, TokenSha256: sha256Hex(token)})
	return s.record(resp.GetToken(), err)
}

func (s *secured) record(tok *tbv1.Token, err error) (*tbv1.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tok.GetAccessToken() != "" {
		s.tokens = append(s.tokens, tok.GetAccessToken())
	}
	if err != nil {
		s.errs = append(s.errs, err.Error())
	}
	return tok, err
}

func wantStatus(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
}

// auditRecords reads the audit file.
func (s *secured) auditRecords() []audit.Record {
	s.t.Helper()
	data, err := os.ReadFile(s.auditPath)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []audit.Record
	for _, ln := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if ln == "" {
			continue
		}
		var r audit.Record
		if err := json.Unmarshal([]byte(ln), &r); err != nil {
			s.t.Fatalf("audit line %q: %v", ln, err)
		}
		out = append(out, r)
	}
	return out
}

// TestServeSecuredEndToEnd runs `serve --config` with TLS, callers and an
// audit file and calls it over real gRPC: no credentials are
// UNAUTHENTICATED, a wrong identity PERMISSION_DENIED (the same whether
// or not the tenant exists), the right identity gets its token, and every
// decision is an audit line in a 0600 file.
func TestServeSecuredEndToEnd(t *testing.T) {
	s := startSecured(t)
	ctx := t.Context()

	// Plaintext to a TLS listener does not even connect.
	_, err := s.get(ctx, s.dial(insecure.NewCredentials()), "acme")
	wantStatus(t, "plaintext", err, codes.Unavailable)

	// TLS without credentials.
	_, err = s.get(ctx, s.tlsOnly(), "acme")
	wantStatus(t, "no credentials", err, codes.Unauthenticated)

	// A verified certificate that is not a caller, and a wrong API key.
	_, err = s.get(ctx, s.withCert(intruderSPIFFE), "acme")
	wantStatus(t, "wrong identity", err, codes.PermissionDenied)
	_, err = s.get(bearer(ctx, s.wrongKey), s.tlsOnly(), "team-a")
	wantStatus(t, "wrong API key", err, codes.Unauthenticated)

	// The right identities.
	billing := s.withCert(billingSPIFFE)
	acmeTok, err := s.get(ctx, billing, "acme")
	if err != nil {
		t.Fatalf("billing → acme: %v", err)
	}
	ci := s.tlsOnly()
	teamTok, err := s.get(bearer(ctx, s.apiKey), ci, "team-a")
	if err != nil {
		t.Fatalf("ci → team-a: %v", err)
	}

	// Authenticated but not allowed: the same answer for an existing and
	// a missing tenant.
	_, errHidden := s.get(ctx, billing, "hidden")
	_, errMissing := s.get(ctx, billing, "no-such-tenant")
	wantStatus(t, "billing → hidden", errHidden, codes.PermissionDenied)
	wantStatus(t, "billing → missing", errMissing, codes.PermissionDenied)
	if a, b := status.Convert(errHidden).Message(), status.Convert(errMissing).Message(); a != strings.ReplaceAll(b, "no-such-tenant", "hidden") {
		t.Errorf("denial messages reveal whether the tenant exists:\n%s\n%s", a, b)
	}

	// ListTenants shows what each caller may use.
	for _, tc := range []struct {
		name string
		ctx  context.Context
		api  tbv1.TokenBrokerServiceClient
		want []string
	}{
		{"billing", ctx, billing, []string{"acme"}},
		{"ci", bearer(ctx, s.apiKey), ci, []string{"team-a"}},
	} {
		resp, err := tc.api.ListTenants(tc.ctx, &tbv1.ListTenantsRequest{})
		if err != nil {
			t.Fatalf("ListTenants as %s: %v", tc.name, err)
		}
		var got []string
		for _, tn := range resp.GetTenants() {
			got = append(got, tn.GetName())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("ListTenants as %s = %v, want %v", tc.name, got, tc.want)
		}
	}

	// The audit file: 0600, one line per decision, fingerprints only.
	fi, err := os.Stat(s.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("audit file mode %04o, want 0600", perm)
	}
	type line struct{ event, caller, identity, tenant, result, code, fingerprint string }
	var got []line
	for _, r := range s.auditRecords() {
		if r.Time.IsZero() || r.Method == "" || r.Peer == "" {
			t.Errorf("audit line without time, method or peer: %+v", r)
		}
		got = append(got, line{r.Event, r.Caller, r.Identity, r.Tenant, r.Result, r.Code, r.TokenFingerprint})
	}
	want := []line{
		{"deny", "", "", "", "denied", "Unauthenticated", ""},
		{"deny", "", "spiffe_id=" + intruderSPIFFE, "", "denied", "PermissionDenied", ""},
		{"deny", "", "", "", "denied", "Unauthenticated", ""},
		{"issue", "billing", "spiffe_id=" + billingSPIFFE, "acme", "ok", "", audit.Fingerprint(acmeTok.GetAccessToken())},
		{"issue", "ci", "api_key", "team-a", "ok", "", audit.Fingerprint(teamTok.GetAccessToken())},
		{"deny", "billing", "spiffe_id=" + billingSPIFFE, "hidden", "denied", "PermissionDenied", ""},
		{"deny", "billing", "spiffe_id=" + billingSPIFFE, "no-such-tenant", "denied", "PermissionDenied", ""},
	}
	if !slices.Equal(got, want) {
		t.Errorf("audit lines:\n got %v\nwant %v", got, want)
	}
	if len(audit.Fingerprint(acmeTok.GetAccessToken())) != 12 {
		t.Error("fingerprint is not 12 hex digits")
	}
}

// TestServeLeaksNothing drives the whole secured broker through issuance,
// a watch, refresh (InvalidateToken), an identity provider that rejects
// the client, and denials, and checks that no client secret, API key or
// access token appears in the logs (debug level), stdout, the audit file
// or any error or status a client received.
func TestServeLeaksNothing(t *testing.T) {
	s := startSecured(t)
	ctx := t.Context()
	ci, keyCtx := s.tlsOnly(), bearer(ctx, s.apiKey)
	billing := s.withCert(billingSPIFFE)

	// Issuance, unary and streamed.
	first, err := s.get(keyCtx, ci, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.get(ctx, billing, "acme"); err != nil {
		t.Fatal(err)
	}
	wctx, stopWatch := context.WithCancel(keyCtx)
	defer stopWatch()
	stream, err := ci.WatchToken(wctx, &tbv1.WatchTokenRequest{Tenant: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	var statuses []string
	var smu sync.Mutex
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			m, err := stream.Recv()
			if err != nil {
				s.record(nil, err)
				return
			}
			s.record(m.GetToken(), nil)
			smu.Lock()
			statuses = append(statuses, m.GetStatus().GetLastError())
			smu.Unlock()
		}
	}()

	// Refresh: the rejected token is replaced.
	second, err := s.invalidate(keyCtx, ci, "team-a", first.GetAccessToken())
	if err != nil {
		t.Fatal(err)
	}
	if second.GetAccessToken() == first.GetAccessToken() {
		t.Fatal("InvalidateToken returned the rejected token")
	}

	// Failure: the identity provider no longer knows the client.
	s.idp.RemoveClient(s.client.ID)
	_, err = s.invalidate(keyCtx, ci, "team-a", second.GetAccessToken())
	if code := status.Code(err); code != codes.FailedPrecondition && code != codes.Unavailable {
		t.Errorf("refresh with a rejected client: %v, want FAILED_PRECONDITION or UNAVAILABLE", err)
	}

	// Denials: a wrong key, a key sent as garbage, a tenant not allowed,
	// the API key of one caller with a certificate of another.
	_, err = s.get(bearer(ctx, s.wrongKey), ci, "team-a")
	wantStatus(t, "wrong key", err, codes.Unauthenticated)
	_, err = s.get(metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+s.apiKey), ci, "team-a")
	wantStatus(t, "malformed authorization", err, codes.Unauthenticated)
	_, err = s.get(keyCtx, ci, "acme")
	wantStatus(t, "ci → acme", err, codes.PermissionDenied)
	_, err = s.get(ctx, s.withCert(intruderSPIFFE), "team-a")
	wantStatus(t, "intruder", err, codes.PermissionDenied)

	stopWatch()
	<-watchDone

	needles := map[string]string{
		"client secret":      s.client.Secret,
		"API key":            s.apiKey,
		"wrong API key":      s.wrongKey,
		"server TLS key":     strings.Split(strings.TrimSpace(readFile(t, filepath.Join(s.dir, "server.key"))), "\n")[1],
		"API key (hex part)": strings.TrimPrefix(s.apiKey, "tbk_"),
	}
	s.mu.Lock()
	if len(s.tokens) < 3 {
		t.Errorf("only %d tokens seen", len(s.tokens))
	}
	for i, tok := range s.tokens {
		needles[fmt.Sprintf("access token %d", i)] = tok
		needles[fmt.Sprintf("access token %d signature", i)] = tok[strings.LastIndex(tok, ".")+1:]
	}
	errs := strings.Join(s.errs, "\n")
	s.mu.Unlock()
	smu.Lock()
	statusText := strings.Join(statuses, "\n")
	smu.Unlock()
	haystacks := map[string]string{
		"logs":                s.logs.String(),
		"stdout":              s.stdout.String(),
		"audit file":          readFile(t, s.auditPath),
		"client errors":       errs,
		"watch status errors": statusText,
	}
	if !strings.Contains(haystacks["logs"], `"msg":"finished call"`) || !strings.Contains(haystacks["logs"], `"msg":"token request failed"`) || !strings.Contains(haystacks["audit file"], `"event":"invalidate"`) || errs == "" {
		t.Fatalf("the capture is incomplete:\nlogs %d bytes, audit %q, errors %q", len(haystacks["logs"]), haystacks["audit file"], errs)
	}
	for hname, h := range haystacks {
		for nname, n := range needles {
			if n != "" && strings.Contains(h, n) {
				t.Errorf("the %s contain the %s", hname, nname)
			}
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestServeReloadRevokes: SIGHUP reloads the config; a caller whose right
// is removed is denied from then on and its open watch ends with
// PERMISSION_DENIED; a tenant newly allowed becomes visible.
func TestServeReloadRevokes(t *testing.T) {
	s := startSecured(t)
	ctx := t.Context()
	ci, keyCtx := s.tlsOnly(), bearer(ctx, s.apiKey)
	billing := s.withCert(billingSPIFFE)
	stream, err := ci.WatchToken(keyCtx, &tbv1.WatchTokenRequest{Tenant: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	// A new server certificate, picked up by the same reload.
	newCert := s.serverCA.Server(t)
	newCert.WriteFiles(t, s.dir, "server")

	// ci loses team-*, billing gains hidden.
	yaml := fmt.Sprintf(securedConfig, s.idp.TokenURL(), s.client.ID, sha256Hex(s.apiKey))
	yaml = strings.Replace(yaml, `tenants: ["team-*"]`, `tenants: [acme]`, 1)
	yaml = strings.Replace(yaml, "tenants: [acme]\n  - name: ci", "tenants: [acme, hidden]\n  - name: ci", 1)
	s.writeConfig(yaml)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	s.waitLog("config reloaded", nil)
	conn, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: s.serverCA.Pool(), NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := conn.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(newCert.Cert.SerialNumber) != 0 {
		t.Errorf("after SIGHUP the broker serves certificate %s, want the new %s", got, newCert.Cert.SerialNumber)
	}
	conn.Close()

	for {
		_, err := stream.Recv()
		if err != nil {
			wantStatus(t, "watch after revocation", err, codes.PermissionDenied)
			break
		}
	}
	_, err = s.get(keyCtx, ci, "team-a")
	wantStatus(t, "ci → team-a after reload", err, codes.PermissionDenied)
	if _, err := s.get(keyCtx, ci, "acme"); err != nil {
		t.Errorf("ci → acme after reload: %v", err)
	}
	if _, err := s.get(ctx, billing, "hidden"); err != nil {
		t.Errorf("billing → hidden after reload: %v", err)
	}

	// A broken config is refused and the running one kept.
	s.writeConfig("tenants: [\n")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if l := s.waitLog("config reload failed; keeping the running configuration", nil); !strings.Contains(l.Error, "invalid YAML") {
		t.Errorf("reload failure logged as %q", l.Error)
	}
	if _, err := s.get(ctx, billing, "hidden"); err != nil {
		t.Errorf("billing → hidden after a failed reload: %v", err)
	}
}

// TestBrokerTokenClientFlags runs `broker token` against the secured
// broker: with no credentials, a wrong identity and the right ones.
func TestBrokerTokenClientFlags(t *testing.T) {
	s := startSecured(t)
	ca := filepath.Join(s.dir, "broker-ca.pem")
	s.clientCA.Issue(t, testpki.Options{CommonName: "billing", URIs: []string{billingSPIFFE}}).WriteFiles(t, s.dir, "billing")
	s.clientCA.Issue(t, testpki.Options{CommonName: "intruder", URIs: []string{intruderSPIFFE}}).WriteFiles(t, s.dir, "intruder")
	keyFile := filepath.Join(s.dir, "ci.key")
	testpki.WriteFile(t, keyFile, []byte(s.apiKey+"\n"))
	wrongKeyFile := filepath.Join(s.dir, "wrong.key")
	testpki.WriteFile(t, wrongKeyFile, []byte(s.wrongKey+"\n"))

	tokenCmd := func(args ...string) (string, error) {
		var out, errOut strings.Builder
		err := run(t.Context(), append([]string{"token", "--addr", s.addr, "--timeout", "10s"}, args...), envFunc(), &out, &errOut)
		if strings.Contains(errOut.String(), s.apiKey) || err != nil && strings.Contains(err.Error(), s.apiKey) {
			t.Error("broker token printed the API key")
		}
		return strings.TrimSpace(out.String()), err
	}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string // prefix; "" for success
	}{
		{"no credentials", []string{"--tenant", "acme", "--tls-ca", ca}, "token: Unauthenticated: no credentials"},
		{"plaintext to TLS", []string{"--tenant", "acme"}, "token: Unavailable: "},
		{"wrong identity", []string{"--tenant", "acme", "--tls-ca", ca, "--tls-cert", filepath.Join(s.dir, "intruder.crt"), "--tls-key", filepath.Join(s.dir, "intruder.key")},
			"token: PermissionDenied: spiffe_id=" + intruderSPIFFE + " is not a caller in this broker's policy"},
		{"wrong API key", []string{"--tenant", "team-a", "--tls-ca", ca, "--api-key-file", wrongKeyFile}, "token: Unauthenticated: API key not recognised"},
		{"right certificate, other tenant", []string{"--tenant", "team-a", "--tls-ca", ca, "--tls-cert", filepath.Join(s.dir, "billing.crt"), "--tls-key", filepath.Join(s.dir, "billing.key")},
			`token: PermissionDenied: caller "billing" may not use tenant "team-a"`},
		{"right certificate", []string{"--tenant", "acme", "--tls-ca", ca, "--tls-cert", filepath.Join(s.dir, "billing.crt"), "--tls-key", filepath.Join(s.dir, "billing.key")}, ""},
		{"right API key", []string{"--tenant", "team-a", "--tls-ca", ca, "--tls-server-name", "localhost", "--api-key-file", keyFile}, ""},
		{"cert without key", []string{"--tenant", "acme", "--tls-cert", filepath.Join(s.dir, "billing.crt")}, "token: --tls-cert and --tls-key go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := tokenCmd(tc.args...)
			if tc.wantErr == "" {
				if err != nil || strings.Count(out, ".") != 2 {
					t.Fatalf("got %q, %v; want a JWT", out, err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want prefix %q", err, tc.wantErr)
			}
		})
	}
}

func TestBrokerTokenAPIKeyNeedsTLSOffLoopback(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "k")
	testpki.WriteFile(t, keyFile, []byte("tbk_secret-key-value\n"))
	err := run(t.Context(), []string{"token", "--addr", "broker.example.com:50051", "--api-key-file", keyFile}, envFunc(), io.Discard, io.Discard)
	want := "token: --api-key-file: broker.example.com:50051 is not a loopback address, and without TLS the key would cross the network in clear text; add --tls-ca (or --tls)"
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
}

// TestServeConfigSecurityRefusals: what `serve --config` refuses, and
// the permission warnings it logs.
func TestServeConfigSecurityRefusals(t *testing.T) {
	dir := t.TempDir()
	testpki.WriteFile(t, filepath.Join(dir, "acme.secret"), []byte("FAKE-serve-secret-value\n"))
	testpki.WriteFile(t, filepath.Join(dir, "open.secret"), []byte("FAKE-serve-secret-value\n"))
	if err := os.Chmod(filepath.Join(dir, "open.secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	const tenant = "tenants:\n  - name: acme\n    token_url: %s\n    client_id: id\n    client_secret_file: %s\n"
	const key = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, yaml, want string
		wantIs           error
	}{
		{
			name:   "insecure token_url",
			yaml:   fmt.Sprintf(tenant, "http://idp.example.com/token", "acme.secret"),
			want:   "config: DIR/c.yaml:3: tenants[0].token_url: insecure upstream URL http://idp.example.com/token: http sends the client secret in clear text; use https, or set allow_insecure_http: true on the tenant if the network is trusted",
			wantIs: upstream.ErrInsecureURL,
		},
		{
			name: "world-readable secret with strict_file_permissions",
			yaml: "strict_file_permissions: true\n" + fmt.Sprintf(tenant, "https://idp.example.com/token", "open.secret"),
			want: "config: DIR/c.yaml:6: tenants[0].client_secret_file: DIR/open.secret has mode 0644: group or others can read it; it holds secrets, so run chmod 600 DIR/open.secret (or set defaultMode: 0400 on a Kubernetes secret volume) (strict_file_permissions is true)",
		},
		{
			name: "bad tenant glob, found by the policy, reported at its line",
			yaml: fmt.Sprintf(tenant, "https://idp.example.com/token", "acme.secret") + "callers:\n  - name: ci\n    api_key_sha256: " + key + "\n    tenants:\n      - acme\n      - 'team a'\n",
			want: `config: DIR/c.yaml:11: callers[0].tenants[1]: "team a": pattern has a space or non-printable character`,
		},
		{
			name: "same API key twice, found by the policy",
			yaml: fmt.Sprintf(tenant, "https://idp.example.com/token", "acme.secret") + "callers:\n  - name: a\n    api_key_sha256: " + key + "\n    tenants: [acme]\n  - name: b\n    api_key_sha256: " + strings.ToUpper(key) + "\n    tenants: [acme]\n",
			want: `config: DIR/c.yaml:11: callers[1].api_key_sha256: caller "b" has the same API key as caller "a"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			err := run(t.Context(), []string{"serve", "--config", write("c.yaml", tc.yaml)}, envFunc(), io.Discard, &stderr)
			want := strings.ReplaceAll(tc.want, "DIR", dir)
			if err == nil || err.Error() != want {
				t.Fatalf("error:\n got %v\nwant %s", err, want)
			}
			if _, ok := errors.AsType[*config.Error](err); !ok {
				t.Errorf("error is %T, want *config.Error", err)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("errors.Is(err, %v) = false", tc.wantIs)
			}
			if strings.Contains(err.Error()+stderr.String(), "FAKE-serve-secret-value") {
				t.Error("the secret appears in the output")
			}
		})
	}

	// Without strict_file_permissions the same file is a warning at start.
	client := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	cfg := write("warn.yaml", "listen: 127.0.0.1:0\n"+fmt.Sprintf(tenant, idp.TokenURL(), "open.secret"))
	ctx, cancel := context.WithCancel(t.Context())
	logs := &logtest.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", cfg, "--log-format", "json"}, envFunc(), io.Discard, logs)
	}()
	s := &secured{t: t, logs: logs}
	s.waitLog("listening", done)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var warned, openWarned bool
	for _, ln := range strings.Split(logs.String(), "\n") {
		var l struct{ Level, Msg, File, Field string }
		if json.Unmarshal([]byte(ln), &l) != nil {
			continue
		}
		if l.Level == "WARN" && strings.HasPrefix(l.Msg, "secret file readable by group or others") && l.File == filepath.Join(dir, "open.secret") && l.Field == "tenants[0].client_secret_file" {
			warned = true
		}
		if l.Level == "WARN" && strings.HasPrefix(l.Msg, "NO CALLERS CONFIGURED") {
			openWarned = true
		}
	}
	if !warned || !openWarned {
		t.Errorf("permission warning %v, no-callers warning %v; logs:\n%s", warned, openWarned, logs.String())
	}
	if strings.Contains(logs.String(), "FAKE-serve-secret-value") {
		t.Error("the secret appears in the logs")
	}
}

// TestServeOpenModeLoopbackOnly: without callers the broker serves
// loopback plaintext clients without authentication.
func TestServeOpenModeLoopbackOnly(t *testing.T) {
	client := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	dir := t.TempDir()
	testpki.WriteFile(t, filepath.Join(dir, "s"), []byte(client.Secret))
	cfg := filepath.Join(dir, "c.yaml")
	testpki.WriteFile(t, cfg, fmt.Appendf(nil, "listen: 127.0.0.1:0\ntenants:\n  - name: acme\n    token_url: %s\n    client_id: %s\n    client_secret_file: s\n", idp.TokenURL(), client.ID))
	ctx, cancel := context.WithCancel(t.Context())
	s := &secured{t: t, logs: &logtest.Buffer{}, stdout: &logtest.Buffer{}}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", cfg, "--log-format", "json"}, envFunc(), s.stdout, s.logs)
	}()
	defer func() { cancel(); <-done }()
	s.addr = s.waitLog("listening", done).Addr
	tok, err := s.get(ctx, s.dial(insecure.NewCredentials()), "acme")
	if err != nil {
		t.Fatal(err)
	}
	// Without audit.path the audit trail goes to stdout.
	var r audit.Record
	if err := json.Unmarshal([]byte(strings.TrimSpace(s.stdout.String())), &r); err != nil {
		t.Fatalf("stdout %q: %v", s.stdout.String(), err)
	}
	if r.Event != audit.EventIssue || r.Caller != "loopback" || r.Tenant != "acme" || r.TokenFingerprint != audit.Fingerprint(tok.GetAccessToken()) {
		t.Errorf("audit line on stdout = %+v", r)
	}
}
