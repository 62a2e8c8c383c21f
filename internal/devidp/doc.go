// Package devidp is an embedded OAuth2 identity provider for development and
// tests only. It must never be used to issue credentials for production.
//
// It is built on github.com/go-oauth2/oauth2/v4 (server and manage packages)
// and serves a single endpoint, the Kognic-style token endpoint
// POST {URL}/v1/auth/oauth/token, for the client_credentials grant only.
// Clients authenticate with client_secret_post (client_id and client_secret
// form fields) or client_secret_basic (HTTP Basic), or, when registered with
// a JWKS, with private_key_jwt (RFC 7523): the assertion's signature (RS, PS
// or ES, by kid), iss = sub = client_id, aud (the token URL or the issuer
// URL), exp (at most MaxAssertionLifetime after iat), iat and nbf (within
// AssertionSkew) are verified by go-jose, and a jti is accepted once until
// its assertion expires (bounded memory). Access tokens are HS256
// JWTs signed with a random per-server key and carry iss, sub (the client id),
// scope, iat, exp and a unique jti. No refresh tokens are issued.
//
// Errors follow RFC 6749 §5.2: invalid_client is 401, every other client
// error (unsupported_grant_type, invalid_scope, invalid_request, ...) is 400.
//
// The server listens on loopback only, counts token requests for tests, and
// never logs a client secret or an issued token. A *Server is safe for
// concurrent use and must be closed.
package devidp
