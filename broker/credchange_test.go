package broker_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// Issue 19: credential changes, IdP restarts, Retry-After and watchers.

// acmeAt is the tenant faultEnv starts, fetching from f.
func acmeAt(f *faultidp.Server) broker.Tenant {
	return broker.Tenant{Name: "acme", TokenURL: f.TokenURL(), ClientID: "client", ClientSecret: "s3cr3t-value"}
}

// unwatchedFaultEnv is faultEnv without the watch, failing with def from
// the first request; it returns once that failure planned the next
// attempt.
func unwatchedFaultEnv(t *testing.T, def faultidp.Response) (*env, *faultidp.Server) {
	t.Helper()
	f := faultidp.Start()
	t.Cleanup(f.Close)
	f.SetDefault(def)
	e := newEnv(t, broker.Config{Tenants: []broker.Tenant{acmeAt(f)}})
	e.client.Secret = "s3cr3t-value"
	e.settle()
	return e, f
}

// noEnd fails the test if the watch has ended.
func noEnd(t *testing.T, w *broker.Watch) {
	t.Helper()
	if w.Ended() {
		t.Fatalf("the watch ended: %v", w.Err())
	}
}

// A changed secret keeps the cached token serving, and watching, while the
// identity provider still rejects the new secret; invalid_client is
// retried within seconds for CredentialGrace, and the first token of the
// new secret replaces the old one in one update.
func TestSecretChangeKeepsServingUntilTheNewOneWorks(t *testing.T) {
	e, f, w := faultEnv(t, ptr(faultidp.OAuthError(401, "invalid_client", "bad secret")), faultidp.OK("tok-1", 3600))
	e.issued["tok-1"] = true
	first := next(t, w, hasVersion(1)).Token
	spec := acmeAt(f)
	spec.ClientSecret = "n3w-s3cr3t-value"
	if err := e.broker.SetTenants([]broker.Tenant{spec}); err != nil {
		t.Fatal(err)
	}
	e.settle() // the new secret's first attempt failed and planned the next
	if form, _ := f.LastRequest(); form.Get("client_secret") != "n3w-s3cr3t-value" {
		t.Fatal("the reload did not try the new secret at once")
	}
	start := e.clock.Now()
	for e.clock.Since(start) < broker.CredentialGrace-10*time.Second {
		if d := e.status().NextRefresh.Sub(e.clock.Now()); d > broker.CredentialGraceRetryMax*6/5 {
			t.Fatalf("invalid_client after a credential change retried in %s, want within %s (±20 %%)", d, broker.CredentialGraceRetryMax)
		}
		if tok := e.mustToken(nil, 0); tok.AccessToken != "tok-1" {
			t.Fatalf("served %v, want the cached token while the new secret is rejected", tok)
		}
		noEnd(t, w)
		e.step()
	}
	f.SetDefault(faultidp.OK("tok-2", 3600))
	e.issued["tok-2"] = true
	e.step()
	u := next(t, w, hasVersion(first.Version+1))
	if u.Token.AccessToken != "tok-2" || u.Status.State != broker.StateReady {
		t.Errorf("after the IdP accepted the new secret: %v %s, want tok-2 READY", u.Token, u.Status.State)
	}
	if tok := e.mustToken(nil, 0); tok.AccessToken != "tok-2" {
		t.Errorf("served %v, want the new secret's token", tok)
	}
}

// A scope set created during the grace, without a cached token, gets
// invalid_client as a transient error (callers see UNAVAILABLE and retry).
func TestNewScopeSetDuringTheGraceIsTransient(t *testing.T) {
	e, f, w := faultEnv(t, ptr(faultidp.OAuthError(401, "invalid_client", "bad secret")), faultidp.OK("tok-1", 3600))
	e.issued["tok-1"] = true
	next(t, w, hasVersion(1))
	spec := acmeAt(f)
	spec.ClientSecret = "n3w-s3cr3t-value"
	if err := e.broker.SetTenants([]broker.Tenant{spec}); err != nil {
		t.Fatal(err)
	}
	_, err := e.token(t.Context(), []string{"other"}, 0)
	if ue, ok := errors.AsType[*upstream.Error](err); !ok || ue.Permanent || ue.Code != "invalid_client" {
		t.Errorf("new scope set during the grace: %v, want a transient invalid_client", err)
	}
}

