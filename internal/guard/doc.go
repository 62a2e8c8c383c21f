// Package guard is the broker's access control: it admits, authenticates,
// authorizes and limits every call, and writes the audit trail.
//
// Every call takes the same steps, in order (pipeline.go), whatever its
// transport; the gRPC server runs them from its tap and interceptors
// (grpc.go, stream.go), an HTTP endpoint would run them on its requests:
//
//   - admit, when a call's HEADERS arrive (gRPC's tap, before any message
//     is read): its slot among its caller's open calls, over all the
//     caller's addresses, or for a peer without credentials among its
//     IP's → RESOURCE_EXHAUSTED past the cap. A token call whose API key
//     does not verify is refused here, before any message.
//   - authenticate: an "authorization: Bearer <api key>" header, when
//     present, decides (the key is hashed once per call, in the tap);
//     otherwise the verified client certificate. No or bad credentials →
//     UNAUTHENTICATED; a verified identity that no caller in the policy
//     has → PERMISSION_DENIED. Refusals are rate limited per peer IP
//     (then RESOURCE_EXHAUSTED).
//   - authorize the request's tenant and scopes → PERMISSION_DENIED with
//     a message that does not depend on whether the tenant exists (the
//     guard never asks), INVALID_ARGUMENT past the cap on scopes per
//     request. WatchToken is authorized on its request message and
//     re-checked inside every policy.Holder.Store: when Store returns, a
//     stream whose caller lost the right has its context cancelled, ends
//     with PERMISSION_DENIED, and admits and audits no further message
//     (one admitted before the change, with its audit line written before
//     Store returned, may still be on its way to the client).
//   - limit: a per-caller token bucket (golang.org/x/time/rate; per
//     connection in open mode), and a stricter one for InvalidateToken →
//     RESOURCE_EXHAUSTED.
//   - audit: every denial, every token handed out (GetToken responses and
//     WatchToken messages, read from the response, so handlers need no
//     change) and every InvalidateToken call, with the token's
//     fingerprint, never the token. A token whose line cannot be written
//     is not handed out (UNAVAILABLE); identical denials are collapsed.
//
// Health and reflection are admitted but not otherwise guarded, so that
// probes and grpcurl work; TenantAccess applies the token calls' identity
// rules to per-tenant health. With a policy that has no callers the guard
// serves loopback peers only, all of them allowed everything, and refuses
// others with UNAUTHENTICATED. ListTenants is allowed to every known
// caller; its handler filters the list with TenantVisible(ctx).
//
// A Guard is safe for concurrent use.
package guard
