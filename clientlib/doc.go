// Package clientlib turns a tenant's tokens into an *http.Client, an
// http.RoundTripper, an oauth2.TokenSource and gRPC per-RPC credentials, so
// that a service calling other APIs never handles a client secret or a
// token refresh.
//
// Tokens come from a tokenbroker (broker mode) or, with no broker, straight
// from the Kognic auth server with the client-credentials grant (direct
// mode), which runs the broker's own token lifecycle in process: the same
// credential parsing, refresh ahead of expiry, coalesced requests, backoff
// and 401 handling.
//
// The pieces compose like golang.org/x/oauth2's, with these differences:
// every blocking call takes a context, no long-lived object keeps a
// caller's context, a 401 replaces the token and retries once, and a token
// is never sent over plain http to a host other than loopback (a loopback
// IP address or "localhost", nothing else) unless allowed explicitly.
//
// A token goes only to the origin the caller asked for: a redirect to
// another scheme, host or port is followed without any Authorization
// header (see Transport), in every mode.
//
//   - NewHTTPClient builds, from options or the environment
//     (TOKENBROKER_ADDR, else KOGNIC_CREDENTIALS or KOGNIC_CLIENT_ID and
//     KOGNIC_CLIENT_SECRET), an HTTPClient whose Client method returns
//     *http.Clients that carry the token. It must be closed.
//   - NewSource follows one tenant's token over a gRPC connection to the
//     broker, in the manner of go-spiffe's workloadapi sources: the
//     constructor blocks until the first token, a watch stream then keeps
//     it current in the background, and Token answers from memory, without
//     allocating. It must be closed.
//   - NewTransport returns the http.RoundTripper that authorises requests
//     with any oauth2.TokenSource; when the source is also an Invalidator,
//     as a *Source is, a 401 replaces the token and the request is sent
//     again.
//   - PerRPCCredentials authorises gRPC calls with any oauth2.TokenSource.
//
// Every constructor takes options of one style, interfaces with an
// unexported method: NewHTTPClient takes Options; NewSource takes
// SourceOptions and NewTransport TransportOptions, each also an Option;
// PerRPCCredentials takes PerRPCOptions. Every type that owns goroutines
// or connections has an idempotent Close that waits for them and closes
// only what it created.
//
// Errors that a caller may act on are the same in broker and direct mode:
// errors.Is(err, ErrUnknownTenant), ErrPermissionDenied,
// ErrCredentialsRejected, ErrUnavailable or ErrInvalidArgument, each
// wrapping the underlying gRPC status or broker error.
//
// Everything in this package is safe for concurrent use.
package clientlib
