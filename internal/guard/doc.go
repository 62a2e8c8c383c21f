// Package guard is the broker's gRPC access control: interceptors that
// authenticate each call, authorize it against the access policy, apply
// per-caller limits and write the audit trail.
//
// The interceptors cover every service except grpc.health.v1.Health and
// server reflection, which stay open so that probes and grpcurl work;
// TenantAccess applies the same identity rules to per-tenant health.
// For the covered calls, in order, in one interceptor per kind (unary,
// stream), since each layer costs every call:
//
//   - authentication: an "authorization: Bearer
//     <api key>" header, when present, decides; otherwise the verified
//     client certificate. No or bad credentials → UNAUTHENTICATED; a
//     verified identity that no caller in the policy has →
//     PERMISSION_DENIED. Refusals are rate limited per peer IP (then
//     RESOURCE_EXHAUSTED). The caller is put in the context.
//   - a per-caller token-bucket rate limit (golang.org/x/time/rate; per
//     connection in open mode), and a stricter
//     one for InvalidateToken → RESOURCE_EXHAUSTED;
//   - for streams, a per-caller limit on concurrent streams →
//     RESOURCE_EXHAUSTED;
//   - authorization of the request's tenant and scopes → PERMISSION_DENIED
//     with a message that does not depend on whether the tenant exists
//     (the guard never asks), and a cap on scopes per request →
//     INVALID_ARGUMENT. WatchToken is authorized on its request message and
//     re-checked inside every policy.Holder.Store: when Store returns, a
//     stream whose caller lost the right has its context cancelled, ends
//     with PERMISSION_DENIED, and admits and audits no further message
//     (one admitted before the change, with its audit line written
//     before Store returned, may still be on its way to the client).
//
// With a policy that has no callers the guard serves loopback peers only,
// all of them allowed everything, and refuses others with UNAUTHENTICATED.
//
// Audit: every denial, every token handed out (GetToken responses and
// WatchToken messages, read from the response, so handlers need no
// change) and every InvalidateToken call is written to the audit log as
// a fingerprint, never the token. A token whose line cannot be written is
// not handed out (UNAVAILABLE); identical denials are collapsed.
//
// ListTenants is allowed to every known caller; its handler filters the
// list with TenantVisible(ctx).
//
// A Guard is safe for concurrent use.
package guard
