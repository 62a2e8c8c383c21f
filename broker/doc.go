// Package broker caches and refreshes OAuth 2.0 client-credentials tokens
// for a set of tenants. It is the core of the token broker daemon, and a
// Go program may embed it directly.
//
// A Broker keeps one key per tenant and scope set. Each key's token is
// fetched from the tenant's identity provider once, shared by every caller,
// and refreshed in the background well before it expires, so Get rarely
// waits for the network and never does while a token valid for the caller's
// min_valid is cached. Concurrent requests for a key that has no usable
// token share one identity-provider request (single flight); failures back
// off with jitter and honour Retry-After.
//
// A Broker must be closed (Close, or Shutdown with a deadline). Tenants
// can be replaced while it runs (SetTenants); watches (WatchContext) follow
// a key's tokens and end when its tenant is removed or its identity changes;
// a credential change keeps the cached tokens until the new credentials
// obtain one.
//
// Errors are typed for errors.Is and errors.As (ErrUnknownTenant,
// ErrTooManyScopeSets, *TooShortLivedError, *upstream.Error…); status
// codes are chosen by the gRPC layer, which this package does not import.
// No error, log record or String method carries a secret or a token.
package broker