// Past CredentialGrace, invalid_client is permanent again: retried after
// minutes. The cached token keeps serving while it is valid.
func TestCredentialGraceIsBounded(t *testing.T) {
	e, f, w := faultEnv(t, ptr(faultidp.OAuthError(401, "invalid_client", "bad secret")), faultidp.OK("tok-1", 3600))
	e.issued["tok-1"] = true
	next(t, w, hasVersion(1))
	spec := acmeAt(f)
	spec.ClientSecret = "n3w-s3cr3t-value"
	before := f.Requests()
	if err := e.broker.SetTenants([]broker.Tenant{spec}); err != nil {
		t.Fatal(err)
	}
	start := e.clock.Now()
	for e.clock.Since(start) < broker.CredentialGrace {
		e.step()
	}
	n := f.Requests() - before
	// 1 s doubling to the cap, then one per cap less its jitter.
	bound := int64(broker.CredentialGrace/(broker.CredentialGraceRetryMax*4/5)) + 4
	if n > bound {
		t.Errorf("%d requests in the %s grace window, want at most %d", n, broker.CredentialGrace, bound)
	}
	if d := e.status().NextRefresh.Sub(e.clock.Now()); d < 4*time.Minute {
		t.Errorf("after the grace window invalid_client is retried in %s, want minutes", d)
	}
	if tok := e.mustToken(nil, 0); tok.AccessToken != "tok-1" {
		t.Errorf("served %v, want the cached token", tok)
	}
}

// A reconfiguration that changes who the tenant is (client_id without an
// overlap, token URL, default scopes) does not serve the old client's
// token: the tenant starts afresh and its watches end with
// ErrTenantChanged. A Kognic rotation listing the old client as a
// fallback keeps it.
func TestIdentityChangeDoesNotCarryTheToken(t *testing.T) {
	other := faultidp.Start()
	t.Cleanup(other.Close)
	for _, tc := range []struct {
		name  string
		edit  func(*broker.Tenant)
		carry bool
	}{
		{"secret", func(s *broker.Tenant) { s.ClientSecret = "n3w-s3cr3t-value" }, true},
		{"client_id", func(s *broker.Tenant) { s.ClientID = "other-client" }, false},
		{"client_id with the old one as fallback", func(s *broker.Tenant) {
			s.Fallbacks = []upstream.Credential{{Name: "old.json", ClientID: s.ClientID, ClientSecret: s.ClientSecret}}
			s.ClientID, s.ClientSecret = "new-client", "n3w-s3cr3t-value"
		}, true},
		{"token_url", func(s *broker.Tenant) { s.TokenURL = other.TokenURL() }, false},
		{"default scopes", func(s *broker.Tenant) { s.Scopes = []string{"write"} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, f, w := faultEnv(t, ptr(faultidp.OAuthError(401, "invalid_client", "bad secret")), faultidp.OK("tok-1", 3600))
			other.SetDefault(faultidp.OAuthError(401, "invalid_client", "bad secret"))
			e.issued["tok-1"] = true
			next(t, w, hasVersion(1))
			spec := acmeAt(f)
			tc.edit(&spec)
			if err := e.broker.SetTenants([]broker.Tenant{spec}); err != nil {
				t.Fatal(err)
			}
			tok, err := e.token(t.Context(), nil, 0)
			if carried := err == nil && tok.AccessToken == "tok-1"; carried != tc.carry {
				t.Errorf("after the change: token %v, err %v; want the old token carried over: %v", tok, err, tc.carry)
			}
			if tc.carry {
				noEnd(t, w)
			} else if err := awaitEnd(t, w); !errors.Is(err, broker.ErrTenantChanged) {
				t.Errorf("watch ended with %v, want ErrTenantChanged", err)
			}
		})
	}
}

// invalid_client right after the identity provider was unreachable (a
// restart that registers its clients late) is retried within seconds.
func TestInvalidClientAfterOutageRetriedSoon(t *testing.T) {
	e, f, w := faultEnv(t, nil, faultidp.OK("tok-1", 3600),
		faultidp.OAuthError(503, "temporarily_unavailable", ""),
		faultidp.OAuthError(401, "invalid_client", "unknown client"),
		faultidp.OAuthError(401, "invalid_client", "unknown client"))
	e.issued["tok-1"] = true
	next(t, w, hasVersion(1))
	e.step() // the refresh: 503
	for range 2 {
		e.step() // invalid_client, the IdP's clients not registered yet
		if d := e.status().NextRefresh.Sub(e.clock.Now()); d > broker.CredentialGraceRetryMax*6/5 {
			t.Fatalf("invalid_client right after an outage retried in %s, want within %s", d, broker.CredentialGraceRetryMax)
		}
	}
	e.issued["faultidp-token"] = true
	e.step()
	if u := next(t, w, hasVersion(2)); u.Status.State != broker.StateReady {
		t.Errorf("state %s after the IdP accepted the client, want READY", u.Status.State)
	}
	if n := f.Requests(); n != 5 {
		t.Errorf("%d requests, want 5", n)
	}
}

