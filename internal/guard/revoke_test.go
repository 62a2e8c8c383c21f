package guard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

const watchMethod = "/tokenbroker.v1.TokenBrokerService/WatchToken"

// policies returns the policy of callers() and one where billing lost
// team-a (batch keeps it).
func policies(t *testing.T) (allow, deny *policy.Policy) {
	t.Helper()
	d := callers()
	d[0].Tenants = []string{"acme"}
	var err error
	if allow, err = policy.New(callers()); err != nil {
		t.Fatal(err)
	}
	if deny, err = policy.New(d); err != nil {
		t.Fatal(err)
	}
	return allow, deny
}

// pushTokens feeds the stub's open watches new token versions of tenant,
// from version 2, until stop is closed; done is closed when it returns.
func pushTokens(e *env, tenant string, stop <-chan struct{}) (done <-chan struct{}) {
	d := make(chan struct{})
	go func() {
		defer close(d)
		for v := uint64(2); ; v++ {
			select {
			case e.stub.push <- token(tenant, v, []string{"read:x"}):
			case <-stop:
				return
			}
		}
	}()
	return d
}

// TestRevokedWatchAuditsNothingAfterStore: a watch that is busy sending
// (a token every time the client reads one) is revoked by a Store; every
// issue line of it is in the audit trail when Store returns, none is
// written later, and every token the client got has its line among them.
// The sequence point is the audit trail read right after Store returned,
// no timing. Several rounds, since the send in flight when Store runs
// is at a different step each time.
func TestRevokedWatchAuditsNothingAfterStore(t *testing.T) {
	e := start(t, options{callers: callers()})
	allow, deny := policies(t)
	billing := e.certClient(billingCert)
	// issued returns the versions of billing's team-a issue lines, in
	// order; each round's stream starts again at version 1.
	issued := func() []uint64 {
		var v []uint64
		for _, r := range e.records() {
			if r.Event == audit.EventIssue && r.Caller == "billing" && r.Tenant == "team-a" {
				v = append(v, r.Version)
			}
		}
		return v
	}
	for round := range 20 {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		before := len(issued())
		if err := e.holder.Store(allow); err != nil {
			t.Fatal(err)
		}
		s, err := billing.WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: "team-a", Scopes: []string{"read:x"}})
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		pushed := pushTokens(e, "team-a", stop)
		var received []uint64
		var end error
		for end == nil {
			var m *tbv1.WatchTokenResponse
			if m, end = s.Recv(); end == nil {
				received = append(received, m.GetToken().GetVersion())
				if len(received) == 3 { // the stream is busy sending now
					if err := e.holder.Store(deny); err != nil {
						t.Fatal(err)
					}
					break
				}
			}
		}
		atStore := issued()[before:]
		for end == nil {
			var m *tbv1.WatchTokenResponse
			if m, end = s.Recv(); end == nil {
				received = append(received, m.GetToken().GetVersion())
			}
		}
		close(stop)
		<-pushed
		cancel()
		wantCode(t, fmt.Sprintf("round %d: stream after revocation", round), end, codes.PermissionDenied)
		// The stream's handler has returned: every line it wrote is in.
		after := issued()[before:]
		if len(after) != len(atStore) {
			t.Errorf("round %d: %d issue lines for the revoked watch when Store returned, %d after it ended", round, len(atStore), len(after))
		}
		for _, v := range received {
			if !slices.Contains(atStore, v) {
				t.Errorf("round %d: version %d reached the client without an issue line written before Store returned", round, v)
			}
		}
	}
}

// revocationWriter is the audit trail of TestPolicyFlipsLeaveNoStaleStream:
// while denied is set (from just after a Store that revokes billing's
// team-a to just before the Store that restores it) an issue line of
// billing for team-a is a violation.
type revocationWriter struct {
	w          io.Writer
	denied     atomic.Bool
	violations atomic.Int64
	issued     atomic.Int64 // billing's team-a issue lines while allowed
}

func (w *revocationWriter) Write(p []byte) (int, error) {
	denied := w.denied.Load()
	for ln := range strings.Lines(string(p)) {
		var r audit.Record
		if json.Unmarshal([]byte(ln), &r) != nil || r.Event != audit.EventIssue || r.Caller != "billing" || r.Tenant != "team-a" {
			continue
		}
		if denied {
			w.violations.Add(1)
		} else {
			w.issued.Add(1)
		}
	}
	return w.w.Write(p)
}

