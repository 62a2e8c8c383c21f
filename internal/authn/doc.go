// Package authn authenticates the broker's callers: it serves TLS with a
// certificate that is reloaded when its files change, derives a caller's
// identity from a verified client certificate, and checks API keys
// presented as "authorization: Bearer <key>" against configured SHA-256
// digests.
//
// Identity from a certificate is, in this order: the SPIFFE ID (a URI SAN
// with scheme spiffe), else the first DNS SAN, else the subject common
// name. Only certificates verified against the configured client CA count.
// On a Unix socket (NewUnixListener) the kernel names the peer: its uid
// and primary gid (SO_PEERCRED, Linux), identities unix_uid and unix_gid.
//
// API keys are never stored, logged or put in errors: the configuration
// holds only their hex SHA-256, and a presented key is hashed and compared
// in constant time against every configured digest.
//
// Everything here is safe for concurrent use.
package authn