// Credentials that got the last token and are then rejected (an IdP that
// restarted between two refreshes, unseen, and registers its clients
// late) are retried within seconds, not after minutes.
func TestInvalidClientForCredentialsThatWorkedRetriedSoon(t *testing.T) {
	e, f, w := faultEnv(t, nil, faultidp.OK("tok-1", 3600),
		faultidp.OAuthError(401, "invalid_client", "unknown client"),
		faultidp.OAuthError(401, "invalid_client", "unknown client"))
	e.issued["tok-1"] = true
	next(t, w, hasVersion(1))
	for range 2 {
		e.step()
		if d := e.status().NextRefresh.Sub(e.clock.Now()); d > broker.CredentialGraceRetryMax*6/5 {
			t.Fatalf("invalid_client for credentials that worked retried in %s, want within %s", d, broker.CredentialGraceRetryMax)
		}
		if st := e.status().State; st != broker.StateStale {
			t.Fatalf("state %s while the cached token is valid, want STALE", st)
		}
	}
	e.issued["faultidp-token"] = true
	e.step()
	if u := next(t, w, hasVersion(2)); u.Status.State != broker.StateReady {
		t.Errorf("state %s after the IdP accepted the client, want READY", u.Status.State)
	}
	if n := f.Requests(); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}
}

// A new client_id (a tenant that starts afresh) gets the credential grace
// too: the IdP may register the new client a little later.
func TestIdentityChangeGetsTheGrace(t *testing.T) {
	e, f, w := faultEnv(t, ptr(faultidp.OAuthError(401, "invalid_client", "unknown client")), faultidp.OK("tok-1", 3600))
	e.issued["tok-1"] = true
	next(t, w, hasVersion(1))
	spec := acmeAt(f)
	spec.ClientID = "new-client"
	if err := e.broker.SetTenants([]broker.Tenant{spec}); err != nil {
		t.Fatal(err)
	}
	e.settle()
	_, err := e.token(t.Context(), nil, 0)
	if ue, ok := errors.AsType[*upstream.Error](err); !ok || ue.Permanent || ue.Code != "invalid_client" {
		t.Fatalf("new client_id rejected: %v, want a transient invalid_client", err)
	}
	if d := e.status().NextRefresh.Sub(e.clock.Now()); d > broker.CredentialGraceRetryMax*6/5 {
		t.Errorf("invalid_client for a new client_id retried in %s, want within %s", d, broker.CredentialGraceRetryMax)
	}
}

// InvalidateToken forces no request while the key's credentials are
// rejected for good (the cached token is still served): only the timer
// and reloads retry them.
func TestInvalidateDoesNotRetryPermanentFailure(t *testing.T) {
	e, f, w := faultEnv(t, ptr(faultidp.OAuthError(401, "invalid_client", "bad secret")), faultidp.OK("tok-1", 3600))
	e.issued["tok-1"] = true
	tok := next(t, w, hasVersion(1)).Token
	e.step() // the refresh's first rejection opens the grace
	// Past the grace: a 5-minute retry.
	for i := 0; e.status().NextRefresh.Sub(e.clock.Now()) < 4*time.Minute; i++ {
		if i > 100 {
			t.Fatalf("not failing permanently after %d attempts", i)
		}
		e.step()
	}
	before := f.Requests()
	for range 3 {
		e.clock.Advance(broker.ForcedRefreshInterval)
		got, err := e.broker.Invalidate(t.Context(), "acme", nil, tok.SHA256())
		if err != nil || got.AccessToken != "tok-1" {
			t.Fatalf("Invalidate = %v, %v; want the cached token", got, err)
		}
	}
	if n := f.Requests() - before; n != 0 {
		t.Errorf("InvalidateToken on a permanently failing key sent %d requests, want 0", n)
	}
}

