// Package oauth is the broker's OAuth2 token endpoint: the
// client-credentials grant (RFC 6749 §4.4) over HTTP, in front of the
// token cache, at /oauth2/token and at Kognic's /v1/auth/oauth/token, so
// that any OAuth2 client library (kognic-auth with KOGNIC_AUTH_SERVER
// among them) gets the broker's tokens by changing its token URL.
//
// client_id names the tenant. The client authenticates as a caller of
// the broker's policy: its client secret is the caller's API key, sent
// with HTTP Basic (client_secret_basic, both parts form-encoded) or in
// the form (client_secret_post), never both; or, without a secret, its
// verified client certificate is the caller (mutual TLS). scope, split
// at spaces, selects the scope set as GetToken's scopes do.
//
// Every request takes the steps of a GetToken call through the same
// guard (guard.Guard.Token): the same authentication, policy, per-caller
// rate limit, per-IP denial budget and audit line, whose method is
// "POST /oauth2/token" or "POST /v1/auth/oauth/token". Answers are RFC
// 6749 §5.1 and §5.2 JSON with Cache-Control: no-store; the mapping of
// refusals and broker errors to them is one table (errors.go), and no
// text of a tenant's identity provider reaches a client.
//
// The server speaks HTTP/1.1 only, with its limits from limits.Limits:
// the body, the headers and the time to send them, and an idle timeout;
// the daemon serves it on a listener with the connection caps.
package oauth
