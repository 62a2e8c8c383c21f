package daemon_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

func TestMain(m *testing.M) {
	if os.Getenv(socketClientEnv) != "" {
		os.Exit(socketClient())
	}
	if path := os.Getenv(socketServerEnv); path != "" {
		os.Exit(socketServer(path))
	}
	if dir := os.Getenv(socketRacerEnv); dir != "" {
		os.Exit(socketRacer(dir))
	}
	goleak.VerifyTestMain(m)
}

func jsonLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newFromFile loads the config at path and creates a daemon as `broker
// serve --config` does, returning the first error; the daemon is closed.
func newFromFile(path string, logs io.Writer) error {
	cfg, err := config.LoadWith(path, config.Options{Logger: jsonLogger(logs)})
	if err != nil {
		return err
	}
	cfg.Admin.Listen = "127.0.0.1:0" // tests run in parallel
	d, err := daemon.New(cfg, daemon.Options{Logger: jsonLogger(logs)})
	if err != nil {
		return err
	}
	return d.Close()
}

// runFile runs the daemon of the config at path until the test ends.
func runFile(t *testing.T, path string, logs, stdout io.Writer) *daemon.Daemon {
	t.Helper()
	cfg, err := config.LoadWith(path, config.Options{Logger: jsonLogger(logs)})
	if err != nil {
		t.Fatal(err)
	}
	return brokertest.Run(t, cfg, daemon.Options{Logger: jsonLogger(logs), AuditOutput: stdout})
}

// api is a plaintext client of d.
func api(t *testing.T, d *daemon.Daemon) tbv1.TokenBrokerServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(d.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return tbv1.NewTokenBrokerServiceClient(cc)
}

func healthClient(s *brokertest.Secured, creds credentials.TransportCredentials) healthpb.HealthClient {
	return healthpb.NewHealthClient(s.Dial(creds))
}

