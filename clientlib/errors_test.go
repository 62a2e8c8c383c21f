package clientlib_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/clientlib"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

var kinds = map[string]error{
	"ErrInvalidArgument":     clientlib.ErrInvalidArgument,
	"ErrUnknownTenant":       clientlib.ErrUnknownTenant,
	"ErrPermissionDenied":    clientlib.ErrPermissionDenied,
	"ErrCredentialsRejected": clientlib.ErrCredentialsRejected,
	"ErrUnavailable":         clientlib.ErrUnavailable,
}

// TestErrorKinds: NewHTTPClient's errors match the same kind in broker and
// direct mode, and only that kind, and still carry what they wrap: the
// broker's gRPC status, or the IdP's *upstream.Error.
func TestErrorKinds(t *testing.T) {
	// brokerMode serves tenant "default" of a stack made with cfg.
	brokerMode := func(cfg stackConfig, opts ...clientlib.Option) func(*testing.T) []clientlib.Option {
		return func(t *testing.T) []clientlib.Option {
			s := startStack(t, cfg)
			return append([]clientlib.Option{clientlib.WithBroker(s.Addr(), "default")}, opts...)
		}
	}
	// directMode fetches from a development IdP knowing c, with secret.
	directMode := func(c devidp.Client, secret string, opts ...clientlib.Option) func(*testing.T) []clientlib.Option {
		return func(t *testing.T) []clientlib.Option {
			idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{c}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { idp.Close() })
			return append([]clientlib.Option{env(), clientlib.WithClientCredentials(c.ID, secret), clientlib.WithAuthServer(idp.URL())}, opts...)
		}
	}
	down := func(t *testing.T) *faultidp.Server {
		idp := faultidp.Start()
		t.Cleanup(idp.Close)
		idp.SetDefault(faultidp.OAuthError(503, "temporarily_unavailable", "maintenance"))
		return idp
	}
	// refusing is direct mode against a loopback port nothing listens on.
	refusing := func(opts ...clientlib.Option) func(*testing.T) []clientlib.Option {
		return func(t *testing.T) []clientlib.Option {
			return append([]clientlib.Option{env(), clientlib.WithClientCredentials("c", "s"), clientlib.WithAuthServer(closedURL(t))}, opts...)
		}
	}
	secured := func(creds func(*brokertest.Secured) grpc.DialOption) func(*testing.T) []clientlib.Option {
		return func(t *testing.T) []clientlib.Option {
			s := brokertest.StartSecured(t)
			return []clientlib.Option{clientlib.WithBroker(s.Addr, "acme"), clientlib.WithGRPCDialOptions(creds(s))}
		}
	}
	readOnly := devidp.NewClient()
	readOnly.Scopes = []string{"api:read"}

	for _, tc := range []struct {
		name     string
		setup    func(*testing.T) []clientlib.Option
		kind     string
		code     codes.Code // broker mode: the status kept; OK for none
		upstream bool       // direct mode: the IdP's error kept
		waits    bool       // fails only when its context ends
	}{
		{name: "broker/unknown tenant", kind: "ErrUnknownTenant", code: codes.NotFound,
			setup: func(t *testing.T) []clientlib.Option {
				return []clientlib.Option{clientlib.WithBroker(startStack(t, stackConfig{}).Addr(), "nope")}
			}},
		{name: "broker/unauthenticated", kind: "ErrPermissionDenied", code: codes.Unauthenticated,
			setup: secured(func(s *brokertest.Secured) grpc.DialOption { return grpc.WithTransportCredentials(s.TLSOnly()) })},
		{name: "broker/not in the policy", kind: "ErrPermissionDenied", code: codes.PermissionDenied,
			setup: secured(func(s *brokertest.Secured) grpc.DialOption {
				return grpc.WithTransportCredentials(s.WithCert(brokertest.IntruderSPIFFE))
			})},
		{name: "broker/credentials rejected", kind: "ErrCredentialsRejected", code: codes.FailedPrecondition,
			setup: brokerMode(stackConfig{Secret: "wrong"})},
		{name: "direct/credentials rejected", kind: "ErrCredentialsRejected", upstream: true,
			setup: directMode(devidp.NewClient(), "wrong")},
		{name: "broker/scope refused by the IdP", kind: "ErrInvalidArgument", code: codes.InvalidArgument,
			setup: brokerMode(stackConfig{Scopes: []string{"api:read"}}, clientlib.WithScopes("api:write"))},
		{name: "direct/scope refused by the IdP", kind: "ErrInvalidArgument", upstream: true,
			setup: directMode(readOnly, readOnly.Secret, clientlib.WithScopes("api:write"))},
		{name: "broker/malformed scope", kind: "ErrInvalidArgument",
			setup: brokerMode(stackConfig{}, clientlib.WithScopes("a b"))},
		{name: "direct/malformed scope", kind: "ErrInvalidArgument",
			setup: directMode(devidp.NewClient(), "s", clientlib.WithScopes("a b"))},
		{name: "broker/malformed tenant", kind: "ErrInvalidArgument",
			setup: func(*testing.T) []clientlib.Option {
				return []clientlib.Option{clientlib.WithBroker("127.0.0.1:1", "No_Such")}
			}},
		{name: "broker/IdP down", kind: "ErrUnavailable", code: codes.Unavailable, waits: true,
			setup: func(t *testing.T) []clientlib.Option {
				s, idp := startStack(t, stackConfig{}), down(t)
				if err := s.Broker().SetTenants([]broker.Tenant{{Name: "default", TokenURL: idp.TokenURL(), ClientID: "c", ClientSecret: "s"}}); err != nil {
					t.Fatal(err)
				}
				return []clientlib.Option{clientlib.WithBroker(s.Addr(), "default")}
			}},
		{name: "direct/IdP down", kind: "ErrUnavailable", upstream: true, waits: true,
			setup: func(t *testing.T) []clientlib.Option {
				return []clientlib.Option{env(), clientlib.WithClientCredentials("c", "s"), clientlib.WithAuthServer(down(t).URL())}
			}},
		// WithFailFast: the CLI's first token.
		{name: "direct/auth server refuses connections", kind: "ErrUnavailable", upstream: true, waits: true,
			setup: refusing()},
		{name: "direct/auth server refuses connections, WithFailFast", kind: "ErrUnavailable", upstream: true,
			setup: refusing(clientlib.WithFailFast())},
		{name: "direct/not a token endpoint (404), WithFailFast", kind: "ErrUnavailable", upstream: true,
			setup: func(t *testing.T) []clientlib.Option {
				idp := faultidp.Start()
				t.Cleanup(idp.Close)
				idp.SetDefault(faultidp.Response{Status: 404, Body: "<html>no such page</html>"})
				return []clientlib.Option{env(), clientlib.WithClientCredentials("c", "s"), clientlib.WithAuthServer(idp.URL()), clientlib.WithFailFast()}
			}},
		{name: "direct/IdP down (503), WithFailFast", kind: "ErrUnavailable", upstream: true, waits: true,
			setup: func(t *testing.T) []clientlib.Option {
				return []clientlib.Option{env(), clientlib.WithClientCredentials("c", "s"), clientlib.WithAuthServer(down(t).URL()), clientlib.WithFailFast()}
			}},
		{name: "direct/credentials rejected, WithFailFast", kind: "ErrCredentialsRejected", upstream: true,
			setup: directMode(devidp.NewClient(), "wrong", clientlib.WithFailFast())},
		{name: "broker/broker down", kind: "ErrUnavailable", code: codes.Unavailable, waits: true,
			setup: func(t *testing.T) []clientlib.Option {
				s := startStack(t, stackConfig{})
				s.Stop()
				return []clientlib.Option{clientlib.WithBroker(s.Addr(), "default")}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := append(tc.setup(t), fast)
			limit := waitLimit // a guard: these must fail at once rather than wait
			if tc.waits {
				limit = time.Second
			}
			ctx, cancel := context.WithTimeout(t.Context(), limit)
			defer cancel()
			hc, err := clientlib.NewHTTPClient(ctx, opts...)
			if err == nil {
				hc.Close()
				t.Fatal("NewHTTPClient succeeded")
			}
			for name, kind := range kinds {
				if got := errors.Is(err, kind); got != (name == tc.kind) {
					t.Errorf("errors.Is(err, %s) = %v, want %v; err: %v", name, got, !got, err)
				}
			}
			if tc.waits != errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("errors.Is(err, context.DeadlineExceeded) = %v, want %v", !tc.waits, tc.waits)
			}
			if got := status.Code(err); tc.code != codes.OK && got != tc.code {
				t.Errorf("status.Code(err) = %v, want %v", got, tc.code)
			}
			if _, ok := errors.AsType[*upstream.Error](err); ok != tc.upstream {
				t.Errorf("errors.As(err, *upstream.Error) = %v, want %v; err: %v", ok, tc.upstream, err)
			}
		})
	}
}

// closedURL is the URL of a loopback port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

// TestFailFastMessage: the error of WithFailFast names the auth server, what
// set it, and what it answered, and never the client secret.
func TestFailFastMessage(t *testing.T) {
	url := closedURL(t)
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	start := time.Now()
	_, err := clientlib.NewHTTPClient(ctx, env("KOGNIC_AUTH_SERVER", url, "KOGNIC_CLIENT_ID", "c", "KOGNIC_CLIENT_SECRET", "FAIL-FAST-SECRET"), clientlib.WithFailFast())
	want := "clientlib: no token from the auth server (its URL from KOGNIC_AUTH_SERVER, the credentials from KOGNIC_CLIENT_ID/KOGNIC_CLIENT_SECRET): upstream: token request to " +
		url + "/v1/auth/oauth/token failed: connection refused (details withheld: they may quote the server's bytes)"
	if err == nil || err.Error() != want {
		t.Fatalf("error\n%v\nwant\n%s", err, want)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("failed after %s, want at once", time.Since(start))
	}
}
