package guard

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
)

func TestRateLimit(t *testing.T) {
	ctx := t.Context()
	// A bucket of 2 that refills once in about 30 years: no sleeps needed.
	e := start(t, options{callers: callers(), limits: limits.Limits{RequestsPerSecond: 1e-9, Burst: 2}})
	billing := e.certClient(billingCert)
	for i := range 2 {
		if _, err := get(ctx, billing, "acme", "read:x"); err != nil {
			t.Fatalf("call %d within the burst: %v", i+1, err)
		}
	}
	_, err := get(ctx, billing, "acme", "read:x")
	wantCode(t, "call after the burst", err, codes.ResourceExhausted)
	if !strings.Contains(err.Error(), `caller "billing" is over its rate limit`) {
		t.Errorf("message %q", err)
	}
	s, err := billing.WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: "acme", Scopes: []string{"read:x"}})
	if err == nil {
		_, err = s.Recv()
	}
	wantCode(t, "stream after the burst", err, codes.ResourceExhausted)
	// Other callers have their own bucket.
	if _, err := get(ctx, e.certClient(reportsCert), "acme"); err != nil {
		t.Fatalf("another caller: %v", err)
	}
	var denied int
	for _, r := range e.records() {
		if r.Event == audit.EventDeny && r.Code == codes.ResourceExhausted.String() && r.Caller == "billing" {
			denied++
		}
	}
	if denied != 2 {
		t.Errorf("%d rate-limit denials audited, want 2", denied)
	}
}

// TestStreamLimit: a caller holds at most MaxStreamsPerCaller open
// calls, streams and unary calls alike (counted by the tap from their
// HEADERS); other callers have their own count; a call that ends gives
// its slot back.
func TestStreamLimit(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	e := start(t, options{callers: callers(), limits: limits.Limits{MaxStreamsPerCaller: 1}})
	billing := e.certClient(billingCert)
	watch := func(c tbv1.TokenBrokerServiceClient, ctx context.Context) error {
		s, err := c.WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: "acme", Scopes: []string{"read:x"}})
		if err == nil {
			_, err = s.Recv()
		}
		return err
	}
	held, release := context.WithCancel(ctx)
	if err := watch(billing, held); err != nil {
		t.Fatalf("first stream: %v", err)
	}
	err := watch(billing, ctx)
	wantCode(t, "second stream", err, codes.ResourceExhausted)
	if !strings.Contains(err.Error(), "max_streams_per_caller") {
		t.Errorf("message %q", err)
	}
	_, err = get(ctx, billing, "acme", "read:x")
	wantCode(t, "unary call at the cap", err, codes.ResourceExhausted)
	if err := watch(e.certClient(reportsCert), ctx); err != nil {
		t.Fatalf("another caller's stream: %v", err)
	}
	release()
	// The slot comes back when the transport ends the stream, an event
	// the test cannot wait on: poll, bounded.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err = get(ctx, billing, "acme", "read:x"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unary call after the stream ended: %v", err)
		}
	}
	cancel()
	e.stop()
	for deadline := time.Now().Add(10 * time.Second); e.guard.callers.len() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d callers still hold calls after every call ended", e.guard.callers.len())
		}
	}
}