// TestServeSecuredEndToEnd runs `serve --config` with TLS, callers and an
// audit file and calls it over real gRPC: no credentials are
// UNAUTHENTICATED, a wrong identity PERMISSION_DENIED (the same whether
// or not the tenant exists), the right identity gets its token, and every
// decision is an audit line in a 0600 file.
func TestServeSecuredEndToEnd(t *testing.T) {
	s := brokertest.StartSecured(t)
	ctx := t.Context()

	// Plaintext to a TLS listener does not even connect.
	_, err := s.Get(ctx, s.API(insecure.NewCredentials()), "acme")
	brokertest.WantStatus(t, "plaintext", err, codes.Unavailable)

	// TLS without credentials.
	_, err = s.Get(ctx, s.API(s.TLSOnly()), "acme")
	brokertest.WantStatus(t, "no credentials", err, codes.Unauthenticated)

	// A verified certificate that is not a caller, and a wrong API key.
	_, err = s.Get(ctx, s.API(s.WithCert(brokertest.IntruderSPIFFE)), "acme")
	brokertest.WantStatus(t, "wrong identity", err, codes.PermissionDenied)
	_, err = s.Get(brokertest.Bearer(ctx, s.WrongKey), s.API(s.TLSOnly()), "team-a")
	brokertest.WantStatus(t, "wrong API key", err, codes.Unauthenticated)

	// The right identities.
	billing := s.API(s.WithCert(brokertest.BillingSPIFFE))
	acmeTok, err := s.Get(ctx, billing, "acme")
	if err != nil {
		t.Fatalf("billing → acme: %v", err)
	}
	ci := s.API(s.TLSOnly())
	teamTok, err := s.Get(brokertest.Bearer(ctx, s.APIKey), ci, "team-a")
	if err != nil {
		t.Fatalf("ci → team-a: %v", err)
	}

	// Authenticated but not allowed: the same answer for an existing and
	// a missing tenant.
	_, errHidden := s.Get(ctx, billing, "hidden")
	_, errMissing := s.Get(ctx, billing, "no-such-tenant")
	brokertest.WantStatus(t, "billing → hidden", errHidden, codes.PermissionDenied)
	brokertest.WantStatus(t, "billing → missing", errMissing, codes.PermissionDenied)
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
		{"ci", brokertest.Bearer(ctx, s.APIKey), ci, []string{"team-a"}},
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
	fi, err := os.Stat(s.AuditPath)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("audit file mode %04o, want 0600", perm)
	}
	type line struct{ event, caller, identity, tenant, result, code, fingerprint string }
	var got []line
	for _, r := range s.AuditRecords() {
		if r.Time.IsZero() || r.Method == "" || r.Peer == "" {
			t.Errorf("audit line without time, method or peer: %+v", r)
		}
		got = append(got, line{r.Event, r.Caller, r.Identity, r.Tenant, r.Result, r.Code, r.TokenFingerprint})
	}
	want := []line{
		{"deny", "", "", "", "denied", "Unauthenticated", ""},
		{"deny", "", "spiffe_id=" + brokertest.IntruderSPIFFE, "", "denied", "PermissionDenied", ""},
		{"deny", "", "", "", "denied", "Unauthenticated", ""},
		{"issue", "billing", "spiffe_id=" + brokertest.BillingSPIFFE, "acme", "ok", "", audit.Fingerprint(acmeTok.GetAccessToken())},
		{"issue", "ci", "api_key", "team-a", "ok", "", audit.Fingerprint(teamTok.GetAccessToken())},
		{"deny", "billing", "spiffe_id=" + brokertest.BillingSPIFFE, "hidden", "denied", "PermissionDenied", ""},
		{"deny", "billing", "spiffe_id=" + brokertest.BillingSPIFFE, "no-such-tenant", "denied", "PermissionDenied", ""},
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
	s := brokertest.StartSecured(t)
	ctx := t.Context()
	ci, keyCtx := s.API(s.TLSOnly()), brokertest.Bearer(ctx, s.APIKey)
	billing := s.API(s.WithCert(brokertest.BillingSPIFFE))

	// Issuance, unary and streamed.
	first, err := s.Get(keyCtx, ci, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, billing, "acme"); err != nil {
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
				s.Record(nil, err)
				return
			}
			s.Record(m.GetToken(), nil)
			smu.Lock()
			statuses = append(statuses, m.GetStatus().GetLastError())
			smu.Unlock()
		}
	}()

	// Refresh: the rejected token is replaced.
	second, err := s.Invalidate(keyCtx, ci, "team-a", first.GetAccessToken())
	if err != nil {
		t.Fatal(err)
	}
	if second.GetAccessToken() == first.GetAccessToken() {
		t.Fatal("InvalidateToken returned the rejected token")
	}

	// Failure: the identity provider no longer knows the client. (A second
	// forced refresh of the same key within 5 s would be rate limited, so
	// a new scope set makes the failing request.)
	s.IdP.RemoveClient(s.Client.ID)
	resp, err := ci.GetToken(keyCtx, &tbv1.GetTokenRequest{Tenant: "team-a", Scopes: []string{"after-revocation"}})
	_, err = s.Record(resp.GetToken(), err)
	if code := status.Code(err); code != codes.FailedPrecondition && code != codes.Unavailable {
		t.Errorf("request with a rejected client: %v, want FAILED_PRECONDITION or UNAVAILABLE", err)
	}

	// Denials: a wrong key, a key sent as garbage, a tenant not allowed,
	// the API key of one caller with a certificate of another.
	_, err = s.Get(brokertest.Bearer(ctx, s.WrongKey), ci, "team-a")
	brokertest.WantStatus(t, "wrong key", err, codes.Unauthenticated)
	_, err = s.Get(metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+s.APIKey), ci, "team-a")
	brokertest.WantStatus(t, "malformed authorization", err, codes.Unauthenticated)
	_, err = s.Get(keyCtx, ci, "acme")
	brokertest.WantStatus(t, "ci → acme", err, codes.PermissionDenied)
	_, err = s.Get(ctx, s.API(s.WithCert(brokertest.IntruderSPIFFE)), "team-a")
	brokertest.WantStatus(t, "intruder", err, codes.PermissionDenied)

	stopWatch()
	<-watchDone

	needles := map[string]string{
		"client secret":      s.Client.Secret,
		"API key":            s.APIKey,
		"wrong API key":      s.WrongKey,
		"server TLS key":     strings.Split(strings.TrimSpace(readFile(t, filepath.Join(s.Dir, "server.key"))), "\n")[1],
		"API key (hex part)": strings.TrimPrefix(s.APIKey, "tbk_"),
	}
	tokens, errList := s.Seen()
	if len(tokens) < 3 {
		t.Errorf("only %d tokens seen", len(tokens))
	}
	for i, tok := range tokens {
		needles[fmt.Sprintf("access token %d", i)] = tok
		needles[fmt.Sprintf("access token %d signature", i)] = tok[strings.LastIndex(tok, ".")+1:]
	}
	errs := strings.Join(errList, "\n")
	smu.Lock()
	statusText := strings.Join(statuses, "\n")
	smu.Unlock()
	haystacks := map[string]string{
		"logs":                s.Logs.String(),
		"stdout":              s.Stdout.String(),
		"audit file":          readFile(t, s.AuditPath),
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
	s := brokertest.StartSecured(t)
	ctx := t.Context()
	ci, keyCtx := s.API(s.TLSOnly()), brokertest.Bearer(ctx, s.APIKey)
	billing := s.API(s.WithCert(brokertest.BillingSPIFFE))
	stream, err := ci.WatchToken(keyCtx, &tbv1.WatchTokenRequest{Tenant: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	// A new server certificate, picked up by the same reload.
	newCert := s.ServerCA.Server(t)
	newCert.WriteFiles(t, s.Dir, "server")

	// ci loses team-*, billing gains hidden.
	yaml := fmt.Sprintf(brokertest.SecuredConfig, s.IdP.TokenURL(), s.Client.ID, brokertest.SHA256Hex(s.APIKey))
	yaml = strings.Replace(yaml, `tenants: ["team-*"]`, `tenants: [acme]`, 1)
	yaml = strings.Replace(yaml, "tenants: [acme]\n  - name: ci", "tenants: [acme, hidden]\n  - name: ci", 1)
	s.WriteConfig(yaml)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", s.Addr, &tls.Config{RootCAs: s.ServerCA.Pool(), NextProtos: []string{"h2"}})
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
			brokertest.WantStatus(t, "watch after revocation", err, codes.PermissionDenied)
			break
		}
	}
	_, err = s.Get(keyCtx, ci, "team-a")
	brokertest.WantStatus(t, "ci → team-a after reload", err, codes.PermissionDenied)
	if _, err := s.Get(keyCtx, ci, "acme"); err != nil {
		t.Errorf("ci → acme after reload: %v", err)
	}
	if _, err := s.Get(ctx, billing, "hidden"); err != nil {
		t.Errorf("billing → hidden after reload: %v", err)
	}

	// A broken config is refused and the running one kept.
	s.WriteConfig("tenants: [\n")
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "invalid YAML") {
		t.Errorf("reload of a broken config = %v", err)
	}
	if _, err := s.Get(ctx, billing, "hidden"); err != nil {
		t.Errorf("billing → hidden after a failed reload: %v", err)
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
			err := newFromFile(write("c.yaml", tc.yaml), &stderr)
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
	logs := &logtest.Buffer{}
	runFile(t, cfg, logs, io.Discard)
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
	stdout := &logtest.Buffer{}
	d := runFile(t, cfg, io.Discard, stdout)
	tok, err := api(t, d).GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	// Without audit.path the audit trail goes to stdout.
	var r audit.Record
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout.String())), &r); err != nil {
		t.Fatalf("stdout %q: %v", stdout.String(), err)
	}
	if r.Event != audit.EventIssue || r.Caller != "loopback" || r.Tenant != "acme" || r.TokenFingerprint != audit.Fingerprint(tok.GetToken().GetAccessToken()) {
		t.Errorf("audit line on stdout = %+v", r)
	}
}

