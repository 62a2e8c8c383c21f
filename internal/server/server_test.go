package server_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tokenbroker/tokenbroker/broker"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/server"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestGetTokenColdKeyThousandCallersOneIdPRequest(t *testing.T) {
	f := brokertest.Start(t)
	if _, err := f.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
	before := f.IdP.RequestsFor(f.Client.ID)

	const callers = 1000
	var wg sync.WaitGroup
	tokens := make(chan string, callers)
	for range callers {
		wg.Go(func() {
			tok, err := f.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "acme", Scopes: []string{"write", "read", "read"}})
			if err != nil {
				t.Error(err)
				return
			}
			tokens <- tok.GetAccessToken()
		})
	}
	wg.Wait()
	close(tokens)
	distinct := map[string]bool{}
	for tok := range tokens {
		distinct[tok] = true
	}
	got := f.IdP.RequestsFor(f.Client.ID) - before
	t.Logf("%d concurrent GetToken on a cold key: %d identity-provider request(s), %d distinct token(s)", callers, got, len(distinct))
	if got != 1 || len(distinct) != 1 {
		t.Errorf("IdP requests = %d, distinct tokens = %d; want 1 and 1", got, len(distinct))
	}
}

func TestGetTokenFields(t *testing.T) {
	f := brokertest.Start(t)
	tok, err := f.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "acme", Scopes: []string{"b", "a", "b"}, MinValid: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if tok.GetTenant() != "acme" || strings.Join(tok.GetScopes(), " ") != "a b" || tok.GetTokenType() != "Bearer" || tok.GetVersion() == 0 {
		t.Errorf("token = tenant %q scopes %q type %q version %d; want acme, [a b], Bearer, a version",
			tok.GetTenant(), tok.GetScopes(), tok.GetTokenType(), tok.GetVersion())
	}
	if life := tok.GetExpireTime().AsTime().Sub(tok.GetIssueTime().AsTime()); life < 59*time.Minute || life > time.Hour {
		t.Errorf("lifetime %s, want the IdP's 1h", life)
	}
}

func TestStatusCodes(t *testing.T) {
	f := brokertest.Start(t)
	tooMany := make([]string, 33)
	for i := range tooMany {
		tooMany[i] = "scope" + strings.Repeat("x", i)
	}
	for _, tc := range []struct {
		name string
		req  *tbv1.GetTokenRequest
		code codes.Code
		msg  string
	}{
		{"bad tenant name", &tbv1.GetTokenRequest{Tenant: "Acme_Corp"}, codes.InvalidArgument,
			`broker: invalid argument: tenant name "Acme_Corp": must match [a-z0-9][a-z0-9-]{0,62} (lower-case letters, digits, hyphens)`},
		{"empty tenant", &tbv1.GetTokenRequest{}, codes.InvalidArgument,
			`broker: invalid argument: tenant name "": must match [a-z0-9][a-z0-9-]{0,62} (lower-case letters, digits, hyphens)`},
		{"unknown tenant", &tbv1.GetTokenRequest{Tenant: "nobody"}, codes.NotFound,
			`broker: unknown tenant "nobody"; ListTenants shows the configured tenants`},
		{"too many scopes", &tbv1.GetTokenRequest{Tenant: "acme", Scopes: tooMany}, codes.InvalidArgument,
			`broker: invalid argument: 33 distinct scopes; at most 32 are allowed`},
		{"bad scope", &tbv1.GetTokenRequest{Tenant: "acme", Scopes: []string{`a"b`}}, codes.InvalidArgument,
			`broker: invalid argument: scope "a\"b": invalid character '"' at byte 1; allowed are printable ASCII characters except space, '"' and '\'`},
		{"negative min_valid", &tbv1.GetTokenRequest{Tenant: "acme", MinValid: durationpb.New(-time.Second)}, codes.InvalidArgument,
			`min_valid -1s is negative; omit it for the default`},
		{"min_valid longer than tokens live", &tbv1.GetTokenRequest{Tenant: "acme", MinValid: durationpb.New(2 * time.Hour)}, codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.GetToken(t.Context(), tc.req)
			st := status.Convert(err)
			if st.Code() != tc.code || st.Message() != tc.msg {
				t.Errorf("got %s %q\nwant %s %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
		})
	}
}

func TestUpstreamFailuresMapToCodes(t *testing.T) {
	fi := faultidp.Start()
	defer fi.Close()
	fi.SetDefault(faultidp.OAuthError(401, "invalid_client", "bad secret"))
	f := brokertest.Start(t, broker.Tenant{Name: "revoked", TokenURL: fi.TokenURL(), ClientID: "c", ClientSecret: "revoked-secret"})
	_, err := f.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "revoked"})
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "invalid_client") {
		t.Errorf("revoked credentials: %s %q, want FAILED_PRECONDITION naming invalid_client", st.Code(), st.Message())
	}

	fi2 := faultidp.Start()
	defer fi2.Close()
	fi2.SetDefault(faultidp.Garbage())
	f2 := brokertest.Start(t, broker.Tenant{Name: "flaky", TokenURL: fi2.TokenURL(), ClientID: "c", ClientSecret: "flaky-secret"})
	_, err = f2.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "flaky"})
	if st := status.Convert(err); st.Code() != codes.Unavailable {
		t.Errorf("garbage from the IdP: %s %q, want UNAVAILABLE", st.Code(), st.Message())
	}
}

