package server

import (
	"context"
	"strings"

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