// TestHealthDoesNotEnumerateTenants: on a TLS broker with callers, a
// peer without certificate or key (or with a wrong key) sees service ""
// only: Check and Watch of an existing and of a missing tenant give the
// same NOT_FOUND, List shows "". A caller sees its own tenants only.
func TestHealthDoesNotEnumerateTenants(t *testing.T) {
	s := brokertest.StartSecured(t)
	ctx := t.Context()
	// Token calls make the tenants' health known to the broker.
	if _, err := s.Get(ctx, s.API(s.WithCert(brokertest.BillingSPIFFE)), "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(brokertest.Bearer(ctx, s.APIKey), s.API(s.TLSOnly()), "team-a"); err != nil {
		t.Fatal(err)
	}
	tlsCreds := credentials.NewTLS(&tls.Config{RootCAs: s.ServerCA.Pool()})
	anon := healthClient(s, tlsCreds)
	for name, cctx := range map[string]context.Context{"no credentials": ctx, "wrong key": brokertest.Bearer(ctx, s.WrongKey)} {
		t.Run(name, func(t *testing.T) {
			if r, err := anon.Check(cctx, &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("Check(\"\") = %v, %v; want SERVING for probes", r, err)
			}
			var answers []string
			for _, svc := range []string{"tenant/acme", "tenant/hidden", "tenant/no-such-tenant"} {
				_, err := anon.Check(cctx, &healthpb.HealthCheckRequest{Service: svc})
				brokertest.WantStatus(t, "Check "+svc, err, codes.NotFound)
				answers = append(answers, status.Convert(err).Message())
				w, err := anon.Watch(cctx, &healthpb.HealthCheckRequest{Service: svc})
				if err == nil {
					_, err = w.Recv()
				}
				brokertest.WantStatus(t, "Watch "+svc, err, codes.NotFound)
				answers = append(answers, status.Convert(err).Message())
			}
			if len(slices.Compact(slices.Clone(answers))) != 1 {
				t.Errorf("answers differ between existing and missing tenants: %q", answers)
			}
			l, err := anon.List(cctx, &healthpb.HealthListRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if got := keys(l.GetStatuses()); !slices.Equal(got, []string{""}) {
				t.Errorf("List = %q, want only \"\"", got)
			}
		})
	}
	// billing may use acme only; ci (API key) team-*.
	billingCert := s.ClientCA.Issue(t, testpki.Options{CommonName: "client", URIs: []string{brokertest.BillingSPIFFE}}).TLSCertificate(t)
	billing := healthClient(s, credentials.NewTLS(&tls.Config{RootCAs: s.ServerCA.Pool(), Certificates: []tls.Certificate{billingCert}}))
	if r, err := billing.Check(ctx, &healthpb.HealthCheckRequest{Service: "tenant/acme"}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("billing: Check(tenant/acme) = %v, %v; want SERVING", r, err)
	}
	_, err := billing.Check(ctx, &healthpb.HealthCheckRequest{Service: "tenant/team-a"})
	brokertest.WantStatus(t, "billing: Check(tenant/team-a)", err, codes.NotFound)
	for name, tc := range map[string]struct {
		c    healthpb.HealthClient
		ctx  context.Context
		want []string
	}{
		"billing": {billing, ctx, []string{"", "tenant/acme"}},
		"ci":      {anon, brokertest.Bearer(ctx, s.APIKey), []string{"", "tenant/team-a"}},
	} {
		l, err := tc.c.List(tc.ctx, &healthpb.HealthListRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := keys(l.GetStatuses()); !slices.Equal(got, tc.want) {
			t.Errorf("%s: List = %q, want %q", name, got, tc.want)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestServeRefusesPlaintextCallersOffLoopback: with callers and no tls
// section, a listener on a non-loopback address (and "localhost." is not
// loopback) needs insecure_plaintext: true.
func TestServeRefusesPlaintextCallersOffLoopback(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", "localhost.:0", "[::]:0"} {
		t.Run(listen, func(t *testing.T) {
			dir := t.TempDir()
			testpki.WriteFile(t, filepath.Join(dir, "s"), []byte("FAKE-secret-value"))
			cfg := filepath.Join(dir, "c.yaml")
			testpki.WriteFile(t, cfg, fmt.Appendf(nil, `listen: %q
tenants:
  - name: acme
    token_url: http://127.0.0.1:1/token
    client_id: id
    client_secret_file: s
callers:
  - name: ci
    api_key_sha256: %s
    tenants: [acme]
`, listen, strings.Repeat("a", 64)))
			err := newFromFile(cfg, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "insecure_plaintext: true") || !strings.Contains(err.Error(), "plaintext listener on a non-loopback address") {
				t.Fatalf("serve = %v, want a refusal naming insecure_plaintext", err)
			}
		})
	}
}

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
	testpki.WriteFile(t, filepath.Join(dir, "echo.secret"), []byte(faultidp.NastySecret+"\n"))
	cfg := filepath.Join(dir, "broker.yaml")
	testpki.WriteFile(t, cfg, fmt.Appendf(nil, echoConfig, jsonIdP.TokenURL(), basicIdP.TokenURL(), htmlIdP.TokenURL()))

	ctx := t.Context()
	logs, stdout := &logtest.Buffer{}, &logtest.Buffer{}
	api := api(t, runFile(t, cfg, logs, stdout))

	outputs := map[string]*strings.Builder{}
	add := func(where, text string) {
		if outputs[where] == nil {
			outputs[where] = &strings.Builder{}
		}
		outputs[where].WriteString(text + "\n")
	}
	for _, tenant := range []string{"echo-json", "echo-basic", "echo-html"} {
		if _, err := api.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: tenant}); err == nil {
			t.Fatalf("%s: GetToken succeeded", tenant)
		} else {
			add("gRPC errors", err.Error())
		}
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
	add("logs", logs.String())
	add("stdout", stdout.String())
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
		for _, form := range faultidp.SecretForms("echo client", faultidp.NastySecret) {
			if strings.Contains(text, form) {
				t.Errorf("the %s contain the secret form %q", where, form)
			}
		}
		if strings.Contains(text, "<pre>") {
			t.Errorf("the %s contain the HTML error page", where)
		}
	}
}

// TestServeFromEnvironment runs the daemon configured from Kognic
// environment variables (the no-config mode) against a real identity
// provider, and stops it through its context.
func TestServeFromEnvironment(t *testing.T) {
	client := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	env := map[string]string{"KOGNIC_CLIENT_ID": client.ID, "KOGNIC_CLIENT_SECRET": client.Secret, "KOGNIC_AUTH_SERVER": idp.URL()}
	cfg, err := config.FromEnvWith(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, config.Options{Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Admin.Listen, cfg.Shutdown.Drain = "127.0.0.1:0", 0
	d, err := daemon.New(cfg, daemon.Options{Listen: []string{"127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	resp, err := api(t, d).GetToken(ctx, &tbv1.GetTokenRequest{Tenant: "default"})
	if err != nil {
		t.Fatalf("GetToken for the env-configured tenant: %v", err)
	}
	if resp.GetToken().GetTenant() != "default" || resp.GetToken().GetAccessToken() == "" {
		t.Errorf("token = %v", resp.GetToken().GetTenant())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v after cancellation, want nil", err)
		}
	case <-time.After(config.DefaultShutdownTimeout + 5*time.Second):
		t.Fatal("Run did not return within its shutdown bound")
	}
	if err := d.Run(t.Context()); !errors.Is(err, daemon.ErrClosed) {
		t.Errorf("Run after Run = %v, want ErrClosed", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close after Run = %v", err)
	}
}