// TestPolicyFlipsLeaveNoStaleStream: while callers open watches and
// receive tokens, the policy flips thousands of times between one that
// allows billing team-a and one that does not. After every Store, every
// open stream is decided under the stored policy and none of billing's
// is left open under the denying one; while it is live, no issue line of
// billing's is written; batch's streams are never ended; every billing
// stream ends PERMISSION_DENIED.
func TestPolicyFlipsLeaveNoStaleStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	w := &revocationWriter{}
	e := start(t, options{callers: callers(), limits: limits.Limits{RequestsPerSecond: -1}, auditTo: w})
	w.w = e.audit
	allow, deny := policies(t)
	billing, batch := e.certClient(billingCert), e.certClient(batchCert)
	req := &tbv1.WatchTokenRequest{Tenant: "team-a", Scopes: []string{"read:x"}}

	var final atomic.Bool // the last Store (deny) has returned
	var revocations atomic.Int64
	errs := make(chan error, 64)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	// Each worker watches again as soon as its stream ends.
	watch := func(ctx context.Context, c tbv1.TokenBrokerServiceClient) error {
		s, err := c.WatchToken(ctx, req)
		for err == nil {
			_, err = s.Recv()
		}
		return err
	}
	var billingWG, batchWG sync.WaitGroup
	for range 6 {
		billingWG.Go(func() {
			for {
				err := watch(ctx, billing)
				if status.Code(err) != codes.PermissionDenied {
					report(fmt.Errorf("a billing watch ended with %v, want PERMISSION_DENIED", err))
					return
				}
				if strings.Contains(err.Error(), "revoked by a policy change") {
					revocations.Add(1)
				}
				if final.Load() {
					return
				}
			}
		})
	}
	batchCtx, stopBatch := context.WithCancel(ctx)
	for range 2 {
		batchWG.Go(func() {
			for batchCtx.Err() == nil {
				if err := watch(batchCtx, batch); status.Code(err) != codes.Canceled {
					report(fmt.Errorf("a batch watch, never revoked, ended with %v", err))
					return
				}
			}
		})
	}
	stop := make(chan struct{})
	pushed := pushTokens(e, "team-a", stop)

	// check asserts what Store(p) guarantees once it returned.
	check := func(i int, p *policy.Policy) {
		o := &e.guard.open
		o.mu.Lock()
		defer o.mu.Unlock()
		for s, decided := range o.set {
			if decided != p {
				t.Fatalf("flip %d: a stream of %s is decided under a stale policy after Store returned", i, s.c.Name)
			}
			if p == deny && s.c.Name == "billing" {
				t.Fatalf("flip %d: a billing stream is open under the policy that denies it", i)
			}
		}
	}
	billingOpen := func() bool {
		o := &e.guard.open
		o.mu.Lock()
		defer o.mu.Unlock()
		for s := range o.set {
			if s.c.Name == "billing" {
				return true
			}
		}
		return false
	}
	const flips = 4000
	for i := range flips {
		if ctx.Err() != nil {
			t.Fatalf("flip %d: %v", i, ctx.Err())
		}
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		p := allow
		if i%2 == 1 {
			p = deny
		} else {
			w.denied.Store(false)
		}
		if err := e.holder.Store(p); err != nil {
			t.Fatal(err)
		}
		if p == deny {
			w.denied.Store(true)
		}
		check(i, p)
		// Now and then, let a billing stream open before revoking, so
		// that revocations of open streams happen, not only denials.
		if i%16 == 0 {
			for !billingOpen() && ctx.Err() == nil {
				runtime.Gosched()
			}
		}
	}
	if err := e.holder.Store(deny); err != nil {
		t.Fatal(err)
	}
	w.denied.Store(true)
	final.Store(true)
	check(flips, deny)
	billingWG.Wait() // each ends on a PERMISSION_DENIED after the final Store
	stopBatch()
	batchWG.Wait()
	close(stop)
	<-pushed
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	if n := w.violations.Load(); n != 0 {
		t.Errorf("%d issue lines of billing for team-a written while the policy denying it was live", n)
	}
	// The test exercised what it claims to.
	if revocations.Load() < flips/32 {
		t.Errorf("%d open billing streams revoked, want at least %d", revocations.Load(), flips/32)
	}
	if w.issued.Load() == 0 {
		t.Error("no token was issued to billing while it was allowed")
	}
	t.Logf("%d revocations of open streams, %d billing issue lines", revocations.Load(), w.issued.Load())
}
