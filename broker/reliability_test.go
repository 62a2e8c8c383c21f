package broker_test

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// Issue 10.2: versions only increase per key, whatever happens to the
// tenant's configuration.
func TestVersionsMonotonicAcrossReconfiguration(t *testing.T) {
	e := newEnv(t, broker.Config{})
	spec := broker.Tenant{Name: "acme", TokenURL: e.idp.TokenURL(), ClientID: e.client.ID, ClientSecret: creds.Secret(e.client.Secret)}
	last := map[string]uint64{}
	check := func(step string) {
		t.Helper()
		for _, scopes := range [][]string{nil, {"x"}} {
			tok := e.mustToken(scopes, 0)
			k := strings.Join(scopes, " ")
			if tok.Version <= last[k] {
				t.Fatalf("%s: key %q serves version %d after version %d", step, k, tok.Version, last[k])
			}
			last[k] = tok.Version
		}
	}
	check("first tokens")
	spec.Scopes = []string{"read"}
	if err := e.broker.SetTenants([]broker.Tenant{spec}); err != nil {
		t.Fatal(err)
	}
	check("after the default scopes changed")
	if err := e.broker.SetTenants(nil); err != nil {
		t.Fatal(err)
	}
	if err := e.broker.SetTenants([]broker.Tenant{spec}); err != nil {
		t.Fatal(err)
	}
	check("after the tenant was removed and added again")
}

// Issue 10.3: a caller's request retries at once (at most every
// CallerRetryInterval) instead of waiting for the backoff timer.
func TestRecoveryOnNextCallerRequest(t *testing.T) {
	// Unwatched: a watcher would be demand itself.
	e, f := unwatchedFaultEnv(t, faultidp.Garbage())
	for range 5 { // the backoff grows to about 30 s
		e.step()
	}
	planned := e.status().NextRefresh
	if wait := planned.Sub(e.clock.Now()); wait < 10*time.Second {
		t.Fatalf("backoff is only %s; the test needs a long one", wait)
	}
	f.SetDefault(faultidp.OK("tok-recovered", 3600))
	e.issued["tok-recovered"] = true
	e.clock.Advance(broker.CallerRetryInterval)
	tok, err := e.token(t.Context(), nil, 0)
	if err != nil {
		t.Fatalf("first caller after the IdP recovered: %v, want the new token", err)
	}
	if tok.AccessToken != "tok-recovered" || !e.clock.Now().Before(planned) {
		t.Errorf("recovered at %s, want before the backoff timer's %s", e.clock.Now(), planned)
	}
}

// Issue 10.3: a flood of callers on a failing key costs about one IdP
// request per second, not one per caller.
func TestCallerFloodBoundedRequests(t *testing.T) {
	e, f, w := faultEnv(t, ptr(faultidp.OAuthError(500, "server_error", "")))
	next(t, w, inState(broker.StateFailing))
	const seconds = 10
	for range seconds * 10 {
		e.clock.Advance(100 * time.Millisecond)
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				var ue *upstream.Error
				if _, err := e.token(t.Context(), nil, 0); !errors.As(err, &ue) {
					t.Errorf("caller got %v, want the upstream error", err)
				}
			})
		}
		wg.Wait()
	}
	// One attempt per CallerRetryInterval, plus backoff timers that fire no
	// sooner than 0.8 s after a failure, plus the first request.
	if n := f.Requests(); n > seconds*5/4+1 {
		t.Errorf("2000 callers over %d s caused %d IdP requests, want at most ~1 per second", seconds, n)
	}
}

