package broker_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type env struct {
	t      *testing.T
	clock  *clockwork.FakeClock
	logs   *logtest.Buffer
	broker *broker.Broker
	idp    *devidp.Server
	client devidp.Client
	issued map[string]bool // access tokens seen, for the leak check
	mu     sync.Mutex
}

// newEnv starts a real identity provider and a broker with one tenant
// "acme" on a fake clock.
func newEnv(t *testing.T, cfg broker.Config) *env {
	t.Helper()
	client := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	e := &env{t: t, clock: clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		logs: &logtest.Buffer{}, idp: idp, client: client, issued: map[string]bool{}}
	if cfg.Tenants == nil {
		cfg.Tenants = []broker.Tenant{{Name: "acme", TokenURL: idp.TokenURL(), ClientID: client.ID, ClientSecret: creds.Secret(client.Secret)}}
	}
	cfg.Clock = e.clock
	cfg.Logger = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.broker = b
	t.Cleanup(func() {
		b.Close()
		e.assertNoSecretsInLogs()
	})
	return e
}

func (e *env) token(ctx context.Context, scopes []string, minValid time.Duration) (*broker.Token, error) {
	tok, err := e.broker.Token(ctx, "acme", scopes, minValid)
	if tok != nil {
		e.mu.Lock()
		e.issued[tok.AccessToken] = true
		e.mu.Unlock()
	}
	return tok, err
}

func (e *env) mustToken(scopes []string, minValid time.Duration) *broker.Token {
	e.t.Helper()
	tok, err := e.token(e.t.Context(), scopes, minValid)
	if err != nil {
		e.t.Fatalf("Token: %v", err)
	}
	return tok
}

