package server

import (
	"context"
	"encoding/base64"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/names"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/guard"
)

// ListTenants page sizes (AIP-158).
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// pageTokenPrefix versions the page token format.
const pageTokenPrefix = "after:"

// ListTenants implements TokenBrokerService. It lists only the tenants the
// caller may use (guard.TenantVisible), one page at a time.
//
// A page token names the last tenant of the previous page (keyset
// pagination): the next page holds the visible tenants sorted after it. So
// a token carries only a name its caller was shown, works on every replica
// with the same tenants, survives tenants being added or removed between
// pages without repeating one, and, because the listing is filtered for the
// caller before paging, cannot reveal a hidden tenant even when forged.
func (s *Server) ListTenants(ctx context.Context, req *tbv1.ListTenantsRequest) (*tbv1.ListTenantsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Errorf(codes.InvalidArgument, "page_size %d is negative; omit it for the default of %d", size, defaultPageSize)
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	after, err := decodePageToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	infos := s.broker.Tenants() // sorted by name
	visible := guard.TenantVisible(ctx)
	resp := &tbv1.ListTenantsResponse{}
	for i := sort.Search(len(infos), func(i int) bool { return infos[i].Name > after }); i < len(infos); i++ {
		if !visible(infos[i].Name) {
			continue
		}
		if len(resp.Tenants) == size {
			// A visible tenant follows: there is a next page.
			resp.NextPageToken = encodePageToken(resp.Tenants[size-1].GetName())
			break
		}
		resp.Tenants = append(resp.Tenants, tenantProto(infos[i]))
	}
	return resp, nil
}

func tenantProto(ti broker.TenantInfo) *tbv1.Tenant {
	t := &tbv1.Tenant{
		Name:          ti.Name,
		TokenUrl:      ti.TokenURL,
		DefaultScopes: ti.Scopes,
		Status:        toStatusProto(ti.Status),
	}
	if !ti.Expiry.IsZero() {
		t.ExpireTime = timestamppb.New(ti.Expiry)
	}
	return t
}

// encodePageToken returns the page token of the page after tenant last.
func encodePageToken(last string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(pageTokenPrefix + last))
}

// decodePageToken returns the tenant name a page token continues after;
// "" for the first page.
func decodePageToken(tok string) (string, error) {
	if tok == "" {
		return "", nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	name, ok := strings.CutPrefix(string(raw), pageTokenPrefix)
	if err != nil || !ok || names.ValidTenant(name) != nil {
		return "", status.Error(codes.InvalidArgument,
			"page_token was not issued by this service; pass the next_page_token of the previous response, or none for the first page")
	}
	return name, nil
}
