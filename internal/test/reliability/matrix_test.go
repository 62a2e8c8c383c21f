package reliability

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// Matrix timing. Tokens live matrixLifetime, so a row's token is
// refreshed (into the fault) after about half of it and stops being
// served to default callers a tenth of it before expiry.
const (
	matrixLifetime = 6 * time.Second
	fetchTimeout   = time.Second
	slowDelay      = 200 * time.Millisecond // below fetchTimeout
	retryAfter     = 2 * time.Second
	callEvery      = 50 * time.Millisecond // the steady GetToken loop
	callTimeout    = 5 * time.Second       // each caller's own, distant deadline
	noTokenWindow  = 1500 * time.Millisecond
	// minBackoff is the broker's first retry interval (1 s) less its 20 %
	// jitter; CallerRetryInterval (1 s) is longer. No key may see more
	// than one IdP request per minBackoff while it fails.
	minBackoff = 800 * time.Millisecond
)

// matrixRow is one fault mode and what callers must see.
type matrixRow struct {
	mode Mode
	// code is what a caller without a valid token gets; OK means the
	// mode is no failure (the token must keep flowing through it).
	code codes.Code
	// cause: a message must contain one of these.
	cause []string
	// perRequest is the least time between two IdP requests while the
	// fault lasts; 0 means only one request for the whole fault
	// (permanent errors).
	perRequest time.Duration
	// recoverWithin bounds the time from clearing the fault to the first
	// successful call.
	recoverWithin time.Duration
	// reload: the fault clears by a configuration reload (the operator
	// fixed the credentials), not by itself.
	reload bool
}

var matrix = []matrixRow{
	{mode: Mode500, code: codes.Unavailable, cause: []string{"HTTP 500", "server_error"}, perRequest: minBackoff, recoverWithin: 2 * time.Second},
	{mode: Mode503, code: codes.Unavailable, cause: []string{"HTTP 503"}, perRequest: minBackoff, recoverWithin: 2 * time.Second},
	{mode: Mode429, code: codes.Unavailable, cause: []string{"HTTP 429"}, perRequest: retryAfter, recoverWithin: retryAfter + 2*time.Second},
	{mode: ModeHang, code: codes.Unavailable, cause: []string{"no answer within"}, perRequest: minBackoff, recoverWithin: 2*time.Second + fetchTimeout},
	{mode: ModeReset, code: codes.Unavailable, cause: []string{"connection reset", "EOF"}, perRequest: minBackoff, recoverWithin: 2 * time.Second},
	{mode: ModeGarbage, code: codes.Unavailable, cause: []string{"not a valid OAuth2 token response"}, perRequest: minBackoff, recoverWithin: 2 * time.Second},
	{mode: ModeHTML, code: codes.Unavailable, cause: []string{"without access_token", "not a valid OAuth2 token response"}, perRequest: minBackoff, recoverWithin: 2 * time.Second},
	{mode: ModeNoToken, code: codes.Unavailable, cause: []string{"without access_token"}, perRequest: minBackoff, recoverWithin: 2 * time.Second},
	{mode: ModeHugeExpiry, code: codes.OK},
	{mode: ModeZeroExpiry, code: codes.Unavailable, cause: []string{"already expired"}, perRequest: minBackoff, recoverWithin: 2 * time.Second},
	{mode: ModeNegExpiry, code: codes.Unavailable, cause: []string{"already expired"}, perRequest: minBackoff, recoverWithin: 2 * time.Second},
	// Credentials that worked and are then rejected get the credential
	// grace (an IdP restart may explain it): retried within seconds,
	// UNAVAILABLE meanwhile; the permanent FAILED_PRECONDITION comes after
	// broker.CredentialGrace, past this row (see the broker's tests).
	{mode: ModeInvalidClient, code: codes.Unavailable, cause: []string{"invalid_client"}, perRequest: minBackoff, recoverWithin: broker.CredentialGraceRetryMax*6/5 + time.Second, reload: true},
	{mode: ModeSlow, code: codes.OK},
	{mode: ModeBadTLS, code: codes.Unavailable, cause: []string{"certificate"}, perRequest: minBackoff, recoverWithin: 2 * time.Second},
	{mode: ModeRedirect, code: codes.Unavailable, cause: []string{"redirect", "HTTP 307"}, perRequest: minBackoff, recoverWithin: 2 * time.Second},
}

