package clientlib_test

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/clientlib"
)

func TestPerRPCCredentials(t *testing.T) {
	s := startStack(t, stackConfig{})
	src := newSource(t, s)
	g, err := newGRPCResource(checker{s.IdP, s.Client.ID})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()

	// Without the loopback allowance, grpc refuses bearer tokens on an
	// insecure connection.
	if _, err := grpc.NewClient(g.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(clientlib.PerRPCCredentials(src))); err == nil {
		t.Fatal("NewClient accepted a token over an insecure connection")
	}

	for _, tc := range []struct {
		name  string
		creds bool
		code  codes.Code
	}{
		{"with credentials", true, codes.OK},
		{"without", false, codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
			if tc.creds {
				opts = append(opts, grpc.WithPerRPCCredentials(clientlib.PerRPCCredentials(src, clientlib.WithInsecureLoopback())))
			}
			conn, err := grpc.NewClient(g.Addr, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_, err = healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
			if status.Code(err) != tc.code {
				t.Fatalf("Check = %v, want %v", err, tc.code)
			}
		})
	}
}

func TestPerRPCCredentialsSecurity(t *testing.T) {
	src := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "tok", TokenType: "bearer"})
	strict := clientlib.PerRPCCredentials(src)
	loose := clientlib.PerRPCCredentials(src, clientlib.WithInsecureLoopback())
	if !strict.RequireTransportSecurity() || loose.RequireTransportSecurity() {
		t.Fatal("RequireTransportSecurity: want true by default, false with WithInsecureLoopback")
	}
	// Without request info (no connection security known), only a
	// loopback audience gets a token, and only when allowed.
	for _, tc := range []struct {
		name string
		c    interface {
			GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error)
		}
		uri string
		ok  bool
	}{
		{"strict loopback", strict, "https://127.0.0.1:1/svc", false},
		{"loose loopback", loose, "https://127.0.0.1:1/svc", true},
		{"loose localhost", loose, "https://localhost:1/svc", true},
		{"loose remote", loose, "https://api.example.com/svc", false},
		{"loose localhost dot", loose, "https://localhost.:1/svc", false},
		{"loose sub-localhost", loose, "https://api.localhost:1/svc", false},
		{"loose IPv6 loopback", loose, "https://[::1]:1/svc", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md, err := tc.c.GetRequestMetadata(t.Context(), tc.uri)
			if !tc.ok {
				if !errors.Is(err, clientlib.ErrInsecureTransport) {
					t.Fatalf("err = %v, want ErrInsecureTransport", err)
				}
				return
			}
			if err != nil || md["authorization"] != "Bearer tok" {
				t.Fatalf("metadata %v, %v; want authorization: Bearer tok", md, err)
			}
		})
	}
}
