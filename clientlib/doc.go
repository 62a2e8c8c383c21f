// Package clientlib turns a tenant's tokens into an *http.Client, an
// http.RoundTripper, an oauth2.TokenSource and gRPC per-RPC credentials, so
// that a service calling other APIs never handles a client secret or a
// token refresh.
//
// Tokens come from a tokenbroker (broker mode) or, with no broker, straight
// from the Kognic auth server (direct mode), which runs the broker's own
// token lifecycle in process.
//
// The pieces compose like golang.org/x/oauth2's, except that every blocking
// call takes a context, no long-lived object keeps a caller's context, a 401
// replaces the token and retries once, a token is sent over plain http only
// to loopback unless allowed explicitly, and only to the origin the caller
// asked for (a redirect elsewhere goes without Authorization):
//
//   - NewHTTPClient builds, from options or the environment
//     (TOKENBROKER_ADDR, else KOGNIC_CREDENTIALS or KOGNIC_CLIENT_ID and
//     KOGNIC_CLIENT_SECRET), an HTTPClient whose Client method returns
//     *http.Clients that carry the token.
//   - NewSource follows one tenant's token over a gRPC connection to the
//     broker, as go-spiffe's workloadapi sources do: it blocks until the
//     first token, a watch stream keeps it current, and Token answers from
//     memory without allocating.
//   - NewTransport authorises requests with any oauth2.TokenSource.
//   - PerRPCCredentials authorises gRPC calls with any oauth2.TokenSource.
//
// Options are interfaces with an unexported method: NewHTTPClient takes
// Options; SourceOptions and TransportOptions are Options too. Every type
// that owns goroutines or connections must be closed; Close is idempotent.
// Errors a caller acts on (ErrUnknownTenant, ErrPermissionDenied,
// ErrCredentialsRejected, ErrUnavailable, ErrInvalidArgument) are the same
// in broker and direct mode, for errors.Is. Everything here is safe for
// concurrent use.
package clientlib
