// Package policy decides which caller may get which tenant's tokens.
//
// A Policy is an immutable list of callers, each identified by exactly one
// of a SPIFFE ID, a DNS name, a certificate common name, the SHA-256 of an
// API key, or a Unix socket peer's uid or gid, and allowed a set of tenant
// globs and, optionally, a set of scope globs. Everything not allowed is
// denied.
//
// Globs are like path.Match without character classes: '*' matches any
// run of characters ('/' and ':' included), '?' any single character, and
// every other character itself. A pattern must match the whole name.
//
// A Holder carries the current Policy across reloads: Load is lock-free,
// Store swaps atomically and runs the OnStore observers before it
// returns, so that open streams are re-checked at once.
//
// Policies and Holders are safe for concurrent use.
package policy
