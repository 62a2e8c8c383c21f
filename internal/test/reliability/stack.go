package reliability

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/server"
)

// Stack is a real broker behind a real gRPC server on loopback.
type Stack struct {
	Broker  *broker.Broker
	API     tbv1.TokenBrokerServiceClient
	Tenants []broker.Tenant
}

// StackConfig configures StartStack.
type StackConfig struct {
	Tenants      []broker.Tenant
	FetchTimeout time.Duration
	Logger       *slog.Logger
}

// Tenant returns a tenant named name fetching from tokenURL with the
// given client, trusting roots for the endpoint's TLS certificate.
func Tenant(name, tokenURL, clientID, secret string, roots *x509.CertPool) broker.Tenant {
	return broker.Tenant{
		Name: name, TokenURL: tokenURL, ClientID: clientID,
		ClientSecret: creds.Secret(secret), AuthStyle: oauth2.AuthStyleInParams, RootCAs: roots,
	}
}

// StartStack starts a broker and its gRPC server; both stop at the end of
// the test.
func StartStack(t testing.TB, cfg StackConfig) *Stack {
	t.Helper()
	b, err := broker.New(broker.Config{Tenants: cfg.Tenants, FetchTimeout: cfg.FetchTimeout, Logger: cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{Broker: b, Logger: cfg.Logger})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.GRPC.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("server shutdown: %v", err)
		}
		<-served
		if err := b.Close(); err != nil {
			t.Errorf("broker close: %v", err)
		}
	})
	return &Stack{Broker: b, API: tbv1.NewTokenBrokerServiceClient(conn), Tenants: cfg.Tenants}
}

// Get calls GetToken for tenant's default scopes with the default
// min_valid, bounded by timeout.
func (s *Stack) Get(ctx context.Context, tenant string, timeout time.Duration) (*tbv1.Token, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := s.API.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: tenant})
	if err != nil {
		return nil, err
	}
	return resp.GetToken(), nil
}

// JWTExpiry returns the exp claim of a JWT access token, unverified.
func JWTExpiry(accessToken string) (time.Time, bool) {
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(accessToken, &c); err != nil || c.ExpiresAt == nil {
		return time.Time{}, false
	}
	return c.ExpiresAt.Time, true
}