// Issue 10.3: a reload retries a permanently failed tenant at once, with
// unchanged or with changed creds.
func TestPermanentFailureRetriedOnReload(t *testing.T) {
	e, f, w := faultEnv(t, ptr(faultidp.OAuthError(401, "invalid_client", "bad secret")))
	next(t, w, inState(broker.StateFailing))
	spec := broker.Tenant{Name: "acme", TokenURL: f.TokenURL(), ClientID: "client", ClientSecret: "s3cr3t-value"}

	// Unchanged spec: the operator fixed the client at the IdP.
	f.Push(faultidp.OK("tok-fixed", 3600))
	e.issued["tok-fixed"] = true
	if err := e.broker.SetTenants([]broker.Tenant{spec}); err != nil {
		t.Fatal(err)
	}
	if u := next(t, w, inState(broker.StateReady)); u.Token.AccessToken != "tok-fixed" {
		t.Fatal("reload did not retry the permanently failed tenant")
	}

	// Changed credentials: the new tenant fetches at once.
	f.Push(faultidp.OAuthError(401, "invalid_client", "bad secret"))
	e.clock.Advance(time.Hour + time.Minute) // the refresh fails permanently; the token expires
	next(t, w, inState(broker.StateFailing))
	spec.ClientSecret = "n3w-s3cr3t-value"
	f.Push(faultidp.OK("tok-new-secret", 3600))
	e.issued["tok-new-secret"] = true
	if err := e.broker.SetTenants([]broker.Tenant{spec}); err != nil {
		t.Fatal(err)
	}
	tok, err := e.token(t.Context(), nil, 0)
	if err != nil || tok.AccessToken != "tok-new-secret" {
		t.Fatalf("after new credentials: %v, want the new token at once", err)
	}
	if form, _ := f.LastRequest(); form.Get("client_secret") != "n3w-s3cr3t-value" {
		t.Error("the retry did not use the new secret")
	}
}

// Issue 10.4: with 3-minute tokens and a failing IdP, callers that set no
// min_valid keep the cached token until a tenth of its lifetime is left;
// an explicit min_valid is honoured exactly.
func TestShortLivedTokensGrace(t *testing.T) {
	e, _, w := faultEnv(t, ptr(faultidp.OAuthError(503, "temporarily_unavailable", "")), faultidp.OK("tok-short", 180))
	e.issued["tok-short"] = true
	u := next(t, w, hasVersion(1))
	expiry := u.Token.Expiry
	if lead := expiry.Sub(u.Status.NextRefresh); lead < time.Minute {
		t.Errorf("refresh planned %s before expiry, want at least 60 s for retries", lead)
	}
	grace := broker.DefaultMinValidFor(3 * time.Minute)
	if grace != 18*time.Second {
		t.Fatalf("default min_valid for 3-minute tokens = %s, want 18s", grace)
	}
	for e.clock.Now().Before(expiry) {
		left := expiry.Sub(e.clock.Now())
		tok, err := e.token(t.Context(), nil, 0)
		if gotTok := err == nil && tok.AccessToken == "tok-short"; gotTok != (left >= grace) {
			t.Fatalf("default caller with %s left: token=%v err=%v; want the token while at least %s is left", left, gotTok, err, grace)
		}
		tok, err = e.token(t.Context(), nil, time.Minute)
		if gotTok := err == nil && tok.AccessToken == "tok-short"; gotTok != (left >= time.Minute) {
			t.Fatalf("min_valid=1m caller with %s left: token=%v err=%v", left, gotTok, err)
		}
		e.clock.Advance(time.Second)
	}
}

func TestRefreshLead(t *testing.T) {
	for _, tc := range []struct {
		lifetime time.Duration
		minLead  time.Duration // before expiry, at least
	}{
		{time.Minute, 30 * time.Second},
		{3 * time.Minute, time.Minute},
		{10 * time.Minute, 150 * time.Second},
		{time.Hour, 15 * time.Minute},
	} {
		t.Run(tc.lifetime.String(), func(t *testing.T) {
			e, _, w := faultEnv(t, nil, faultidp.OK("tok-lead", int(tc.lifetime/time.Second)))
			e.issued["tok-lead"] = true
			u := next(t, w, hasVersion(1))
			lead := u.Token.Expiry.Sub(u.Status.NextRefresh)
			// Up to half the lifetime, or up to a fifth earlier than the
			// latest point when that cuts the range (jitter for short tokens).
			maxLead := max(tc.lifetime/2, tc.lifetime-(tc.lifetime-tc.minLead)*4/5)
			if lead < tc.minLead || lead > maxLead {
				t.Errorf("refresh %s before expiry, want between %s and %s", lead, tc.minLead, maxLead)
			}
		})
	}
}

