// Package statuspage serves the broker's read-only status page: one row per
// tenant with its token state, time to expiry, next refresh, last error,
// scope sets and open watches, and the same data as JSON at status.json.
//
// The page is meant for the admin listener. It shows no token, client id,
// client secret or token URL query, only the token endpoint's host; it runs
// no script (it reloads itself with a meta refresh), loads nothing but its
// own embedded stylesheet, and is served with a strict
// Content-Security-Policy. Tenant names, states and identity-provider hosts
// are still operational information: keep the listener on loopback or
// behind access control.
//
// Handler is safe for concurrent use; it calls Source.Tenants once per
// request and never blocks on the network. FromBroker adapts a
// *broker.Broker; the package example serves a static Source.
package statuspage