// A changed secret's request that is in flight when the change lands is
// superseded: its waiters are released and the new secret is tried at once.
func TestSecretChangeSupersedesTheRequestInFlight(t *testing.T) {
	f := faultidp.Start()
	t.Cleanup(f.Close)
	f.SetDefault(faultidp.Response{Hang: true})
	spec := acmeAt(f)
	b, err := broker.New(broker.Config{Tenants: []broker.Tenant{spec}, FetchTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	for deadline := time.Now().Add(10 * time.Second); f.InFlight() < 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first request never reached the IdP")
		}
	}
	f.SetDefault(faultidp.OK("tok-new", 3600))
	spec.ClientSecret = "n3w-s3cr3t-value"
	if err := b.SetTenants([]broker.Tenant{spec}); err != nil {
		t.Fatal(err)
	}
	tok, err := b.Token(t.Context(), "acme", nil, 0)
	if err != nil || tok.AccessToken != "tok-new" {
		t.Fatalf("after the change: %v %v, want the new secret's token without waiting for the hung request", tok, err)
	}
	if form, _ := f.LastRequest(); form.Get("client_secret") != "n3w-s3cr3t-value" {
		t.Error("the new request did not use the new secret")
	}
}

// growBackoff makes the key's backoff long: n failures in a row.
func growBackoff(e *env, n int) {
	for range n {
		e.step()
	}
}

// A Retry-After shorter than the current backoff still holds every
// attempt of the key: callers' early attempts and invalidations.
func TestRetryAfterHoldsEveryAttempt(t *testing.T) {
	// Unwatched: only callers drive this key.
	e, f := unwatchedFaultEnv(t, faultidp.OAuthError(500, "server_error", ""))
	growBackoff(e, 5) // about 32 s
	if d := e.status().NextRefresh.Sub(e.clock.Now()); d < 10*time.Second {
		t.Fatalf("backoff %s; the test needs one longer than the Retry-After", d)
	}
	f.SetDefault(faultidp.TooManyRequests("5"))
	before := f.Requests()
	const window = 60 * time.Second
	for start := e.clock.Now(); e.clock.Since(start) < window; {
		e.clock.Advance(200 * time.Millisecond) // callers at 5/s
		if _, err := e.token(t.Context(), nil, 0); err == nil {
			t.Fatal("a token from an IdP answering 429")
		}
	}
	if n, bound := f.Requests()-before, int64(math.Ceil(window.Seconds()/5))+1; n > bound {
		t.Errorf("callers at 5/s under Retry-After: 5 made %d requests in %s, want at most %d", n, window, bound)
	}
}

// An invalidation during a Retry-After makes no request.
func TestRetryAfterHoldsInvalidate(t *testing.T) {
	e, f, w := faultEnv(t, ptr(faultidp.OAuthError(500, "server_error", "")), faultidp.OK("tok-1", 3600))
	e.issued["tok-1"] = true
	tok := next(t, w, hasVersion(1)).Token
	e.step()          // the refresh fails
	growBackoff(e, 5) // about 32 s, the token still valid
	f.SetDefault(faultidp.TooManyRequests("5"))
	e.step() // 429, Retry-After 5 s
	before := f.Requests()
	for range 4 {
		e.clock.Advance(time.Second)
		got, err := e.broker.Invalidate(t.Context(), "acme", nil, tok.SHA256())
		if err != nil || got.AccessToken != "tok-1" {
			t.Fatalf("Invalidate during the Retry-After: %v %v, want the current token", got, err)
		}
	}
	if n := f.Requests() - before; n != 0 {
		t.Errorf("%d requests from invalidations during Retry-After, want 0", n)
	}
}

// Watchers of a key without a valid token are demand, as callers are: an
// early attempt at most every CallerRetryInterval, so the key recovers
// with the identity provider, not with its backoff timer.
func TestWatchersAreDemand(t *testing.T) {
	e, f, w := faultEnv(t, ptr(faultidp.OAuthError(500, "server_error", "")))
	next(t, w, inState(broker.StateFailing))
	before := f.Requests()
	const window = 10 * time.Second
	for start := e.clock.Now(); e.clock.Since(start) < window; {
		e.settle()
		e.clock.Advance(100 * time.Millisecond)
	}
	if n := f.Requests() - before; n > int64(window/broker.CallerRetryInterval)+1 {
		t.Errorf("a watched failing key made %d requests in %s, want at most one per %s", n, window, broker.CallerRetryInterval)
	}
	if n := f.Requests() - before; n < int64(window/broker.CallerRetryInterval)-1 {
		t.Errorf("a watched failing key made %d requests in %s, want about one per %s", n, window, broker.CallerRetryInterval)
	}
	f.SetDefault(faultidp.OK("tok-ok", 3600))
	e.issued["tok-ok"] = true
	e.settle()
	e.clock.Advance(broker.CallerRetryInterval)
	next(t, w, inState(broker.StateReady))
}

