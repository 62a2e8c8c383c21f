package guard

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Tenants the stub broker has. "secret" exists but is allowed to nobody.
var stubTenants = []string{"acme", "secret", "team-a", "team-b"}

func accessToken(tenant string, version uint64) string {
	return "AT." + tenant + ".v" + string(rune('0'+version)) + ".do-not-leak-0f9e8d"
}

// stub is a TokenBrokerService with fixed tokens. WatchToken sends the
// current token, then whatever is pushed, until the stream ends.
type stub struct {
	tbv1.UnimplementedTokenBrokerServiceServer
	push chan *tbv1.Token
}

func token(tenant string, version uint64, scopes []string) *tbv1.Token {
	return &tbv1.Token{AccessToken: accessToken(tenant, version), TokenType: "Bearer", Tenant: tenant, Scopes: scopes, Version: version}
}

func known(tenant string) error {
	if !slices.Contains(stubTenants, tenant) {
		return status.Errorf(codes.NotFound, "tenant %q is not configured", tenant)
	}
	return nil
}

func (s *stub) GetToken(_ context.Context, r *tbv1.GetTokenRequest) (*tbv1.GetTokenResponse, error) {
	if err := known(r.GetTenant()); err != nil {
		return nil, err
	}
	return &tbv1.GetTokenResponse{Token: token(r.GetTenant(), 1, r.GetScopes())}, nil
}

func (s *stub) InvalidateToken(_ context.Context, r *tbv1.InvalidateTokenRequest) (*tbv1.InvalidateTokenResponse, error) {
	if err := known(r.GetTenant()); err != nil {
		return nil, err
	}
	return &tbv1.InvalidateTokenResponse{Token: token(r.GetTenant(), 2, r.GetScopes())}, nil
}

func (s *stub) WatchToken(r *tbv1.WatchTokenRequest, st grpc.ServerStreamingServer[tbv1.WatchTokenResponse]) error {
	if err := known(r.GetTenant()); err != nil {
		return err
	}
	if err := st.Send(&tbv1.WatchTokenResponse{Token: token(r.GetTenant(), 1, r.GetScopes())}); err != nil {
		return err
	}
	for {
		select {
		case tok := <-s.push:
			if err := st.Send(&tbv1.WatchTokenResponse{Token: tok}); err != nil {
				return err
			}
		case <-st.Context().Done():
			return status.FromContextError(st.Context().Err()).Err()
		}
	}
}

// ListTenants filters as the real handler will, with TenantVisible.
func (s *stub) ListTenants(ctx context.Context, _ *tbv1.ListTenantsRequest) (*tbv1.ListTenantsResponse, error) {
	visible := TenantVisible(ctx)
	resp := &tbv1.ListTenantsResponse{}
	for _, n := range stubTenants {
		if visible(n) {
			resp.Tenants = append(resp.Tenants, &tbv1.Tenant{Name: n})
		}
	}
	return resp, nil
}

type options struct {
	callers       []policy.Caller
	limits        limits.Limits
	plaintext     bool
	remote        net.Addr // pretend every peer connects from here
	unix          bool     // serve on a Unix socket (authn.NewUnixListener)
	defaultScopes func(string) []string
	auditTo       io.Writer // wraps the audit buffer, e.g. to fail writes
	onAudit       func(failing bool)
}

type env struct {
	t      *testing.T
	addr   string
	ca     *testpki.CA
	holder *policy.Holder
	guard  *Guard
	stub   *stub
	audit  *logtest.Buffer
	logs   *logtest.Buffer
	stop   func()
}

// fakeRemote makes accepted connections report another peer address.
type fakeRemote struct {
	net.Listener
	addr net.Addr
}

type remoteConn struct {
	net.Conn
	addr net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.addr }

func (l fakeRemote) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return remoteConn{c, l.addr}, nil
}