func TestWatchTokenPushesRefreshes(t *testing.T) {
	f := brokertest.Start(t)
	stream, err := f.API.WatchToken(t.Context(), &tbv1.WatchTokenRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	first := recvToken(t, stream)
	f.Token(first.GetAccessToken())
	// A resource server rejects the token: every watcher gets the new one.
	inv, err := f.API.InvalidateToken(t.Context(), &tbv1.InvalidateTokenRequest{Tenant: "acme", TokenSha256: broker.Fingerprint(first.GetAccessToken())})
	if err != nil {
		t.Fatal(err)
	}
	f.Token(inv.GetToken().GetAccessToken())
	second := recvToken(t, stream)
	if second.GetVersion() != first.GetVersion()+1 || second.GetAccessToken() != inv.GetToken().GetAccessToken() {
		t.Errorf("pushed version %d, want %d, the invalidation's replacement", second.GetVersion(), first.GetVersion()+1)
	}
}

func recvToken(t *testing.T, stream grpc.ServerStreamingClient[tbv1.WatchTokenResponse]) *tbv1.Token {
	t.Helper()
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		if m.GetToken() != nil {
			if m.GetStatus().GetState() != tbv1.TokenState_TOKEN_STATE_READY {
				t.Errorf("token pushed with state %s", m.GetStatus().GetState())
			}
			return m.GetToken()
		}
	}
}

func TestWatchEndsWhenTenantRemoved(t *testing.T) {
	f := brokertest.Start(t)
	stream, err := f.API.WatchToken(t.Context(), &tbv1.WatchTokenRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	f.Token(recvToken(t, stream).GetAccessToken())
	if err := f.Broker.SetTenants(nil); err != nil {
		t.Fatal(err)
	}
	for {
		_, err = stream.Recv()
		if err != nil {
			break
		}
	}
	if st := status.Convert(err); st.Code() != codes.NotFound {
		t.Errorf("stream ended with %s %q, want NOT_FOUND", st.Code(), st.Message())
	}
}

func TestHealthPerTenant(t *testing.T) {
	f := brokertest.Start(t)
	w, err := f.Health.Watch(t.Context(), &healthpb.HealthCheckRequest{Service: "tenant/acme"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
	}
	resp, err := f.Health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: ""})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("overall health: %v %v, want SERVING", resp.GetStatus(), err)
	}
	// The tenant's credentials are revoked: a rejected token that cannot
	// be replaced stays served while valid, so the tenant stays SERVING
	// until it is removed. Credentials that worked until now are retried
	// for broker.CredentialGrace (an IdP restarting): UNAVAILABLE.
	f.IdP.RemoveClient(f.Client.ID)
	if _, err := f.API.InvalidateToken(t.Context(), &tbv1.InvalidateTokenRequest{Tenant: "acme", TokenSha256: currentSHA(t, f)}); status.Code(err) != codes.Unavailable {
		t.Fatalf("invalidate with revoked credentials: %v, want UNAVAILABLE (the credential grace)", err)
	}
	if resp, err := f.Health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "tenant/acme"}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("tenant health after a failed invalidation: %v %v, want SERVING while its token is valid", resp.GetStatus(), err)
	}
	if err := f.Broker.SetTenants(nil); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
	}
	if _, err := f.Health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "tenant/nobody"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown tenant health: %v, want NOT_FOUND", err)
	}
}