// matrixResult is one row of the outcome table.
type matrixResult struct {
	mode                     Mode
	calls, failedWhileCached int
	code                     string
	message                  string
	requests                 string
	recovery                 string
}

// TestFaultMatrix drives every fault mode through the real HTTP path: a
// broker behind a gRPC server, fetching through a fault-injecting HTTPS
// front from the dev IdP. For each mode: no call fails while a valid token
// is cached; without one, callers get the right code and a message naming
// the cause without the secret; the IdP sees at most one request per
// backoff step; and service recovers soon after the fault clears.
func TestFaultMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 15 s")
	}
	client := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}, TokenLifetime: matrixLifetime})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()

	// The rows mostly wait for token lifetimes to pass, so they all run
	// at once: t.Run from concurrent goroutines is not bounded by
	// -parallel, as t.Parallel subtests would be.
	var mu sync.Mutex
	var results []matrixResult
	var wg sync.WaitGroup
	for _, row := range matrix {
		wg.Go(func() {
			t.Run(string(row.mode), func(t *testing.T) {
				res := runRow(t, idp, client, row)
				mu.Lock()
				results = append(results, res)
				mu.Unlock()
			})
		})
	}
	wg.Wait()
	sort.Slice(results, func(i, j int) bool { return results[i].mode < results[j].mode })
	var b strings.Builder
	fmt.Fprintf(&b, "\n| mode | calls while cached | failed while cached | code without token | IdP requests (fault window) | recovery |\n|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %s |\n", r.mode, r.calls, r.failedWhileCached, r.code, r.requests, r.recovery)
	}
	t.Log(b.String())
	for _, r := range results {
		if r.message != "" {
			t.Logf("%s: %s", r.mode, r.message)
		}
	}
}

