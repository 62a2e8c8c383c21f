package clientlib

import (
	"net/netip"
	"strings"
)

// isLoopback is the package's one loopback rule, for the hosts to which
// tokens (or, in direct mode, the client secret) may go without TLS: host,
// without port or brackets, is a loopback IP literal or the name localhost
// (letter case aside, as in DNS). No other name counts, neither
// "localhost." nor "x.localhost", and nothing is resolved, so that the
// answer never depends on a resolver.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