func (e *env) assertNoSecretsInLogs() {
	e.t.Helper()
	logs := e.logs.String()
	if strings.Contains(logs, e.client.Secret) {
		e.t.Error("logs contain the client secret")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for tok := range e.issued {
		if strings.Contains(logs, tok) {
			e.t.Error("logs contain an issued access token")
		}
	}
}

// settle waits until the broker has planned its next request: the single
// key's timer is set again.
func (e *env) settle() {
	e.t.Helper()
	if err := e.clock.BlockUntilContext(e.t.Context(), 1); err != nil {
		e.t.Fatalf("broker did not plan its next request: %v", err)
	}
}

// step advances the clock to the single key's planned request and waits
// until the broker has made it and planned the next.
func (e *env) step() broker.Status {
	e.t.Helper()
	e.settle()
	e.clock.Advance(e.status().NextRefresh.Sub(e.clock.Now()))
	e.settle()
	return e.status()
}

func (e *env) status() broker.Status { return e.broker.Tenants()[0].Status }

// next waits for the watch's next update that satisfies ok.
func next(t *testing.T, w *broker.Watch, ok func(broker.Update) bool) broker.Update {
	t.Helper()
	bound := time.After(30 * time.Second) // a bound for a broken test, not a synchronisation
	for {
		select {
		case <-w.Ready():
		case <-bound:
			t.Fatal("no matching update within 30s")
		}
		u, got, ended := w.Next()
		if ended {
			t.Fatalf("watch ended: %v", w.Err())
		}
		if got && ok(u) {
			return u
		}
	}
}

// awaitEnd reads w until the broker ends it, and returns why.
func awaitEnd(t *testing.T, w *broker.Watch) error {
	t.Helper()
	bound := time.After(30 * time.Second) // a bound for a broken test, not a synchronisation
	for {
		select {
		case <-w.Ready():
		case <-bound:
			t.Fatal("watch did not end within 30s")
		}
		if _, _, ended := w.Next(); ended {
			return w.Err()
		}
	}
}

func ptr[T any](v T) *T { return &v }

func hasVersion(v uint64) func(broker.Update) bool {
	return func(u broker.Update) bool { return u.Token != nil && u.Token.Version >= v }
}

func inState(s broker.State) func(broker.Update) bool {
	return func(u broker.Update) bool { return u.Status.State == s }
}

func TestColdKeyConcurrentCallersCauseOneRequest(t *testing.T) {
	e := newEnv(t, broker.Config{})
	e.mustToken(nil, 0) // the default key's warm-up request is done
	before := e.idp.RequestsFor(e.client.ID)

	const callers = 1000
	var wg sync.WaitGroup
	versions := make(chan uint64, callers)
	for range callers {
		wg.Go(func() {
			tok, err := e.token(t.Context(), []string{"read", "write"}, 0)
			if err != nil {
				t.Error(err)
				return
			}
			versions <- tok.Version
		})
	}
	wg.Wait()
	close(versions)
	first := <-versions
	for v := range versions {
		if v != first {
			t.Fatalf("callers got versions %d and %d, want every caller to share one token", first, v)
		}
	}
	if got := e.idp.RequestsFor(e.client.ID) - before; got != 1 {
		t.Errorf("identity provider saw %d requests for %d concurrent callers of a cold key, want 1", got, callers)
	}
}

// gatedFetcher blocks every fetch until released: a hung identity provider.
type gatedFetcher struct {
	release chan struct{}
	mu      sync.Mutex
	calls   int
}

func (g *gatedFetcher) Fetch(ctx context.Context, _ []string) (upstream.Grant, error) {
	g.mu.Lock()
	g.calls++
	g.mu.Unlock()
	select {
	case <-g.release:
		return upstream.Grant{AccessToken: "gated-access-token", TokenType: "Bearer", ExpiresIn: time.Hour}, nil
	case <-ctx.Done():
		return upstream.Grant{}, ctx.Err()
	}
}

func TestCallerCancellingDoesNotFailOthers(t *testing.T) {
	g := &gatedFetcher{release: make(chan struct{})}
	e := newEnv(t, broker.Config{Tenants: []broker.Tenant{{Name: "acme", Fetcher: g}}})
	e.issued["gated-access-token"] = true

	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() { _, err := e.token(ctx, nil, 0); first <- err }()
	second := make(chan error, 1)
	go func() { _, err := e.token(t.Context(), nil, 0); second <- err }()

	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller got %v, want context.Canceled", err)
	}
	close(g.release)
	if err := <-second; err != nil {
		t.Fatalf("other caller failed after the first cancelled: %v", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.calls != 1 {
		t.Errorf("fetches = %d, want 1", g.calls)
	}
}

func TestRefreshAheadOfExpiry(t *testing.T) {
	e := newEnv(t, broker.Config{})
	w, err := e.broker.Watch("acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	u := next(t, w, hasVersion(1))
	issued := e.clock.Now()
	lifetime := u.Token.Expiry.Sub(issued)
	if lifetime != time.Hour {
		t.Fatalf("lifetime = %s, want the IdP's 1h", lifetime)
	}
	lead := u.Status.NextRefresh.Sub(issued)
	if lead < lifetime/2 || lead > lifetime*4/5 {
		t.Fatalf("refresh planned after %s, want within 50–80%% of %s", lead, lifetime)
	}

	before := e.idp.Requests()
	e.clock.Advance(lead - time.Second)
	if got := e.idp.Requests(); got != before {
		t.Fatalf("refreshed %d times before the planned point", got-before)
	}
	e.clock.Advance(time.Second)
	u = next(t, w, hasVersion(2))
	if !u.Token.Expiry.After(issued.Add(lifetime)) {
		t.Errorf("refreshed token expires %s, not later than the old one", u.Token.Expiry)
	}
	if tok := e.mustToken(nil, 0); tok.Version != 2 {
		t.Errorf("GetToken after the refresh serves version %d, want 2", tok.Version)
	}
}

func TestMinValid(t *testing.T) {
	e := newEnv(t, broker.Config{})
	e.idp.SetTokenLifetime(40 * time.Minute)
	scopes := []string{"x"}
	first := e.mustToken(scopes, 0)
	e.clock.Advance(15 * time.Minute) // 25 minutes left, before the refresh point

	if tok := e.mustToken(scopes, 20*time.Minute); tok.Version != first.Version {
		t.Errorf("min_valid 20m with 25m left fetched version %d, want the cached %d", tok.Version, first.Version)
	}
	tok := e.mustToken(scopes, 30*time.Minute)
	if tok.Version == first.Version {
		t.Fatal("min_valid 30m with 25m left served the cached token")
	}
	if left := tok.Expiry.Sub(e.clock.Now()); left < 30*time.Minute {
		t.Errorf("token has %s left, want at least the requested 30m", left)
	}
	// Above the cap: treated as MaxMinValid, which the fresh token meets.
	if again := e.mustToken(scopes, 5*time.Hour); again.Version != tok.Version {
		t.Errorf("min_valid above the cap fetched again (version %d)", again.Version)
	}
	if _, err := e.token(t.Context(), nil, -time.Second); !errors.Is(err, broker.ErrInvalidArgument) {
		t.Errorf("negative min_valid: err = %v, want ErrInvalidArgument", err)
	}
}

func TestTooShortLived(t *testing.T) {
	e := newEnv(t, broker.Config{})
	e.idp.SetTokenLifetime(5 * time.Minute)
	_, err := e.token(t.Context(), []string{"x"}, 10*time.Minute)
	var tsl *broker.TooShortLivedError
	if !errors.As(err, &tsl) {
		t.Fatalf("err = %v, want *TooShortLivedError", err)
	}
	if tsl.Lifetime != 5*time.Minute {
		t.Errorf("reported lifetime %s, want 5m", tsl.Lifetime)
	}
}

// faultEnv runs the broker against a scripted identity provider.
// The first responses are queued, and def (when set) answers after them,
// all before the broker starts and sends its first request.
func faultEnv(t *testing.T, def *faultidp.Response, first ...faultidp.Response) (*env, *faultidp.Server, *broker.Watch) {
	t.Helper()
	f := faultidp.Start()
	t.Cleanup(f.Close)
	f.Push(first...)
	if def != nil {
		f.SetDefault(*def)
	}
	e := newEnv(t, broker.Config{Tenants: []broker.Tenant{{
		Name: "acme", TokenURL: f.TokenURL(), ClientID: "client", ClientSecret: "s3cr3t-value",
	}}})
	e.client.Secret = "s3cr3t-value"
	w, err := e.broker.Watch("acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return e, f, w
}

func TestServeStaleThenFail(t *testing.T) {
	e, _, w := faultEnv(t, ptr(faultidp.OAuthError(503, "temporarily_unavailable", "maintenance")), faultidp.OK("tok-1", 600))
	u := next(t, w, hasVersion(1))
	e.issued["tok-1"] = true

	e.clock.Advance(u.Status.NextRefresh.Sub(e.clock.Now()))
	u = next(t, w, inState(broker.StateStale))
	if u.Token == nil || u.Token.AccessToken != "tok-1" {
		t.Fatal("stale update does not carry the still-valid token")
	}
	if !strings.Contains(u.Status.LastError.Error(), "temporarily_unavailable") {
		t.Errorf("last error %q does not say what the IdP answered", u.Status.LastError)
	}
	if tok := e.mustToken(nil, 0); tok.AccessToken != "tok-1" {
		t.Error("GetToken does not serve the valid token while refreshes fail")
	}

	// Keep failing until the token expires: the key turns FAILING and
	// callers get the upstream error.
	for st := e.step(); st.State != broker.StateFailing; st = e.step() {
		if e.clock.Now().After(u.Token.Expiry) {
			t.Fatalf("state %s after the token expired, want failing", st.State)
		}
	}
	if u := next(t, w, inState(broker.StateFailing)); u.Token != nil {
		t.Error("FAILING update still carries a token")
	}
	_, err := e.token(t.Context(), nil, 0)
	var ue *upstream.Error
	if !errors.As(err, &ue) || ue.Permanent {
		t.Fatalf("err = %v, want a transient *upstream.Error", err)
	}
}

func TestBackoffGrowsAndRecovers(t *testing.T) {
	// Unwatched: watchers are demand for early attempts (TestWatchersAreDemand).
	e, f := unwatchedFaultEnv(t, faultidp.OAuthError(500, "server_error", ""))
	e.settle()
	var delays []time.Duration
	for range 5 {
		delays = append(delays, e.status().NextRefresh.Sub(e.clock.Now()))
		e.step()
	}
	if n := f.Requests(); n != 6 {
		t.Errorf("%d requests, want 6: one per planned retry", n)
	}
	for i := 1; i < len(delays); i++ {
		// Doubling with ±20 % jitter: each delay is at least 1.3× the last.
		if ratio := float64(delays[i]) / float64(delays[i-1]); ratio < 1.3 {
			t.Errorf("retry delays %v do not grow exponentially (ratio %.2f at %d)", delays, ratio, i)
		}
	}
	if delays[0] > 2*time.Second {
		t.Errorf("first retry after %s, want about 1s", delays[0])
	}
	f.SetDefault(faultidp.OK("tok-ok", 3600))
	e.issued["tok-ok"] = true
	if st := e.step(); st.State != broker.StateReady || st.LastError != nil {
		t.Errorf("recovered key is %s and reports %v, want READY without error", st.State, st.LastError)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	e, f, w := faultEnv(t, nil, faultidp.TooManyRequests("120"))
	u := next(t, w, inState(broker.StateFailing))
	if d := u.Status.NextRefresh.Sub(e.clock.Now()); d != 120*time.Second {
		t.Fatalf("next attempt in %s, want the server's Retry-After 120s", d)
	}
	// Callers during the back-off get the error without a new request.
	_, err := e.token(t.Context(), nil, 0)
	var ue *upstream.Error
	if !errors.As(err, &ue) || ue.StatusCode != 429 {
		t.Fatalf("err = %v, want the 429", err)
	}
	e.clock.Advance(119 * time.Second)
	if n := f.Requests(); n != 1 {
		t.Fatalf("%d requests before Retry-After passed, want 1", n)
	}
	f.Push(faultidp.OK("tok-after", 3600))
	e.issued["tok-after"] = true
	e.clock.Advance(time.Second)
	next(t, w, inState(broker.StateReady))
}

func TestPermanentErrorIsNotHammered(t *testing.T) {
	e, f, w := faultEnv(t, ptr(faultidp.OAuthError(401, "invalid_client", "Client authentication failed")))
	u := next(t, w, inState(broker.StateFailing))
	if d := u.Status.NextRefresh.Sub(e.clock.Now()); d < 4*time.Minute {
		t.Errorf("permanent error retried after %s, want a slow retry (minutes)", d)
	}
	for range 10 {
		_, err := e.token(t.Context(), nil, 0)
		var ue *upstream.Error
		if !errors.As(err, &ue) || !ue.Permanent {
			t.Fatalf("err = %v, want a permanent *upstream.Error", err)
		}
	}
	if n := f.Requests(); n != 1 {
		t.Errorf("identity provider saw %d requests, want 1 for a permanent failure", n)
	}
	if strings.Contains(u.Status.LastError.Error(), "s3cr3t-value") {
		t.Error("error message leaks the client secret")
	}
}

func TestInvalidateCoalesces(t *testing.T) {
	e := newEnv(t, broker.Config{})
	old := e.mustToken(nil, 0)
	before := e.idp.RequestsFor(e.client.ID)

	var wg sync.WaitGroup
	got := make(chan *broker.Token, 100)
	for range 100 {
		wg.Go(func() {
			tok, err := e.broker.Invalidate(t.Context(), "acme", nil, old.SHA256())
			if err != nil {
				t.Error(err)
				return
			}
			got <- tok
		})
	}
	wg.Wait()
	close(got)
	for tok := range got {
		if tok.Version == old.Version {
			t.Fatal("invalidation returned the rejected token")
		}
	}
	if n := e.idp.RequestsFor(e.client.ID) - before; n != 1 {
		t.Errorf("100 reports of one rejected token caused %d requests, want 1", n)
	}
	// A late report of the old token changes nothing.
	cur, err := e.broker.Invalidate(t.Context(), "acme", nil, old.SHA256())
	if err != nil || cur.Version != 2 {
		t.Fatalf("late report: %v, version %d; want the current version 2", err, cur.Version)
	}
	if n := e.idp.RequestsFor(e.client.ID) - before; n != 1 {
		t.Errorf("a report of an already replaced token caused a request")
	}
	if _, err := e.broker.Invalidate(t.Context(), "acme", nil, "not-hex"); !errors.Is(err, broker.ErrInvalidArgument) {
		t.Errorf("bad fingerprint: err = %v, want ErrInvalidArgument", err)
	}
}

// BenchmarkTokenCached measures the in-process cached path that every
// GetToken and direct-mode request takes (target: 0 allocs/op).
//
//	go test -run='^$' -bench=TokenCached -benchmem ./broker/
func BenchmarkTokenCached(b *testing.B) {
	client := devidp.NewClient()
	idp, err := devidp.Start(b.Context(), devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		b.Fatal(err)
	}
	defer idp.Close()
	br, err := broker.New(broker.Config{Tenants: []broker.Tenant{{Name: "acme", TokenURL: idp.TokenURL(), ClientID: client.ID, ClientSecret: creds.Secret(client.Secret)}}})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	scopes := []string{"read"}
	if _, err := br.Token(b.Context(), "acme", scopes, 0); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := br.Token(b.Context(), "acme", scopes, 0); err != nil {
			b.Fatal(err)
		}
	}
}
