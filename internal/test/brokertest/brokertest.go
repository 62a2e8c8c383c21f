// Package brokertest starts a real broker behind a real gRPC server on
// loopback, fetching from the development IdP, and hands back connected
// clients: Start for the core and the handlers (package server's tests),
// StartSecured for the whole daemon with TLS, callers and an audit file
// (the daemon's and the CLI's tests). Both check at the end of the test
// that no client secret or served token reached the logs.
package brokertest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/server"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// Tenant is the name of the tenant every Fixture has, fetching from its
// IdP with client_secret_basic.
const Tenant = "acme"

// Fixture is a broker and its gRPC server on loopback with open access
// (no guard), and a plaintext client connection to it.
type Fixture struct {
	IdP    *devidp.Server
	Client devidp.Client // Tenant's client at IdP
	Broker *broker.Broker
	Server *server.Server
	Conn   *grpc.ClientConn
	API    tbv1.TokenBrokerServiceClient
	Health healthpb.HealthClient
	Logs   *logtest.Buffer // JSON logs of the IdP, broker and server, debug level

	mu      sync.Mutex
	secrets map[string]string
}

// Start starts a Fixture with Tenant plus extra; it is shut down when the
// test ends, after which the logs are checked for secrets and tokens.
func Start(t testing.TB, extra ...broker.Tenant) *Fixture {
	t.Helper()
	f := &Fixture{Logs: &logtest.Buffer{}, Client: devidp.NewClient(), secrets: map[string]string{}}
	log := slog.New(slog.NewJSONHandler(f.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	f.IdP, err = devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{f.Client}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	f.Secret("client secret", f.Client.Secret)
	for _, e := range extra {
		f.Secret("client secret of "+e.Name, e.ClientSecret.Reveal())
	}
	hs := health.NewServer()
	tenants := append([]broker.Tenant{{
		Name: Tenant, TokenURL: f.IdP.TokenURL(), ClientID: f.Client.ID,
		ClientSecret: creds.Secret(f.Client.Secret), AuthStyle: oauth2.AuthStyleInHeader,
	}}, extra...)
	f.Broker, err = broker.New(broker.Config{Tenants: tenants, Logger: log, OnTenantHealth: server.TenantHealth(hs)})
	if err != nil {
		t.Fatal(err)
	}
	f.Server = server.New(server.Config{Broker: f.Broker, Health: hs, Logger: log})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = f.Server.GRPC.Serve(lis) }()
	f.Conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	f.API = tbv1.NewTokenBrokerServiceClient(f.Conn)
	f.Health = healthpb.NewHealthClient(f.Conn)
	t.Cleanup(func() {
		f.Conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := f.Server.Shutdown(ctx); err != nil {
			t.Errorf("brokertest: server shutdown: %v", err)
		}
		<-served
		f.Broker.Close()
		f.IdP.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		logtest.AssertNone(t, map[string]string{"logs": f.Logs.String()}, f.secrets)
	})
	return f
}

// Secret adds a value that must never appear in the logs.
func (f *Fixture) Secret(name, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secrets[name] = value
}

// GetToken calls GetToken and adds the token to the values that must never
// appear in the logs.
func (f *Fixture) GetToken(ctx context.Context, req *tbv1.GetTokenRequest) (*tbv1.Token, error) {
	resp, err := f.API.GetToken(ctx, req)
	if err != nil {
		return nil, err
	}
	f.Token(resp.GetToken().GetAccessToken())
	return resp.GetToken(), nil
}

// Token adds an access token a client received to the values that must
// never appear in the logs.
func (f *Fixture) Token(accessToken string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secrets[fmt.Sprintf("access token %d", len(f.secrets))] = accessToken
}
