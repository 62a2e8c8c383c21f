package brokertest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker/config"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// Identities of the secured broker's test callers.
const (
	BillingSPIFFE  = "spiffe://prod/ns/billing/sa/api"
	IntruderSPIFFE = "spiffe://prod/ns/intruder/sa/api"
)

// SecuredConfig is the secured broker's config file; %[1]s is the token
// URL, %[2]s the client id, %[3]s the API key digest. Caller billing
// (certificate) may use acme, caller ci (API key) team-*; hidden is
// nobody's.
const SecuredConfig = `listen: 127.0.0.1:0
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
    spiffe_id: ` + BillingSPIFFE + `
    tenants: [acme]
  - name: ci
    api_key_sha256: %[3]s
    tenants: ["team-*"]
audit:
  path: audit.log
`

// Secured is the daemon run from SecuredConfig, as `broker serve --config`
// runs it: TLS, mutual TLS callers, an API key caller and an audit file,
// against the development IdP, all in a temporary directory. It records
// every token and error its calls return, for leak checks.
type Secured struct {
	t         testing.TB
	Dir       string
	Config    string // path of broker.yaml
	ServerCA  *testpki.CA
	ClientCA  *testpki.CA
	IdP       *devidp.Server
	Client    devidp.Client
	APIKey    string
	WrongKey  string
	Logs      *logtest.Buffer // JSON logs, debug level
	Stdout    *logtest.Buffer
	Addr      string
	AuditPath string
	Daemon    *daemon.Daemon

	mu     sync.Mutex
	tokens []string
	errs   []string
}

// StartSecured starts a Secured broker; it is stopped (drained) when the
// test ends.
func StartSecured(t testing.TB) *Secured {
	t.Helper()
	return StartSecuredWith(t, daemon.Options{})
}

// StartSecuredWith is StartSecured with daemon options (a tracer, a
// logger of its own level…); a nil Logger logs to Logs, a nil
// AuditOutput to Stdout.
func StartSecuredWith(t testing.TB, opts daemon.Options) *Secured {
	t.Helper()
	return StartSecuredConfig(t, opts, "")
}

// StartSecuredConfig is StartSecuredWith with extra appended to the
// config file (SecuredConfig), e.g. an oauth section.
func StartSecuredConfig(t testing.TB, opts daemon.Options, extra string) *Secured {
	t.Helper()
	s := &Secured{
		t: t, Dir: t.TempDir(), ServerCA: testpki.NewCA(t, "broker-ca"), ClientCA: testpki.NewCA(t, "client-ca"),
		Client: devidp.NewClient(), APIKey: RandomKey(t), WrongKey: RandomKey(t),
		Logs: &logtest.Buffer{}, Stdout: &logtest.Buffer{},
	}
	var err error
	if s.IdP, err = devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{s.Client}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.IdP.Close() })
	s.ServerCA.Server(t).WriteFiles(t, s.Dir, "server")
	testpki.WriteFile(t, filepath.Join(s.Dir, "clients.pem"), s.ClientCA.CertPEM)
	testpki.WriteFile(t, filepath.Join(s.Dir, "broker-ca.pem"), s.ServerCA.CertPEM)
	testpki.WriteFile(t, filepath.Join(s.Dir, "idp.secret"), []byte(s.Client.Secret+"\n"))
	s.Config = filepath.Join(s.Dir, "broker.yaml")
	s.AuditPath = filepath.Join(s.Dir, "audit.log")
	s.WriteConfig(fmt.Sprintf(SecuredConfig, s.IdP.TokenURL(), s.Client.ID, SHA256Hex(s.APIKey)) + extra)
	cfg, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = s.Logger()
	}
	if opts.AuditOutput == nil {
		opts.AuditOutput = s.Stdout
	}
	s.Daemon = Run(t, cfg, opts)
	s.Addr = s.Daemon.Addr().String()
	return s
}

