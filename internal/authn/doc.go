// Package authn authenticates the broker's callers: TLS with a certificate
// reloaded when its files change; the identity of a verified client
// certificate (its SPIFFE ID, else first DNS SAN, else subject CN); a Unix
// socket peer's uid and gid (SO_PEERCRED, Linux); and API keys, of which
// only hex SHA-256 digests are configured and which are compared in
// constant time, never stored, logged or put in errors.
//
// Everything here is safe for concurrent use.
package authn