func currentSHA(t *testing.T, f *brokertest.Fixture) string {
	tok, err := f.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	return broker.Fingerprint(tok.GetAccessToken())
}

func TestListTenants(t *testing.T) {
	f := brokertest.Start(t)
	currentSHA(t, f) // the default token is cached
	resp, err := f.API.ListTenants(t.Context(), &tbv1.ListTenantsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetTenants()) != 1 {
		t.Fatalf("%d tenants, want 1", len(resp.GetTenants()))
	}
	tn := resp.GetTenants()[0]
	if tn.GetName() != "acme" || tn.GetTokenUrl() != f.IdP.TokenURL() || tn.GetStatus().GetState() != tbv1.TokenState_TOKEN_STATE_READY || tn.GetExpireTime() == nil {
		t.Errorf("tenant = %v", tn)
	}
	if strings.Contains(resp.String(), f.Client.Secret) || strings.Contains(resp.String(), f.Client.ID+"\"") {
		t.Error("ListTenants leaks credentials")
	}
}

func TestShutdownEndsStreamsUnavailable(t *testing.T) {
	f := brokertest.Start(t)
	stream, err := f.API.WatchToken(t.Context(), &tbv1.WatchTokenRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	f.Token(recvToken(t, stream).GetAccessToken())
	done := make(chan struct{})
	go func() { shutdown(t, f.Server); close(done) }()
	for err == nil {
		_, err = stream.Recv()
	}
	if st := status.Convert(err); st.Code() != codes.Unavailable || errors.Is(err, io.EOF) {
		t.Errorf("stream ended with %s %q, want UNAVAILABLE", st.Code(), st.Message())
	}
	<-done
	resp, err := f.Health.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
		t.Error("still SERVING after shutdown")
	}
}

// shutdown stops srv gracefully within a bounded time; a test whose calls
// do not finish fails.
func shutdown(t testing.TB, srv *server.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestGetTokenConcurrentHits: concurrent cache hits on two keys each get
// their key's token (the server shares one response message per token
// among calls: -race checks that marshalling it concurrently is safe),
// and once the broker replaces a token, hits get the new one.
func TestGetTokenConcurrentHits(t *testing.T) {
	f := brokertest.Start(t)
	reqs := []*tbv1.GetTokenRequest{{Tenant: "acme"}, {Tenant: "acme", Scopes: []string{"read"}}}
	first := make([]*tbv1.Token, len(reqs))
	for i, req := range reqs {
		tok, err := f.GetToken(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		first[i] = tok
	}
	if first[0].GetAccessToken() == first[1].GetAccessToken() {
		t.Fatal("two scope sets got one token; the test needs two")
	}
	hits := func(want []string) {
		t.Helper()
		var wg sync.WaitGroup
		for range 20 {
			for i, req := range reqs {
				wg.Go(func() {
					for range 20 {
						tok, err := f.GetToken(t.Context(), req)
						if err != nil {
							t.Error(err)
							return
						}
						if tok.GetAccessToken() != want[i] || tok.GetTenant() != "acme" {
							t.Errorf("request %d got another token (tenant %q)", i, tok.GetTenant())
							return
						}
					}
				})
			}
		}
		wg.Wait()
	}
	hits([]string{first[0].GetAccessToken(), first[1].GetAccessToken()})

	resp, err := f.API.InvalidateToken(t.Context(), &tbv1.InvalidateTokenRequest{Tenant: "acme", TokenSha256: broker.Fingerprint(first[0].GetAccessToken())})
	if err != nil {
		t.Fatal(err)
	}
	renewed := resp.GetToken().GetAccessToken()
	f.Token(renewed)
	if renewed == first[0].GetAccessToken() || resp.GetToken().GetVersion() <= first[0].GetVersion() {
		t.Fatalf("InvalidateToken returned the rejected token (version %d)", resp.GetToken().GetVersion())
	}
	hits([]string{renewed, first[1].GetAccessToken()})
}
