package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
)

// WatchToken encodes each update once for all its streams: every stream
// still receives its own key's token, and the guard still writes one
// audit line per stream for every token it hands out.
func TestWatchStreamsShareEncodedUpdatesAndEachIsAudited(t *testing.T) {
	s := brokertest.StartSecured(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	billing := s.API(s.WithCert(brokertest.BillingSPIFFE)) // may use acme
	ci := s.API(s.TLSOnly())                               // API key: team-*
	ciCtx := brokertest.Bearer(ctx, s.APIKey)
	const n = 8
	open := func(api tbv1.TokenBrokerServiceClient, ctx context.Context, tenant string) []grpc.ServerStreamingClient[tbv1.WatchTokenResponse] {
		var out []grpc.ServerStreamingClient[tbv1.WatchTokenResponse]
		for range n {
			st, err := api.WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: tenant})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, st)
		}
		return out
	}
	acme, team := open(billing, ctx, "acme"), open(ci, ciCtx, "team-a")
	first := func(streams []grpc.ServerStreamingClient[tbv1.WatchTokenResponse], tenant string) *tbv1.Token {
		var tok *tbv1.Token
		for i, st := range streams {
			got := recvToken(t, st)
			if got.GetTenant() != tenant || tok != nil && got.GetAccessToken() != tok.GetAccessToken() {
				t.Fatalf("%s stream %d got a token of %q (version %d), want %s's current one", tenant, i, got.GetTenant(), got.GetVersion(), tenant)
			}
			tok = got
		}
		return tok
	}
	acme1, team1 := first(acme, "acme"), first(team, "team-a")
	if acme1.GetAccessToken() == team1.GetAccessToken() {
		t.Fatal("acme and team-a streams got the same token")
	}
	inv, err := s.Invalidate(ctx, billing, "acme", acme1.GetAccessToken())
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range acme {
		if got := recvToken(t, st); got.GetAccessToken() != inv.GetAccessToken() || got.GetVersion() != inv.GetVersion() {
			t.Errorf("acme stream %d got version %d, want the replacement, version %d", i, got.GetVersion(), inv.GetVersion())
		}
	}

	want := map[string]int{ // caller/tenant/fingerprint -> streams
		"billing/acme/" + audit.Fingerprint(acme1.GetAccessToken()): n,
		"billing/acme/" + audit.Fingerprint(inv.GetAccessToken()):   n,
		"ci/team-a/" + audit.Fingerprint(team1.GetAccessToken()):    n,
	}
	got := map[string]int{}
	for _, r := range s.AuditRecords() {
		if r.Event == audit.EventIssue && r.Method == tbv1.TokenBrokerService_WatchToken_FullMethodName {
			got[r.Caller+"/"+r.Tenant+"/"+r.TokenFingerprint]++
		}
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("audit: %d WatchToken issue lines for %s, want one per stream (%d); all: %v", got[k], k, w, got)
		}
	}
}