// Run creates a daemon from cfg and runs it until the test ends, when it
// checks that Run drained and returned nil. So that tests neither wait
// nor collide, it runs with no shutdown.drain and moves an enabled admin
// listener to a free loopback port (see Daemon.AdminAddr); cfg is not
// modified.
func Run(t testing.TB, cfg *config.Config, opts daemon.Options) *daemon.Daemon {
	t.Helper()
	c := *cfg
	c.Shutdown.Drain = 0
	if c.Admin.Listen != "" {
		c.Admin.Listen = "127.0.0.1:0"
	}
	d, err := daemon.New(&c, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon Run: %v", err)
		}
	})
	return d
}

// Logger writes JSON at debug level to s.Logs.
func (s *Secured) Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(s.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// WriteConfig replaces the config file.
func (s *Secured) WriteConfig(yaml string) {
	s.t.Helper()
	if err := os.WriteFile(s.Config, []byte(yaml), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// Load loads the config file as `broker serve` does.
func (s *Secured) Load() (*config.Config, error) {
	return config.LoadWith(s.Config, config.Options{Logger: s.Logger()})
}

// Reload loads the config file and applies it, as SIGHUP does, keeping
// Run's shutdown without drain.
func (s *Secured) Reload() error {
	cfg, err := s.Load()
	if err != nil {
		return err
	}
	cfg.Shutdown.Drain = 0
	return s.Daemon.Reload(cfg)
}

// Dial connects to the broker with creds; the connection is closed when
// the test ends.
func (s *Secured) Dial(creds credentials.TransportCredentials) *grpc.ClientConn {
	s.t.Helper()
	cc, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { cc.Close() })
	return cc
}

// API is Dial's TokenBrokerService client.
func (s *Secured) API(creds credentials.TransportCredentials) tbv1.TokenBrokerServiceClient {
	return tbv1.NewTokenBrokerServiceClient(s.Dial(creds))
}

// TLSOnly is TLS without a client certificate.
func (s *Secured) TLSOnly() credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{RootCAs: s.ServerCA.Pool()})
}

// WithCert is mutual TLS with a client certificate for spiffeID.
func (s *Secured) WithCert(spiffeID string) credentials.TransportCredentials {
	c := s.ClientCA.Issue(s.t, testpki.Options{CommonName: "client", URIs: []string{spiffeID}}).TLSCertificate(s.t)
	return credentials.NewTLS(&tls.Config{RootCAs: s.ServerCA.Pool(), Certificates: []tls.Certificate{c}})
}

// Get calls GetToken and records what came back.
func (s *Secured) Get(ctx context.Context, api tbv1.TokenBrokerServiceClient, tenant string) (*tbv1.Token, error) {
	resp, err := api.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: tenant})
	return s.Record(resp.GetToken(), err)
}

// Invalidate calls InvalidateToken for token and records what came back.
func (s *Secured) Invalidate(ctx context.Context, api tbv1.TokenBrokerServiceClient, tenant, token string) (*tbv1.Token, error) {
	resp, err := api.InvalidateToken(ctx, &tbv1.InvalidateTokenRequest{Tenant: tenant, TokenSha256: SHA256Hex(token)})
	return s.Record(resp.GetToken(), err)
}

// Record notes a token and an error a client received, and returns them.
func (s *Secured) Record(tok *tbv1.Token, err error) (*tbv1.Token, error) {
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

// Seen returns the tokens and error messages recorded so far.
func (s *Secured) Seen() (tokens, errs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tokens...), append([]string(nil), s.errs...)
}

// AuditRecords reads the audit file.
func (s *Secured) AuditRecords() []audit.Record {
	s.t.Helper()
	data, err := os.ReadFile(s.AuditPath)
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

// RandomKey returns a fresh API key.
func RandomKey(t testing.TB) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "tbk_" + hex.EncodeToString(b)
}

// SHA256Hex is the hex SHA-256 of s, as api_key_sha256 and token_sha256
// take it.
func SHA256Hex(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }

// Bearer adds an API key to ctx's outgoing metadata.
func Bearer(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

// WantStatus fails t unless err has code.
func WantStatus(t testing.TB, what string, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
}
