package server_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
)

// The two status cases the proto documents besides the per-RPC lists.

// TestWatchEndsUnavailableWhenTenantReconfigured: a reconfigured tenant
// ends its watches UNAVAILABLE, and watching again serves the new
// configuration.
func TestWatchEndsUnavailableWhenTenantReconfigured(t *testing.T) {
	f := brokertest.Start(t)
	stream, err := f.API.WatchToken(t.Context(), &tbv1.WatchTokenRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	f.Token(recvToken(t, stream).GetAccessToken())
	changed := tenantAt(f, "acme")
	changed.Scopes = []string{"changed"}
	if err := f.Broker.SetTenants([]broker.Tenant{changed}); err != nil {
		t.Fatal(err)
	}
	if st := status.Convert(streamEnd(stream)); st.Code() != codes.Unavailable {
		t.Fatalf("stream ended with %s %q, want UNAVAILABLE", st.Code(), st.Message())
	}
	again, err := f.API.WatchToken(t.Context(), &tbv1.WatchTokenRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	tok := recvToken(t, again)
	f.Token(tok.GetAccessToken())
	if got := tok.GetScopes(); len(got) != 1 || got[0] != "changed" {
		t.Errorf("re-watch serves scopes %q, want the new default [changed]", got)
	}
}

// TestScopeSetCapIsResourceExhausted: with every scope set of a tenant
// watched (so none can be evicted), a new scope set is refused
// RESOURCE_EXHAUSTED, naming the fix; a known one is still served.
func TestScopeSetCapIsResourceExhausted(t *testing.T) {
	f := brokertest.Start(t)
	const perTenant = 64 // broker default, the default set included
	for i := range perTenant - 1 {
		stream, err := f.API.WatchToken(t.Context(), &tbv1.WatchTokenRequest{Tenant: "acme", Scopes: []string{fmt.Sprint("s", i)}})
		if err != nil {
			t.Fatal(err)
		}
		f.Token(recvToken(t, stream).GetAccessToken())
	}
	_, err := f.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "acme", Scopes: []string{"one-too-many"}})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "request fewer distinct scope sets") {
		t.Errorf("scope set over the cap: %s %q, want RESOURCE_EXHAUSTED naming the fix", st.Code(), st.Message())
	}
	if _, err := f.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "acme", Scopes: []string{"s0"}}); err != nil {
		t.Errorf("known scope set at the cap: %v", err)
	}
}

// tenant is a tenant of the fixture's identity provider and client.
func tenantAt(f *brokertest.Fixture, name string) broker.Tenant {
	return broker.Tenant{Name: name, TokenURL: f.IdP.TokenURL(), ClientID: f.Client.ID, ClientSecret: creds.Secret(f.Client.Secret)}
}

// streamEnd reads a stream to its end and returns the error that ended it.
func streamEnd(stream grpc.ServerStreamingClient[tbv1.WatchTokenResponse]) error {
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}
