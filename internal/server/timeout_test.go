package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/server"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// hangingBroker serves a broker whose identity provider never answers,
// with a short fetch timeout, over gRPC on loopback.
func hangingBroker(t *testing.T, fetchTimeout time.Duration) tbv1.TokenBrokerServiceClient {
	t.Helper()
	idp := faultidp.Start()
	idp.SetDefault(faultidp.Response{Hang: true})
	b, err := broker.New(broker.Config{
		Tenants: []broker.Tenant{{
			Name: "hung", TokenURL: idp.TokenURL(), ClientID: "c", ClientSecret: "hung-secret",
		}},
		FetchTimeout: fetchTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-registered first: the server stops before these.
	t.Cleanup(func() {
		_ = b.Close()
		idp.Close()
	})
	return serveOnLoopback(t, server.New(server.Config{Broker: b}))
}

// timed calls GetToken and reports its status and duration.
func timed(ctx context.Context, api tbv1.TokenBrokerServiceClient, scopes ...string) (*status.Status, time.Duration) {
	start := time.Now()
	_, err := api.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: "hung", Scopes: scopes})
	return status.Convert(err), time.Since(start)
}

// Issue 10.1: when the IdP hangs, the code says whose fault it is.
func TestHungIdPGivesUnavailableUnlessCallerDeadlinePassed(t *testing.T) {
	const fetchTimeout = 300 * time.Millisecond
	api := hangingBroker(t, fetchTimeout)

	// A caller without a deadline is bounded by the fetch timeout.
	st, took := timed(context.Background(), api)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "no answer within") {
		t.Errorf("caller without deadline: %s %q, want UNAVAILABLE saying the IdP did not answer", st.Code(), st.Message())
	}
	if took < fetchTimeout*9/10 || took > 10*fetchTimeout { // timers may fire a hair early
		t.Errorf("caller without deadline waited %s, want about the fetch timeout %s", took, fetchTimeout)
	}

	// Later callers with distant deadlines get the upstream error at once,
	// also once an early retry is allowed (it runs in the background).
	far, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, when := range []string{"during backoff", "after the caller retry interval"} {
		if when != "during backoff" {
			time.Sleep(broker.CallerRetryInterval) // real time must pass; nothing to wait on
		}
		st, took := timed(far, api)
		if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "no answer within") {
			t.Errorf("caller %s: %s %q, want UNAVAILABLE with the last upstream error", when, st.Code(), st.Message())
		}
		if took > fetchTimeout/2 {
			t.Errorf("caller %s waited %s, want an answer at once", when, took)
		}
	}

	// A cold key: a caller whose own deadline passes first gets
	// DEADLINE_EXCEEDED; one whose deadline is later gets UNAVAILABLE.
	short, cancelShort := context.WithTimeout(t.Context(), fetchTimeout/3)
	defer cancelShort()
	if st, _ := timed(short, api, "cold-a"); st.Code() != codes.DeadlineExceeded {
		t.Errorf("caller whose deadline passed: %s %q, want DEADLINE_EXCEEDED", st.Code(), st.Message())
	}
	if st, _ := timed(far, api, "cold-b"); st.Code() != codes.Unavailable {
		t.Errorf("caller with a later deadline on a cold key: %s %q, want UNAVAILABLE", st.Code(), st.Message())
	}
}