// One token with a shorter lifetime than usual does not make a fitting
// min_valid fail with TooShortLivedError: the broker fetches. Only when
// every recent token was too short is the request refused, without a
// request to the identity provider.
func TestOneShortLifetimeIsNotTooShortLived(t *testing.T) {
	e, f, w := faultEnv(t, ptr(faultidp.OK("tok-long", 90)), faultidp.OK("tok-1", 90), faultidp.OK("tok-short", 66))
	for _, tok := range []string{"tok-1", "tok-short", "tok-long", "tok-short-2"} {
		e.issued[tok] = true
	}
	next(t, w, hasVersion(1))
	e.step() // the refresh brings the short one
	if u := next(t, w, hasVersion(2)); u.Token.AccessToken != "tok-short" {
		t.Fatalf("refresh brought %v, want tok-short", u.Token)
	}
	e.clock.Advance(broker.CallerRetryInterval) // a caller may start one request per interval
	tok, err := e.token(t.Context(), nil, 80*time.Second)
	if err != nil || tok.AccessToken != "tok-long" {
		t.Fatalf("min_valid 80s after one 66 s token among 90 s ones: %v %v, want a new 90 s token", tok, err)
	}

	// The IdP now grants 66 s only: once the recent lifetimes are all
	// short, min_valid 80s is refused without a request.
	f.SetDefault(faultidp.OK("tok-short-2", 66))
	var tsl *broker.TooShortLivedError
	for i := 0; ; i++ {
		if i > 5 {
			t.Fatal("min_valid 80s is never refused though the IdP grants 66 s only")
		}
		e.step()
		e.clock.Advance(broker.CallerRetryInterval)
		if _, err := e.token(t.Context(), nil, 80*time.Second); errors.As(err, &tsl) {
			break
		}
	}
	before := f.Requests()
	for range 50 {
		if _, err := e.token(t.Context(), nil, 80*time.Second); !errors.As(err, &tsl) {
			t.Fatalf("err = %v, want *TooShortLivedError", err)
		}
	}
	if n := f.Requests() - before; n != 0 {
		t.Errorf("%d requests for a min_valid the IdP consistently cannot meet, want 0", n)
	}
}

// private_key_jwt: a new key (a rotated key file) is a credential change
// of the same client, like a new secret: the cached token keeps serving
// and watching, the new key is tried at once, and invalid_client is
// retried within the grace.
func TestKeyChangeIsACredentialChange(t *testing.T) {
	mk := func() creds.PrivateKey {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pk, err := creds.NewPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pk
	}
	oldKey, newKey := mk(), mk()
	f := faultidp.Start()
	t.Cleanup(f.Close)
	f.Push(faultidp.OK("tok-1", 3600))
	f.SetDefault(faultidp.OAuthError(401, "invalid_client", "unknown key"))
	spec := broker.Tenant{Name: "acme", TokenURL: f.TokenURL(), ClientID: "client", ClientKey: oldKey}
	e := newEnv(t, broker.Config{Tenants: []broker.Tenant{spec}})
	e.issued["tok-1"] = true
	w, err := e.broker.Watch("acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	next(t, w, hasVersion(1))
	kidOf := func() string {
		form, _ := f.LastRequest()
		a := form.Get("client_assertion")
		h, _ := base64.RawURLEncoding.DecodeString(a[:strings.IndexByte(a, '.')])
		var hdr struct{ Kid string }
		_ = json.Unmarshal(h, &hdr)
		return hdr.Kid
	}
	oldKid, _ := upstream.KeyID(oldKey)
	newKid, _ := upstream.KeyID(newKey)
	if kidOf() != oldKid {
		t.Fatalf("first request kid %q, want the old key's %q", kidOf(), oldKid)
	}
	spec.ClientKey = newKey
	if err := e.broker.SetTenants([]broker.Tenant{spec}); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if kidOf() != newKid {
		t.Fatalf("after the change, kid %q: the reload did not try the new key at once", kidOf())
	}
	if d := e.status().NextRefresh.Sub(e.clock.Now()); d > broker.CredentialGraceRetryMax*6/5 {
		t.Errorf("invalid_client after a key change retried in %s, want the grace's %s", d, broker.CredentialGraceRetryMax)
	}
	if tok := e.mustToken(nil, 0); tok.AccessToken != "tok-1" {
		t.Errorf("served %v, want the cached token while the new key is rejected", tok)
	}
	noEnd(t, w)
}