func runRow(t *testing.T, idp *devidp.Server, client devidp.Client, row matrixRow) matrixResult {
	res := matrixResult{mode: row.mode, code: "-", requests: "-", recovery: "-"}
	front := StartFront(t, idp.URL())
	front.SetRetryAfter(retryAfter)
	front.SetSlowDelay(slowDelay)
	const tenant = "acme"
	s := StartStack(t, StackConfig{
		Tenants:      []broker.Tenant{Tenant(tenant, front.TokenURL(), client.ID, client.Secret, front.Pool())},
		FetchTimeout: fetchTimeout,
	})
	ctx := t.Context()
	check := func(err error, what string) {
		t.Helper()
		if err == nil {
			return
		}
		st := status.Convert(err)
		if strings.Contains(st.Message(), client.Secret) {
			t.Errorf("%s: the message carries the client secret", what)
		}
	}

	// The first token, before any fault. The rows start together, so on a
	// busy machine the first request may miss the fetch timeout: poll.
	var first *tbv1.Token
	for deadline := time.Now().Add(15 * time.Second); ; {
		var err error
		if first, err = s.Get(ctx, tenant, callTimeout); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("first token, before any fault: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling; the broker retries at most once a second
	}
	expiry, issued := first.GetExpireTime().AsTime(), first.GetIssueTime().AsTime()
	defaultMinValid := min(time.Minute, expiry.Sub(issued)/10)
	front.SetMode(row.mode)
	faultStart := time.Now()
	req0 := front.Requests()

	// Phase 1: the cached token carries every caller through the fault.
	// Healthy modes run past the first token's expiry.
	cachedUntil := expiry.Add(-defaultMinValid - 400*time.Millisecond)
	if row.code == codes.OK {
		cachedUntil = expiry.Add(time.Second)
	}
	versions := map[uint64]bool{}
	tick := time.NewTicker(callEvery)
	defer tick.Stop()
	for time.Now().Before(cachedUntil) {
		tok, err := s.Get(ctx, tenant, callTimeout)
		res.calls++
		if err != nil {
			res.failedWhileCached++
			check(err, "cached phase")
			t.Errorf("call %d at +%s failed while a valid token was cached: %v", res.calls, time.Since(faultStart).Round(time.Millisecond), err)
		} else {
			versions[tok.GetVersion()] = true
			if exp, ok := JWTExpiry(tok.GetAccessToken()); ok && tok.GetExpireTime().AsTime().After(exp) {
				t.Errorf("token version %d is served until %s, after its JWT exp %s", tok.GetVersion(), tok.GetExpireTime().AsTime(), exp)
			}
		}
		<-tick.C
	}
	cachedWindow := time.Since(faultStart)
	cachedReqs := front.Requests() - req0

	if row.code == codes.OK {
		if len(versions) < 2 {
			t.Errorf("no refreshed token came through %s (versions %v)", row.mode, versions)
		}
		res.requests = fmt.Sprintf("%d in %s (no failure)", cachedReqs, cachedWindow.Round(100*time.Millisecond))
		return res
	}
	if cachedReqs < 1 {
		t.Fatalf("no refresh reached the front during the cached phase: the row proves nothing")
	}
	bound := requestBound(row, cachedWindow)
	if cachedReqs > bound {
		t.Errorf("the IdP got %d requests in %s of %s with a cached token, want at most %d", cachedReqs, cachedWindow.Round(time.Millisecond), row.mode, bound)
	}

	// Phase 2: no token valid for the default min_valid. Every caller
	// fails fast with the cause, and callers do not drive the IdP.
	wait := time.NewTimer(time.Until(expiry.Add(-defaultMinValid + 50*time.Millisecond)))
	<-wait.C
	req1, phase2 := front.Requests(), time.Now()
	codesSeen := map[codes.Code]int{}
	for time.Since(phase2) < noTokenWindow {
		callStart := time.Now()
		_, err := s.Get(ctx, tenant, callTimeout)
		took := time.Since(callStart)
		st := status.Convert(err)
		codesSeen[st.Code()]++
		if err == nil {
			t.Errorf("a call succeeded at +%s though no valid token can exist", time.Since(faultStart).Round(time.Millisecond))
		} else {
			check(err, "no-token phase")
			if st.Code() != row.code {
				t.Errorf("without a token: %s %q, want %s", st.Code(), st.Message(), row.code)
			}
			if !containsAny(st.Message(), row.cause) {
				t.Errorf("message %q does not name the cause (one of %q)", st.Message(), row.cause)
			}
			res.message = st.Code().String() + ": " + st.Message()
		}
		if took > fetchTimeout+time.Second {
			t.Errorf("a failing call took %s; callers must not wait longer than one fetch", took)
		}
		<-tick.C
	}
	noTokenReqs := front.Requests() - req1
	// Callers may start one attempt per CallerRetryInterval (1 s).
	if b := max(requestBound(row, time.Since(phase2)), int64(math.Ceil(noTokenWindow.Seconds()))+1); noTokenReqs > b {
		t.Errorf("the IdP got %d requests in %s without a token under %s, want at most %d", noTokenReqs, noTokenWindow, row.mode, b)
	}
	if row.perRequest == 0 && cachedReqs+noTokenReqs > 1 {
		t.Errorf("the IdP got %d requests under the permanent error %s, want 1 (no retry before a reload)", cachedReqs+noTokenReqs, row.mode)
	}
	total := 0
	for _, n := range codesSeen {
		total += n
	}
	res.code = fmt.Sprintf("%s (%d of %d calls)", row.code, codesSeen[row.code], total)
	window := time.Since(faultStart)
	res.requests = fmt.Sprintf("%d in %.1fs (bound %d)", cachedReqs+noTokenReqs, window.Seconds(), requestBound(row, window))

	// Phase 3: the fault clears; the first success comes soon.
	front.SetMode(ModePass)
	if row.reload {
		if err := s.Broker.SetTenants(s.Tenants); err != nil { // what SIGHUP or a changed credentials file does
			t.Fatal(err)
		}
	}
	cleared := time.Now()
	deadline := cleared.Add(row.recoverWithin + 5*time.Second)
	for {
		_, err := s.Get(ctx, tenant, callTimeout)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recovered %s after the fault cleared: %v", time.Since(cleared), err)
		}
		<-tick.C
	}
	recovered := time.Since(cleared)
	res.recovery = recovered.Round(10 * time.Millisecond).String()
	if recovered > row.recoverWithin {
		t.Errorf("recovered %s after the fault cleared, want within %s", recovered, row.recoverWithin)
	}
	t.Logf("%s: %d calls while cached, %d failed; recovered in %s", row.mode, res.calls, res.failedWhileCached, recovered)
	return res
}

// requestBound is the most IdP requests a failing key may make in window:
// one per perRequest (plus the first), or one for a permanent error.
func requestBound(row matrixRow, window time.Duration) int64 {
	if row.perRequest == 0 {
		return 1
	}
	return int64(window/row.perRequest) + 1
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
