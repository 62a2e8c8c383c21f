package clientlib_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitLimit = 20 * time.Second // a guard against hangs, never a synchronisation

// stack is the real thing on loopback: the development IdP, a broker with
// one tenant "default" and the broker's gRPC server. It counts the RPCs the
// server receives.
type stack struct {
	IdP    *devidp.Server
	Client devidp.Client

	idpHTTP *http.Transport // the brokers' transport to the IdP

	mu     sync.Mutex
	broker *broker.Broker
	srv    *server.Server
	served chan struct{}
	addr   string

	calls     sync.Map // full method name -> *atomic.Int64
	failWatch atomic.Bool
}

type stackConfig struct {
	TokenLifetime time.Duration
	// Secret, when set, is configured at the broker instead of the
	// client's real secret.
	Secret string
	// Scopes, when set, are the only scopes the IdP grants the client.
	Scopes []string
}

func newStack(ctx context.Context, cfg stackConfig) (*stack, error) {
	c := devidp.NewClient()
	c.Scopes = cfg.Scopes
	idp, err := devidp.Start(ctx, devidp.Config{Clients: []devidp.Client{c}, TokenLifetime: cfg.TokenLifetime})
	if err != nil {
		return nil, err
	}
	s := &stack{IdP: idp, Client: c, idpHTTP: &http.Transport{}}
	secret := c.Secret
	if cfg.Secret != "" {
		secret = cfg.Secret
	}
	if err := s.newBroker(secret); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.listen(ctx, "127.0.0.1:0"); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// startStack starts a stack closed at the end of the test.
func startStack(t testing.TB, cfg stackConfig) *stack {
	t.Helper()
	s, err := newStack(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func (s *stack) newBroker(secret string) error {
	b, err := broker.New(broker.Config{
		Tenants: []broker.Tenant{{
			Name: "default", TokenURL: s.IdP.TokenURL(),
			ClientID: s.Client.ID, ClientSecret: creds.Secret(secret),
		}},
		HTTPClient: &http.Client{Transport: s.idpHTTP},
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.broker = b
	s.mu.Unlock()
	return nil
}

// listen starts a gRPC server for the current broker on addr.
func (s *stack) listen(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	srv := server.New(server.Config{
		Broker:            s.Broker(),
		UnaryInterceptor:  s.countUnary,
		StreamInterceptor: s.countStream,
	})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.GRPC.Serve(lis)
	}()
	s.mu.Lock()
	s.srv, s.served, s.addr = srv, served, lis.Addr().String()
	s.mu.Unlock()
	return nil
}

// Stop stops the gRPC server hard and closes the broker: a crashed broker.
func (s *stack) Stop() {
	s.mu.Lock()
	srv, served, b := s.srv, s.served, s.broker
	s.srv, s.broker = nil, nil
	s.mu.Unlock()
	if srv != nil {
		srv.GRPC.Stop()
		<-served
	}
	if b != nil {
		b.Close()
	}
}

// Restart starts a new broker, with an empty cache, on the old address.
func (s *stack) Restart(ctx context.Context) error {
	if err := s.newBroker(s.Client.Secret); err != nil {
		return err
	}
	return s.listen(ctx, s.Addr())
}

func (s *stack) Close() {
	s.Stop()
	s.idpHTTP.CloseIdleConnections()
	_ = s.IdP.Close()
}

func (s *stack) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

func (s *stack) Broker() *broker.Broker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.broker
}

// Current returns the broker's current default token.
func (s *stack) Current(ctx context.Context) (*broker.Token, error) {
	return s.Broker().Token(ctx, "default", nil, 0)
}

// Calls returns how many calls of method ("GetToken", "WatchToken",
// "InvalidateToken") the server has received.
func (s *stack) Calls(method string) int64 {
	v, ok := s.calls.Load("/tokenbroker.v1.TokenBrokerService/" + method)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

func (s *stack) count(method string) {
	v, _ := s.calls.LoadOrStore(method, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (s *stack) countUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	s.count(info.FullMethod)
	return h(ctx, req)
}

func (s *stack) countStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	s.count(info.FullMethod)
	if s.failWatch.Load() && strings.HasSuffix(info.FullMethod, "/WatchToken") {
		return status.Error(codes.Unavailable, "test: watch streams are down")
	}
	return h(srv, ss)
}

// Dial connects to the stack's broker with a short reconnect backoff, so
// that tests of broker restarts are quick.
func (s *stack) Dial() (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+s.Addr(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, MaxDelay: 100 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
}

func dial(t testing.TB, s *stack) *grpc.ClientConn {
	t.Helper()
	conn, err := s.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// resource is a resource server that accepts tokens the development IdP
// issued to its client, except those it was told to reject. It records the
// tokens and bodies it receives.
type resource struct {
	*httptest.Server
	checker

	mu     sync.Mutex
	reject map[string]bool
	// rejectFirst makes the first token seen rejected.
	rejectFirst bool
	seen        []string
	bodies      []string
	// hold, when set, is called for each request with a rejected token
	// before it is answered.
	hold func()
}

func newResource(idp *devidp.Server, clientID string) *resource {
	r := &resource{checker: checker{idp, clientID}, reject: map[string]bool{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

func startResource(t testing.TB, idp *devidp.Server, clientID string) *resource {
	r := newResource(idp, clientID)
	t.Cleanup(r.Close)
	return r
}

func (r *resource) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	r.mu.Lock()
	r.seen = append(r.seen, tok)
	r.bodies = append(r.bodies, string(body))
	if r.rejectFirst && len(r.seen) == 1 {
		r.reject[tok] = true
	}
	rejected, hold := r.reject[tok], r.hold
	r.mu.Unlock()
	if !ok || rejected || !r.valid(tok) {
		if rejected && hold != nil {
			hold()
		}
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		http.Error(w, "invalid token", http.StatusUnauthorized)
		return
	}
	fmt.Fprint(w, "hello, "+r.clientID)
}

// checker accepts the tokens an IdP issued to a client.
type checker struct {
	idp      *devidp.Server
	clientID string
}

// valid checks that tok is an unexpired JWT the IdP issued to the client.
// (The IdP's signing key is private to it; issuer, subject and expiry are
// what a test resource server can check.)
func (r checker) valid(tok string) bool {
	var claims jwt.RegisteredClaims
	_, _, err := jwt.NewParser().ParseUnverified(tok, &claims)
	return err == nil && claims.Issuer == r.idp.URL() && claims.Subject == r.clientID &&
		claims.ExpiresAt != nil && claims.ExpiresAt.After(time.Now())
}

func (r *resource) Seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

func (r *resource) Bodies() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...)
}

// wait waits for ch or fails the test after waitLimit.
func wait[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// drain empties a notification channel without blocking.
func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

// grpcResource is a gRPC server on loopback whose health service requires
// a token r accepts, in the "authorization" metadata.
type grpcResource struct {
	Addr string
	srv  *grpc.Server
	done chan struct{}
}

func newGRPCResource(r checker) (*grpcResource, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	check := func(ctx context.Context) error {
		md, _ := metadata.FromIncomingContext(ctx)
		for _, v := range md.Get("authorization") {
			if tok, ok := strings.CutPrefix(v, "Bearer "); ok && r.valid(tok) {
				return nil
			}
		}
		return status.Error(codes.Unauthenticated, "no valid token")
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := check(ctx); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	g := &grpcResource{Addr: lis.Addr().String(), srv: srv, done: make(chan struct{})}
	go func() {
		defer close(g.done)
		_ = srv.Serve(lis)
	}()
	return g, nil
}

func (g *grpcResource) Close() {
	g.srv.Stop()
	<-g.done
}
