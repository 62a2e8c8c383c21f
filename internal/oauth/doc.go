// Package oauth is the broker's OAuth2 token endpoint: the
// client-credentials grant (RFC 6749 §4.4) over HTTP/1.1 at /oauth2/token
// and at Kognic's /v1/auth/oauth/token, so that any OAuth2 client library
// gets the broker's tokens by changing its token URL.
//
// client_id names the tenant; the client secret is a caller's API key, sent
// with HTTP Basic or in the form (never both), or a verified client
// certificate is the caller. Every request takes a GetToken call's steps
// through guard.Guard.Token: authentication, policy, rate limits and audit
// line. Answers are RFC 6749 §5.1 and §5.2 JSON, mapped from refusals and
// broker errors by one table (errors.go); no IdP text reaches a client.
package oauth