// start runs a gRPC server with the guard's tap and interceptors behind the same
// recovery-free logging interceptor the server uses, TLS with client CA
// (unless plaintext), the stub service and health.
func start(t *testing.T, o options) *env {
	t.Helper()
	e := &env{t: t, ca: testpki.NewCA(t, "clients"), audit: &logtest.Buffer{}, logs: &logtest.Buffer{}, stub: &stub{push: make(chan *tbv1.Token)}}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pol, err := policy.New(o.callers)
	if err != nil {
		t.Fatal(err)
	}
	if e.holder, err = policy.NewHolder(pol); err != nil {
		t.Fatal(err)
	}
	var aw io.Writer = e.audit
	if o.auditTo != nil {
		aw = o.auditTo
	}
	e.guard, err = New(Config{Policy: e.holder, Audit: audit.New(aw), Logger: log, Limits: o.limits, DefaultScopes: o.defaultScopes, OnAuditFailure: o.onAudit})
	if err != nil {
		t.Fatal(err)
	}
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, CallInfoFrom(ctx).LogFields(fields)...)
	})
	callInfo := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return h(WithCallInfo(ctx), req)
	}
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
	opts := append([]grpc.ServerOption{grpc.InTapHandle(e.guard.Tap)},
		grpc.ChainUnaryInterceptor(callInfo, logging.UnaryServerInterceptor(logger, logOpts...), e.guard.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(logging.StreamServerInterceptor(logger, logOpts...), e.guard.StreamInterceptor()),
	)
	if !o.plaintext {
		dir := t.TempDir()
		certFile, keyFile := e.ca.Server(t).WriteFiles(t, dir, "server")
		caFile := filepath.Join(dir, "ca.pem")
		testpki.WriteFile(t, caFile, e.ca.CertPEM)
		r, err := authn.NewReloader(authn.TLSFiles{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}, log)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, grpc.Creds(r.Credentials()))
	}
	srv := grpc.NewServer(opts...)
	tbv1.RegisterTokenBrokerServiceServer(srv, e.stub)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis := listen(t, o.unix)
	e.addr = lis.Addr().String()
	if o.unix {
		e.addr = "unix://" + e.addr
	}
	if o.remote != nil {
		lis = fakeRemote{lis, o.remote}
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	var once sync.Once
	e.stop = func() { once.Do(func() { srv.GracefulStop(); <-done }) }
	t.Cleanup(func() { srv.Stop(); e.stop() })
	return e
}

// listen listens on loopback, or on a Unix socket whose peers the kernel
// names.
func listen(t *testing.T, unix bool) net.Listener {
	t.Helper()
	if !unix {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return lis
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "b.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := authn.NewUnixListener(ul)
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

func (e *env) conn(creds credentials.TransportCredentials) *grpc.ClientConn {
	e.t.Helper()
	cc, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cc.Close() })
	return cc
}

// certClient connects over mTLS with a new client certificate.
func (e *env) certClient(o testpki.Options) tbv1.TokenBrokerServiceClient {
	e.t.Helper()
	c := e.ca.Issue(e.t, o).TLSCertificate(e.t)
	return tbv1.NewTokenBrokerServiceClient(e.conn(credentials.NewTLS(&tls.Config{RootCAs: e.ca.Pool(), Certificates: []tls.Certificate{c}})))
}

// tlsClient connects over TLS without a client certificate.
func (e *env) tlsClient() *grpc.ClientConn {
	return e.conn(credentials.NewTLS(&tls.Config{RootCAs: e.ca.Pool()}))
}

func (e *env) plainClient() *grpc.ClientConn { return e.conn(insecure.NewCredentials()) }

func withKey(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

func keyDigest(key string) string { s := sha256.Sum256([]byte(key)); return hex.EncodeToString(s[:]) }

// records parses the audit lines written so far.
func (e *env) records() []audit.Record {
	e.t.Helper()
	var out []audit.Record
	for _, ln := range strings.Split(strings.TrimSpace(e.audit.String()), "\n") {
		if ln == "" {
			continue
		}
		var r audit.Record
		if err := json.Unmarshal([]byte(ln), &r); err != nil {
			e.t.Fatalf("audit line %q: %v", ln, err)
		}
		out = append(out, r)
	}
	return out
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("%s: %v, want %s", what, err, code)
	}
}

func metadataCtx(ctx context.Context, authorization string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", authorization)
}
