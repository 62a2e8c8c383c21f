// Package devidp is an embedded OAuth2 identity provider for development and
// tests only; it must never issue credentials for production.
//
// Built on github.com/go-oauth2/oauth2/v4, it serves the Kognic-style token
// endpoint POST {URL}/v1/auth/oauth/token for the client_credentials grant.
// Clients authenticate with client_secret_post, client_secret_basic, or,
// when registered with a JWKS, private_key_jwt (RFC 7523, verified by
// go-jose; each jti accepted once). Access tokens are HS256 JWTs with iss,
// sub (the client id), scope, iat, exp and jti; errors follow RFC 6749 §5.2.
//
// It listens on loopback only, counts token requests for tests, and never
// logs a secret or token. A *Server is safe for concurrent use and must be
// closed.
package devidp
