package clientlib_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/clientlib"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// fast makes reconnects quick for tests.
var fast = clientlib.WithReconnectBackoff(10*time.Millisecond, 50*time.Millisecond)

func newSource(t testing.TB, s *stack, opts ...clientlib.SourceOption) *clientlib.Source {
	t.Helper()
	src, err := clientlib.NewSource(t.Context(), dial(t, s), "default", append([]clientlib.SourceOption{fast}, opts...)...)
	if err != nil {
		t.Fatalf("NewSource: %v", err)
	}
	t.Cleanup(func() { _ = src.Close() })
	return src
}

func TestSourceFirstToken(t *testing.T) {
	s := startStack(t, stackConfig{})
	before := time.Now()
	src := newSource(t, s)

	tok, err := src.Token()
	if err != nil {
		t.Fatal(err)
	}
	cur, err := s.Current(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != cur.AccessToken || tok.Type() != "Bearer" {
		t.Fatalf("token type %q, same as the broker's: %v; want the broker's Bearer token", tok.Type(), tok.AccessToken == cur.AccessToken)
	}
	if !tok.Expiry.Equal(cur.Expiry) || tok.Expiry.Before(before.Add(59*time.Minute)) {
		t.Fatalf("expiry %v, want the broker's %v, about an hour ahead", tok.Expiry, cur.Expiry)
	}
	if got := tok.Extra(clientlib.ExtraTokenSHA256); got != broker.Fingerprint(tok.AccessToken) {
		t.Fatalf("Extra(%q) = %v, want the token's fingerprint", clientlib.ExtraTokenSHA256, got)
	}

	// The first token came over the watch stream, and the cached token
	// is served without any further call.
	for range 1000 {
		again, err := src.TokenContext(t.Context())
		if err != nil || again != tok {
			t.Fatalf("TokenContext = %p, %v; want the cached token %p", again, err, tok)
		}
	}
	if n := s.Calls("GetToken"); n != 0 {
		t.Fatalf("GetToken calls = %d, want 0", n)
	}
	if n := s.Calls("WatchToken"); n != 1 {
		t.Fatalf("WatchToken calls = %d, want 1", n)
	}
	if n := s.IdP.RequestsFor(s.Client.ID); n != 1 {
		t.Fatalf("IdP requests = %d, want 1", n)
	}
}

func TestSourceRefreshPushed(t *testing.T) {
	s := startStack(t, stackConfig{})
	src := newSource(t, s)
	old, _ := src.Token()
	drain(src.Updated())

	// The broker replaces the token; the stream pushes the new one.
	if _, err := s.Broker().Invalidate(t.Context(), "default", nil, broker.Fingerprint(old.AccessToken)); err != nil {
		t.Fatal(err)
	}
	wait(t, src.Updated(), "the pushed token")
	tok, err := src.Token()
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := s.Current(t.Context())
	if tok.AccessToken == old.AccessToken || tok.AccessToken != cur.AccessToken {
		t.Fatal("after the push, Token does not return the broker's new token")
	}
	if n := s.Calls("GetToken"); n != 0 {
		t.Fatalf("GetToken calls = %d, want 0: the new token must arrive by the stream", n)
	}
}

func TestSourceRefreshAheadPushed(t *testing.T) {
	// Two-second tokens: the broker refreshes after one second and pushes.
	s := startStack(t, stackConfig{TokenLifetime: 2 * time.Second})
	src := newSource(t, s)
	old, _ := src.Token()
	drain(src.Updated())

	wait(t, src.Updated(), "the refreshed token")
	tok, err := src.Token()
	if err != nil {
		t.Fatal(err)
	}
	// The dev IdP's JWT exp has whole seconds, which bound the expiry: a
	// refresh within the second of issue may keep the same expiry.
	if tok.AccessToken == old.AccessToken || tok.Expiry.Before(old.Expiry) {
		t.Fatalf("the pushed token is not newer: expiry %v, old %v", tok.Expiry, old.Expiry)
	}
	if n := s.Calls("GetToken"); n != 0 {
		t.Fatalf("GetToken calls = %d, want 0", n)
	}
}

func TestSourceBrokerRestart(t *testing.T) {
	s := startStack(t, stackConfig{})
	src := newSource(t, s)
	res := startResource(t, s.IdP, s.Client.ID)
	hc := newTestClient(t, src)
	old, _ := src.Token()
	drain(src.Updated())

	s.Stop()
	// While the broker is down, callers keep getting the valid token and
	// requests keep working.
	for range 100 {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		tok, err := src.TokenContext(ctx)
		cancel()
		if err != nil || tok != old {
			t.Fatalf("broker down: TokenContext = %v; want the cached token", err)
		}
	}
	if code := get(t, hc, res.URL); code != 200 {
		t.Fatalf("broker down: GET = %d, want 200", code)
	}

	// A new broker process on the same address fetches a new token; the
	// Source reconnects and follows it.
	if err := s.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	wait(t, src.Updated(), "the new broker's token")
	tok, err := src.Token()
	if err != nil {
		t.Fatal(err)
	}
	cur, err := s.Current(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == old.AccessToken || tok.AccessToken != cur.AccessToken {
		t.Fatal("after the restart, Token does not return the new broker's token")
	}
	if code := get(t, hc, res.URL); code != 200 {
		t.Fatalf("after the restart: GET = %d, want 200", code)
	}
}

func TestSourceTenantRemoved(t *testing.T) {
	s := startStack(t, stackConfig{})
	src := newSource(t, s)
	drain(src.Updated())

	if err := s.Broker().SetTenants(nil); err != nil {
		t.Fatal(err)
	}
	wait(t, src.Updated(), "the Source to stop")
	for range 2 {
		tok, err := src.Token()
		if tok != nil || status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), `tenant "default"`) {
			t.Fatalf("Token after removal = %v, %v; want a NotFound error naming the tenant", tok, err)
		}
	}
	// Stopped for good: Invalidate fails the same way without a call.
	if _, err := src.Invalidate(t.Context(), &oauth2.Token{AccessToken: "x"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Invalidate after removal: %v, want NotFound", err)
	}
	if n := s.Calls("InvalidateToken"); n != 0 {
		t.Fatalf("InvalidateToken calls = %d, want 0", n)
	}
}

func TestSourceFallbackToGetToken(t *testing.T) {
	s := startStack(t, stackConfig{})
	s.failWatch.Store(true) // streams fail; unary calls work
	src := newSource(t, s)
	res := startResource(t, s.IdP, s.Client.ID)
	res.rejectFirst = true
	hc := newTestClient(t, src)

	tok, err := src.Token()
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := s.Current(t.Context())
	if tok.AccessToken != cur.AccessToken {
		t.Fatal("NewSource did not get the broker's token through GetToken")
	}
	if n := s.Calls("GetToken"); n != 1 {
		t.Fatalf("GetToken calls = %d, want 1", n)
	}
	// Fresh enough: no more calls.
	for range 100 {
		if _, err := src.Token(); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Calls("GetToken"); n != 1 {
		t.Fatalf("GetToken calls = %d after cached reads, want 1", n)
	}
	// Invalidation works without a stream too.
	if code := get(t, hc, res.URL); code != 200 {
		t.Fatalf("GET = %d, want 200 after invalidate and retry", code)
	}
	if n := s.Calls("InvalidateToken"); n != 1 {
		t.Fatalf("InvalidateToken calls = %d, want 1", n)
	}
}

func TestSourceStaleTokenRefetched(t *testing.T) {
	// Tokens live 4s and the Source wants 3s left, capped at half the
	// lifetime: with the stream down, a token past that is fetched again.
	s := startStack(t, stackConfig{TokenLifetime: 4 * time.Second})
	s.failWatch.Store(true)
	src := newSource(t, s, clientlib.WithMinValid(3*time.Second))
	first, _ := src.Token()
	drain(src.Updated())
	wait(t, src.Updated(), "a token fetched with GetToken after the first became due")
	tok, err := src.Token()
	if err != nil || tok.AccessToken == first.AccessToken {
		t.Fatalf("Token = %v; want a newer token", err)
	}
	if n := s.Calls("GetToken"); n < 2 {
		t.Fatalf("GetToken calls = %d, want at least 2", n)
	}
}

func TestNewSourceErrors(t *testing.T) {
	s := startStack(t, stackConfig{})
	conn := dial(t, s)
	for _, tc := range []struct {
		name   string
		tenant string
		opts   []clientlib.SourceOption
		code   codes.Code
		kind   error
		want   string
	}{
		// The messages after the prefixes are the broker's and package
		// names', tested there.
		{"unknown tenant", "nope", nil, codes.NotFound, clientlib.ErrUnknownTenant,
			`clientlib: tenant "nope": WatchToken: rpc error: code = NotFound desc = broker: unknown tenant "nope"`},
		{"bad tenant", "No_Such", nil, codes.OK, clientlib.ErrInvalidArgument, `clientlib: NewSource: tenant name "No_Such"`},
		{"bad scope", "default", []clientlib.SourceOption{clientlib.WithScopes("a b")}, codes.OK, clientlib.ErrInvalidArgument,
			`clientlib: NewSource: WithScopes: scope "a b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No deadline: these must fail at once rather than wait.
			src, err := clientlib.NewSource(context.Background(), conn, tc.tenant, tc.opts...)
			if src != nil || err == nil {
				t.Fatal("NewSource succeeded")
			}
			if !strings.HasPrefix(err.Error(), tc.want) || status.Code(err) != tc.code && tc.code != codes.OK || !errors.Is(err, tc.kind) {
				t.Fatalf("error\n%v\nwant\n%v (code %v, kind %v)", err, tc.want, tc.code, tc.kind)
			}
		})
	}
	if _, err := clientlib.NewSource(t.Context(), nil, "default"); err == nil || err.Error() != "clientlib: NewSource: conn is nil" {
		t.Fatalf("nil conn: %v", err)
	}
}

func TestNewSourceRejectedCredentials(t *testing.T) {
	s := startStack(t, stackConfig{Secret: "wrong"})
	src, err := clientlib.NewSource(context.Background(), dial(t, s), "default", fast)
	if src != nil || status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("NewSource = %v; want FailedPrecondition naming invalid_client", err)
	}
}

func TestNewSourceContextEnds(t *testing.T) {
	// The IdP fails with 503: the broker keeps trying, so does NewSource,
	// until its context ends. The error says what went wrong.
	idp := faultidp.Start()
	defer idp.Close()
	idp.SetDefault(faultidp.OAuthError(503, "temporarily_unavailable", "maintenance"))
	s := startStack(t, stackConfig{})
	if err := s.Broker().SetTenants([]broker.Tenant{{Name: "default", TokenURL: idp.TokenURL(), ClientID: "c", ClientSecret: "s"}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	src, err := clientlib.NewSource(ctx, dial(t, s), "default", fast)
	if src != nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("NewSource = %v; want DeadlineExceeded and the IdP's failure", err)
	}
}

func TestSourceClose(t *testing.T) {
	s := startStack(t, stackConfig{})
	conn := dial(t, s)
	src, err := clientlib.NewSource(t.Context(), conn, "default")
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := src.Token()
	for range 2 {
		if err := src.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.Token(); !errors.Is(err, clientlib.ErrClosed) {
		t.Fatalf("Token after Close: %v, want ErrClosed", err)
	}
	if _, err := src.Invalidate(t.Context(), tok); !errors.Is(err, clientlib.ErrClosed) {
		t.Fatalf("Invalidate after Close: %v, want ErrClosed", err)
	}
	// The connection was the caller's and still works.
	if _, err := tbv1.NewTokenBrokerServiceClient(conn).ListTenants(t.Context(), &tbv1.ListTenantsRequest{}); err != nil {
		t.Fatalf("conn after Source.Close: %v", err)
	}
}

func TestSourceInvalidateCoalesces(t *testing.T) {
	s := startStack(t, stackConfig{})
	src := newSource(t, s)
	old, _ := src.Token()
	results := make(chan string, 50)
	for range cap(results) {
		go func() {
			tok, err := src.Invalidate(context.Background(), old)
			if err != nil {
				results <- "error: " + err.Error()
				return
			}
			results <- tok.AccessToken
		}()
	}
	var first string
	for i := range cap(results) {
		got := wait(t, results, "Invalidate")
		if i == 0 {
			first = got
		}
		if got == old.AccessToken || got != first {
			t.Fatalf("Invalidate returned %.20q, want one and the same new token", got)
		}
	}
	if n := s.Calls("InvalidateToken"); n != 1 {
		t.Fatalf("InvalidateToken calls = %d, want 1", n)
	}
	// A late report of the replaced token makes no call.
	if _, err := src.Invalidate(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	if n := s.Calls("InvalidateToken"); n != 1 {
		t.Fatalf("InvalidateToken calls after a late report = %d, want 1", n)
	}
}
