package server_test

import (
	"encoding/base64"
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
)

// TestListTenantsPagesThroughThousandTenants lists 1,000 tenants page by
// page and checks that every tenant appears exactly once, in name order,
// and that only the last page has no next_page_token.
func TestListTenantsPagesThroughThousandTenants(t *testing.T) {
	const n = 1000
	f := brokertest.Start(t) // "acme", plus the 999 below
	extra := make([]broker.Tenant, 0, n-1)
	for i := range n - 1 {
		extra = append(extra, tenantAt(f, fmt.Sprintf("t%04d", i)))
	}
	all := append([]broker.Tenant{tenantAt(f, "acme")}, extra...)
	if err := f.Broker.SetTenants(all); err != nil {
		t.Fatal(err)
	}
	want := make([]string, 0, n)
	for _, tn := range all {
		want = append(want, tn.Name)
	}
	slices.Sort(want)

	for _, tt := range []struct {
		pageSize, wantPages int32
	}{
		{7, (n + 6) / 7},
		{100, 10},
		{0, 10},   // the default, 100
		{5000, 1}, // capped at 1000
		{1000, 1}, // exactly all: no empty trailing page
		{999, 2},
	} {
		t.Run(fmt.Sprint("page_size=", tt.pageSize), func(t *testing.T) {
			var got []string
			var pages int32
			token := ""
			for {
				resp, err := f.API.ListTenants(t.Context(), &tbv1.ListTenantsRequest{PageSize: tt.pageSize, PageToken: token})
				if err != nil {
					t.Fatalf("page %d: %v", pages+1, err)
				}
				pages++
				if pages > tt.wantPages {
					t.Fatalf("more than %d pages", tt.wantPages)
				}
				for _, tn := range resp.GetTenants() {
					got = append(got, tn.GetName())
				}
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
			if pages != tt.wantPages {
				t.Errorf("%d pages, want %d", pages, tt.wantPages)
			}
			if !slices.Equal(got, want) {
				t.Errorf("listed %d tenants, want each of the %d exactly once in order", len(got), len(want))
			}
		})
	}
}

func TestListTenantsRejectsBadPageArguments(t *testing.T) {
	f := brokertest.Start(t)
	for name, req := range map[string]*tbv1.ListTenantsRequest{
		"negative page_size":    {PageSize: -1},
		"page_token not base64": {PageToken: "%%%"},
		"page_token forged":     {PageToken: base64.RawURLEncoding.EncodeToString([]byte("acme"))},
		"page_token bad tenant": {PageToken: base64.RawURLEncoding.EncodeToString([]byte("after:Not A Tenant"))},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.API.ListTenants(t.Context(), req)
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("err = %v, want INVALID_ARGUMENT", err)
			}
		})
	}
}

// TestListTenantsPageTokenSurvivesRemoval: a tenant removed between pages
// neither breaks the listing nor makes another tenant repeat or vanish.
func TestListTenantsPageTokenSurvivesRemoval(t *testing.T) {
	f := brokertest.Start(t)
	var all []broker.Tenant
	for _, name := range []string{"acme", "bravo", "charlie", "delta"} {
		all = append(all, tenantAt(f, name))
	}
	if err := f.Broker.SetTenants(all); err != nil {
		t.Fatal(err)
	}
	first, err := f.API.ListTenants(t.Context(), &tbv1.ListTenantsRequest{PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	// "bravo", the last tenant of the first page, goes away.
	if err := f.Broker.SetTenants(slices.Delete(slices.Clone(all), 1, 2)); err != nil {
		t.Fatal(err)
	}
	second, err := f.API.ListTenants(t.Context(), &tbv1.ListTenantsRequest{PageSize: 2, PageToken: first.GetNextPageToken()})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tn := range append(first.GetTenants(), second.GetTenants()...) {
		got = append(got, tn.GetName())
	}
	if want := []string{"acme", "bravo", "charlie", "delta"}; !slices.Equal(got, want) || second.GetNextPageToken() != "" {
		t.Errorf("pages = %v (next %q), want %v and no next page", got, second.GetNextPageToken(), want)
	}
}
