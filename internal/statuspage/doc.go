// Package statuspage serves the broker's read-only status page: one row per
// tenant with its token state, time to expiry, next refresh, last error,
// scope sets and open watches, and the same data as JSON at status.json.
//
// It shows no token, client id, client secret or token URL query, runs no
// script, loads only its embedded stylesheet, and sends a strict
// Content-Security-Policy. Tenant names, states and IdP hosts are still
// operational information: serve it on the admin listener, on loopback or
// behind access control. Handler is safe for concurrent use and never
// blocks on the network.
package statuspage
