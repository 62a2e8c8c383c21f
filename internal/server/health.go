package server

import (
	"context"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

const tenantHealthPrefix = "tenant/"

// errUnknownService is the answer, word for word that of health.Server
// for a service it does not know, to a peer that may not see a tenant,
// whether or not the tenant exists.
var errUnknownService = status.Error(codes.NotFound, "unknown service")

// healthServer serves grpc.health.v1 from a health.Server, showing
// service "" to anyone and "tenant/<name>" only to peers allowed to use
// the tenant, so that health does not enumerate tenants.
type healthServer struct {
	*health.Server
	// access returns the tenants the peer of ctx may see; nil allows all.
	access func(ctx context.Context) func(tenant string) bool
}

// visible reports whether the peer of ctx may see service.
func (h *healthServer) visible(ctx context.Context, service string) bool {
	tenant, ok := strings.CutPrefix(service, tenantHealthPrefix)
	if !ok || h.access == nil {
		return true
	}
	return h.access(ctx)(tenant)
}

// Check implements healthpb.HealthServer.
func (h *healthServer) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if !h.visible(ctx, req.GetService()) {
		return nil, errUnknownService
	}
	return h.Server.Check(ctx, req)
}

// List implements healthpb.HealthServer: it lists "" and the tenants the
// peer may see.
func (h *healthServer) List(ctx context.Context, req *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	resp, err := h.Server.List(ctx, req)
	if err != nil || h.access == nil {
		return resp, err
	}
	allowed := h.access(ctx)
	for svc := range resp.GetStatuses() {
		if tenant, ok := strings.CutPrefix(svc, tenantHealthPrefix); ok && !allowed(tenant) {
			delete(resp.Statuses, svc)
		}
	}
	return resp, nil
}

// Watch implements healthpb.HealthServer. A peer that may not see the
// tenant gets NOT_FOUND at once, where health.Server would keep the
// stream open with SERVICE_UNKNOWN.
func (h *healthServer) Watch(req *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	if !h.visible(stream.Context(), req.GetService()) {
		return errUnknownService
	}
	return h.Server.Watch(req, stream)
}

// TenantHealthService is the health service name of a tenant.
func TenantHealthService(tenant string) string { return tenantHealthPrefix + tenant }

// TenantHealth returns NewHealthStatus(h).SetTenant, for a server that
// never holds its health (no audit trail).
func TenantHealth(h *health.Server) func(tenant string, serving bool) {
	return NewHealthStatus(h).SetTenant
}

// HealthStatus sets the health of the service ("") and of each tenant
// ("tenant/<name>") on a health.Server: a tenant is SERVING while it
// holds a valid token, unless Hold has taken everything out of service
// (the audit trail cannot be written, so no token is handed out). It is
// safe for concurrent use; its methods never block on the network.
type HealthStatus struct {
	h       *health.Server
	mu      sync.Mutex          // orders the updates of h
	serving map[string]struct{} // tenants with a valid token, held or not
	held    bool
}

// NewHealthStatus returns a HealthStatus that sets the statuses of h.
func NewHealthStatus(h *health.Server) *HealthStatus {
	return &HealthStatus{h: h, serving: map[string]struct{}{}}
}

// SetTenant records whether tenant holds a valid token; it is the
// broker's broker.Config.OnTenantHealth. While held, the tenant's health
// stays NOT_SERVING and the change applies at release.
func (s *HealthStatus) SetTenant(tenant string, serving bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if serving {
		s.serving[tenant] = struct{}{}
	} else {
		delete(s.serving, tenant)
	}
	s.h.SetServingStatus(TenantHealthService(tenant), servingStatus(serving && !s.held))
}

// Hold, with true, turns "" and every tenant NOT_SERVING; with false,
// "" SERVING again and each tenant to what it is at that moment. It is
// the guard's OnAuditFailure.
func (s *HealthStatus) Hold(hold bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if hold == s.held {
		return
	}
	s.held = hold
	s.h.SetServingStatus("", servingStatus(!hold))
	for tenant := range s.serving {
		s.h.SetServingStatus(TenantHealthService(tenant), servingStatus(!hold))
	}
}

func servingStatus(serving bool) healthpb.HealthCheckResponse_ServingStatus {
	if serving {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}