// Issue 10.5: expires_in is capped by the access token's JWT exp, and
// never yields a token past its end.
func TestExpiryFromExpiresInAndJWT(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) // newEnv's fake clock
	jwtWith := func(exp time.Time) string {
		c := jwt.RegisteredClaims{Subject: "svc"}
		if !exp.IsZero() {
			c.ExpiresAt = jwt.NewNumericDate(exp)
		}
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte("test-key"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name      string
		token     string
		expiresIn any
		want      time.Duration // zero: refused
		source    string
	}{
		{"opaque", "opaque-1", 3600, time.Hour, "expires_in"},
		{"string expires_in", "opaque-2", `"3600"`, time.Hour, "expires_in"},
		{"missing", "opaque-3", nil, broker.DefaultLifetime, "default"},
		{"absurd", "opaque-4", 10 * 365 * 24 * 3600, broker.MaxLifetime, "max_lifetime"},
		{"zero", "opaque-5", 0, 0, ""},
		{"negative", "opaque-6", -30, 0, ""},
		{"jwt exp earlier", jwtWith(now.Add(10 * time.Minute)), 3600, 10 * time.Minute, "jwt_exp"},
		{"jwt exp later", jwtWith(now.Add(2 * time.Hour)), 3600, time.Hour, "expires_in"},
		{"jwt without exp", jwtWith(time.Time{}), 3600, time.Hour, "expires_in"},
		{"jwt caps absurd", jwtWith(now.Add(2 * time.Hour)), 10 * 365 * 24 * 3600, 2 * time.Hour, "jwt_exp"},
		{"jwt caps missing", jwtWith(now.Add(time.Minute)), nil, time.Minute, "jwt_exp"},
		{"jwt zero expires_in", jwtWith(now.Add(time.Hour)), 0, 0, ""},
		{"jwt already expired", jwtWith(now.Add(-time.Minute)), 3600, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _, w := faultEnv(t, nil, faultidp.OK(tc.token, tc.expiresIn))
			e.issued[tc.token] = true
			if tc.want == 0 {
				u := next(t, w, inState(broker.StateFailing))
				if msg := u.Status.LastError.Error(); !strings.Contains(msg, "expire") && !strings.Contains(msg, "past") {
					t.Errorf("refusal %q does not say why", msg)
				}
				if _, err := e.token(t.Context(), nil, 0); err == nil {
					t.Error("a token past its end was served")
				}
				return
			}
			u := next(t, w, hasVersion(1))
			if got := u.Token.Expiry.Sub(e.clock.Now()); got != tc.want {
				t.Errorf("lifetime %s, want %s", got, tc.want)
			}
			if logs := e.logs.String(); !strings.Contains(logs, `"expiry_source":"`+tc.source+`"`) {
				t.Errorf("logs do not name the expiry source %q", tc.source)
			}
		})
	}
}

// Issue 7.6a: a min_valid the IdP's tokens cannot meet is answered from
// what the broker knows, without a request per call.
func TestTooShortLivedIsRemembered(t *testing.T) {
	e := newEnv(t, broker.Config{})
	e.idp.SetTokenLifetime(5 * time.Minute)
	e.mustToken(nil, 0)
	before := e.idp.RequestsFor(e.client.ID)
	for range 200 {
		var tsl *broker.TooShortLivedError
		if _, err := e.token(t.Context(), []string{"x"}, 10*time.Minute); !errors.As(err, &tsl) {
			t.Fatalf("err = %v, want *TooShortLivedError", err)
		}
	}
	if n := e.idp.RequestsFor(e.client.ID) - before; n > 1 {
		t.Errorf("200 calls with min_valid above the lifetime caused %d IdP requests, want at most 1", n)
	}
	// The scheduled refresh brings longer tokens: the same request succeeds.
	e.idp.SetTokenLifetime(time.Hour)
	w, err := e.broker.Watch("acme", []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	u := next(t, w, hasVersion(1))
	e.clock.Advance(u.Status.NextRefresh.Sub(e.clock.Now()))
	next(t, w, func(nu broker.Update) bool { return nu.Token != nil && nu.Token.Version > u.Token.Version })
	if _, err := e.token(t.Context(), []string{"x"}, 10*time.Minute); err != nil {
		t.Fatalf("after a refresh with 1h tokens: %v", err)
	}
}

// Issue 7.6b: forced refreshes are rate limited per key.
func TestInvalidateLoopIsRateLimited(t *testing.T) {
	e := newEnv(t, broker.Config{})
	tok := e.mustToken(nil, 0)
	before := e.idp.RequestsFor(e.client.ID)
	const calls, step = 100, 100 * time.Millisecond // 10 s
	for range calls {
		var err error
		if tok, err = e.broker.Invalidate(t.Context(), "acme", nil, tok.SHA256()); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(step)
	}
	if n, limit := e.idp.RequestsFor(e.client.ID)-before, int64(calls*step/broker.ForcedRefreshInterval)+1; n > limit {
		t.Errorf("%d invalidations of each new token caused %d IdP requests, want at most %d", calls, n, limit)
	}
}

// Issue 7.6b: a rejected token that cannot be replaced is not withdrawn
// from other callers.
func TestInvalidateWhileIdPFailsKeepsServing(t *testing.T) {
	e, _, _ := faultEnv(t, ptr(faultidp.OAuthError(503, "temporarily_unavailable", "")), faultidp.OK("tok-valid", 3600))
	e.issued["tok-valid"] = true
	tok := e.mustToken(nil, 0)
	if _, err := e.broker.Invalidate(t.Context(), "acme", nil, tok.SHA256()); err == nil {
		t.Fatal("invalidation with a failing IdP returned no error")
	}
	if got := e.mustToken(nil, 0); got.AccessToken != "tok-valid" {
		t.Error("other callers lost the still-valid token")
	}
	if st := e.status(); st.State != broker.StateStale {
		t.Errorf("state %s, want stale", st.State)
	}
}

// Issue 7.6c: one owner cannot take a tenant's scope-set budget.
func TestScopeSetShares(t *testing.T) {
	e := newEnv(t, broker.Config{Limits: limits.Limits{MaxScopeSetsPerTenant: 9}}) // default + 8: a share is 4
	mallory := broker.WithOwner(t.Context(), "mallory")
	alice := broker.WithOwner(t.Context(), "alice")
	watch := func(ctx context.Context, scope string) error {
		w, err := e.broker.WatchContext(ctx, "acme", []string{scope})
		if err != nil {
			return err
		}
		t.Cleanup(func() { _ = w.Close() })
		next(t, w, hasVersion(1))
		return nil
	}
	for i := range 4 {
		if err := watch(mallory, "m"+string(rune('a'+i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := watch(mallory, "m-fifth"); !errors.Is(err, broker.ErrTooManyScopeSets) {
		t.Fatalf("a fifth watched set for one owner: %v, want ErrTooManyScopeSets", err)
	}
	for i := range 4 {
		if err := watch(alice, "a"+string(rune('a'+i))); err != nil {
			t.Fatalf("alice locked out: %v", err)
		}
	}

	// Unwatched sets: an owner churning through many evicts its own.
	e2 := newEnv(t, broker.Config{Limits: limits.Limits{MaxScopeSetsPerTenant: 9}})
	kept, err := e2.broker.Token(alice, "acme", []string{"alice"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := e2.broker.Token(mallory, "acme", []string{"m", strings.Repeat("x", i+1)}, 0); err != nil {
			t.Fatalf("mallory's set %d: %v", i, err)
		}
		e2.clock.Advance(time.Second)
	}
	if tok, err := e2.broker.Token(alice, "acme", []string{"alice"}, 0); err != nil || tok.Version != kept.Version {
		t.Errorf("alice's set was evicted (%v): want mallory's own sets to give way", err)
	}
}

// Issue 11: tenants' default sets do not count against the global cap.
func TestGlobalCapIgnoresDefaultSets(t *testing.T) {
	e := newEnv(t, broker.Config{Limits: limits.Limits{MaxScopeSets: 1}})
	spec := broker.Tenant{TokenURL: e.idp.TokenURL(), ClientID: e.client.ID, ClientSecret: creds.Secret(e.client.Secret)}
	var specs []broker.Tenant
	for _, n := range []string{"acme", "globex", "initech"} {
		s := spec
		s.Name = n
		specs = append(specs, s)
	}
	if err := e.broker.SetTenants(specs); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"acme", "globex"} {
		if _, err := e.broker.Token(t.Context(), n, []string{"custom"}, 0); err != nil {
			t.Fatalf("non-default set of %s with 3 tenants and MaxScopeSets 1: %v", n, err)
		}
	}
}

// A storm of reloads that change nothing retries a permanently failed key
// at most once per ReloadRetryInterval, yet a fix made at the identity
// provider is still tried within that interval, and changed credentials
// are tried at once.
func TestReloadStormRetriesPermanentFailureBounded(t *testing.T) {
	e, f, w := faultEnv(t, ptr(faultidp.OAuthError(401, "invalid_client", "bad secret")))
	next(t, w, inState(broker.StateFailing))
	if _, err := e.token(t.Context(), []string{"x"}, 0); err == nil {
		t.Fatal("scope set x got a token from a failing IdP")
	}
	spec := broker.Tenant{Name: "acme", TokenURL: f.TokenURL(), ClientID: "client", ClientSecret: "s3cr3t-value"}
	// Both keys have failed and planned their next attempt (5 min away).
	planned := func() {
		t.Helper()
		if err := e.clock.BlockUntilContext(t.Context(), 2); err != nil {
			t.Fatal(err)
		}
	}
	planned()
	before := f.Requests()
	for i := range 50 {
		if err := e.broker.SetTenants([]broker.Tenant{spec}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			planned() // the first reload's retries failed again
		}
	}
	planned()
	if n := f.Requests() - before; n != 2 {
		t.Fatalf("50 reloads caused %d IdP requests for 2 permanently failed keys, want 2 (one per key)", n)
	}
	if d := e.status().NextRefresh.Sub(e.clock.Now()); d > broker.ReloadRetryInterval {
		t.Errorf("after the reloads the next attempt is in %s, want within %s", d, broker.ReloadRetryInterval)
	}

	// The reloads within the interval moved each key's attempt to its end.
	e.clock.Advance(broker.ReloadRetryInterval)
	planned()
	if n := f.Requests() - before; n != 4 {
		t.Fatalf("%d IdP requests after the interval, want 4 (one more per key)", n)
	}
	for range 10 {
		if err := e.broker.SetTenants([]broker.Tenant{spec}); err != nil {
			t.Fatal(err)
		}
	}
	// The scheduled retries above were not reload retries, so a reload
	// right after them may still spend each key's one reload retry: 10
	// reloads cost at most one more request per key, never ten.
	if n := f.Requests() - before; n > 6 {
		t.Fatalf("%d IdP requests after 10 more reloads, want at most 6 (one more per key)", n)
	}

	// Changed credentials are tried at once, however recent the last retry.
	spec.ClientSecret = "n3w-s3cr3t-value"
	f.SetDefault(faultidp.OK("tok-new-secret", 3600))
	e.issued["tok-new-secret"] = true
	if err := e.broker.SetTenants([]broker.Tenant{spec}); err != nil {
		t.Fatal(err)
	}
	tok, err := e.token(t.Context(), nil, 0)
	if err != nil || tok.AccessToken != "tok-new-secret" {
		t.Fatalf("after new credentials: %v, want the new token at once", err)
	}
}

// Issue 10 W1/W2: with short-lived tokens one hung request must not be an
// outage. The attempt's timeout shrinks to a sixth of the lifetime, so
// when the refresh at half the lifetime hangs, a second attempt follows
// before the token expires, and an IdP that answers again yields a new
// token in time; callers keep the old token meanwhile. Real clock: the
// attempt timeout bounds a real network request.
func TestHungRefreshLeavesRoomBeforeExpiry(t *testing.T) {
	const lifetime = 8 // seconds: attempts time out after 1.33 s, not FetchTimeout's 10 s
	f := faultidp.Start()
	t.Cleanup(f.Close)
	f.Push(faultidp.OK("tok-1", lifetime), faultidp.Response{Hang: true}, faultidp.OK("tok-2", 3600))
	f.SetDefault(faultidp.Response{Hang: true})
	b, err := broker.New(broker.Config{Tenants: []broker.Tenant{{
		Name: "acme", TokenURL: f.TokenURL(), ClientID: "client", ClientSecret: "s3cr3t-value",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	w, err := b.Watch("acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	first := next(t, w, hasVersion(1)).Token
	if first.AccessToken != "tok-1" {
		t.Fatalf("first token %q", first.AccessToken)
	}
	stale := next(t, w, inState(broker.StateStale))
	// The lifetime counts from the request's start, so it is a little
	// under 8 s by the time the answer came: the bound is a little under
	// 1.333 s, and far under FetchTimeout.
	msg := stale.Status.LastError.Error()
	m := regexp.MustCompile(`no answer within ([0-9.]+m?s)`).FindStringSubmatch(msg)
	var within time.Duration
	if m != nil {
		within, _ = time.ParseDuration(m[1])
	}
	if sixth := lifetime * time.Second / 6; within <= sixth-100*time.Millisecond || within > sixth {
		t.Errorf("the hung refresh failed with %q, want no answer within a sixth of the 8 s lifetime (%s)", msg, sixth)
	}
	if tok, err := b.Token(t.Context(), "acme", nil, 0); err != nil || tok.AccessToken != "tok-1" {
		t.Errorf("during the hang: %v, want the cached token", err)
	}
	u := next(t, w, func(u broker.Update) bool { return u.Token != nil && u.Token.AccessToken == "tok-2" })
	if now := time.Now(); !now.Before(first.Expiry) {
		t.Errorf("new token at %s, after the old one expired at %s", now.Format(time.StampMilli), first.Expiry.Format(time.StampMilli))
	}
	if u.Status.State != broker.StateReady {
		t.Errorf("state %s after recovery, want READY", u.Status.State)
	}
	if n := f.Requests(); n != 3 {
		t.Errorf("%d IdP requests, want 3 (first, hung, recovered)", n)
	}
}

// Issue 10 W4: removing or reconfiguring a tenant releases the callers
// waiting for its hung request at once, with the reason, instead of after
// the fetch timeout.
func TestDropReleasesWaitersAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		specs func(broker.Tenant) []broker.Tenant
		want  error
	}{
		{"removed", func(broker.Tenant) []broker.Tenant { return nil }, broker.ErrTenantRemoved},
		{"reconfigured", func(s broker.Tenant) []broker.Tenant { s.ClientSecret = "n3w-s3cr3t-value"; return []broker.Tenant{s} }, broker.ErrTenantChanged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := faultidp.Start()
			t.Cleanup(f.Close)
			f.SetDefault(faultidp.Response{Hang: true})
			spec := broker.Tenant{Name: "acme", TokenURL: f.TokenURL(), ClientID: "client", ClientSecret: "s3cr3t-value"}
			b, err := broker.New(broker.Config{Tenants: []broker.Tenant{spec}, FetchTimeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			errc := make(chan error, 1)
			go func() {
				_, err := b.Token(context.Background(), "acme", []string{"x"}, 0)
				errc <- err
			}()
			// The default key's and the caller's key's requests hang.
			for deadline := time.Now().Add(10 * time.Second); f.InFlight() < 2; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the caller's request never reached the IdP")
				}
			}
			if err := b.SetTenants(tc.specs(spec)); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, tc.want) {
					t.Errorf("waiting caller got %v, want %v", err, tc.want)
				}
			case <-time.After(5 * time.Second): // a bound for a broken test; the fetch timeout is a minute
				t.Fatal("the waiting caller was not released when the tenant was dropped")
			}
		})
	}
}

// Issue 10 W5a: durations in messages keep the precision that tells them
// apart.
func TestTooShortLivedMessagePrecision(t *testing.T) {
	err := &broker.TooShortLivedError{Lifetime: 944 * time.Millisecond, MinValid: time.Second}
	if want := "valid for 944ms, less than the requested minimum validity 1s"; !strings.Contains(err.Error(), want) {
		t.Errorf("message %q, want it to contain %q", err, want)
	}
	err = &broker.TooShortLivedError{Lifetime: 59*time.Minute + 59*time.Second + 600*time.Millisecond, MinValid: 30 * time.Minute}
	if want := "valid for 1h0m0s,"; !strings.Contains(err.Error(), want) {
		t.Errorf("message %q, want it to contain %q", err, want)
	}
}

// Issue 10 W5b: a Retry-After beyond the broker's 10-minute cap is
// reported with the wait that applies.
func TestLongRetryAfterSaysEffectiveWait(t *testing.T) {
	e, _, w := faultEnv(t, nil, faultidp.TooManyRequests("86400"))
	u := next(t, w, inState(broker.StateFailing))
	if d := u.Status.NextRefresh.Sub(e.clock.Now()); d != 10*time.Minute {
		t.Errorf("next attempt in %s, want the 10m cap", d)
	}
	msg := u.Status.LastError.Error()
	if !strings.Contains(msg, "retry after 10m0s") || !strings.Contains(msg, "asked for 24h0m0s") || strings.Contains(msg, "retry after 24h") {
		t.Errorf("message %q, want the effective wait of 10m0s and the IdP's ask", msg)
	}
	var ue *upstream.Error
	if !errors.As(u.Status.LastError, &ue) || ue.StatusCode != 429 || ue.RetryAfter != 10*time.Minute {
		t.Errorf("error %#v, want the 429 with the effective Retry-After", ue)
	}
}

// Issue 10 W5c: a reconfigured tenant is logged as reconfigured, once,
// not as added.
func TestReconfiguredTenantIsLoggedAsSuch(t *testing.T) {
	e := newEnv(t, broker.Config{})
	spec := broker.Tenant{Name: "acme", TokenURL: e.idp.TokenURL(), ClientID: e.client.ID, ClientSecret: creds.Secret(e.client.Secret), Scopes: []string{"read"}}
	if err := e.broker.SetTenants([]broker.Tenant{spec}); err != nil {
		t.Fatal(err)
	}
	logs := e.logs.String()
	if n := strings.Count(logs, `"msg":"tenant added"`); n != 1 {
		t.Errorf("%d 'tenant added' lines, want 1 (at start):\n%s", n, logs)
	}
	if n := strings.Count(logs, `"msg":"tenant reconfigured"`); n != 1 {
		t.Errorf("%d 'tenant reconfigured' lines, want 1:\n%s", n, logs)
	}
}

// Issue 10 W5d: a request that gets no answer reads the same whichever
// path started it (GetToken, InvalidateToken) and whichever timeout ended
// it (the attempt's, or the HTTP client's own shorter one).
func TestNoAnswerTextIsUniform(t *testing.T) {
	f := faultidp.Start()
	t.Cleanup(f.Close)
	f.Push(faultidp.OK("tok-1", 3600))
	f.SetDefault(faultidp.Response{Hang: true})
	b, err := broker.New(broker.Config{
		Tenants:    []broker.Tenant{{Name: "acme", TokenURL: f.TokenURL(), ClientID: "client", ClientSecret: "s3cr3t-value"}},
		HTTPClient: &http.Client{Timeout: 300 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	tok, err := b.Token(t.Context(), "acme", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, invErr := b.Invalidate(t.Context(), "acme", nil, tok.SHA256())
	_, getErr := b.Token(t.Context(), "acme", []string{"x"}, 0)
	for name, err := range map[string]error{"InvalidateToken": invErr, "GetToken": getErr} {
		if err == nil {
			t.Errorf("%s: no error from a hanging IdP", name)
			continue
		}
		msg := err.Error()
		// The HTTP client's 300ms, measured: a loaded machine fires its
		// timer late, so any duration from 300ms on.
		m := regexp.MustCompile(`no answer within (\S+)`).FindStringSubmatch(msg)
		d, perr := time.Duration(0), error(nil)
		if m != nil {
			d, perr = time.ParseDuration(m[1])
		}
		if m == nil || perr != nil || d < 300*time.Millisecond || d >= 10*time.Second || strings.Contains(msg, "Client.Timeout") || strings.Contains(msg, "details withheld") {
			t.Errorf("%s: %q, want \"no answer within\" the HTTP client's 300ms", name, msg)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: %v reads as a caller's deadline", name, err)
		}
	}
}
