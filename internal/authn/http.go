package authn

import (
	"net"
	"net/netip"
	"slices"
	"strings"
)

// KnownHost reports whether an HTTP request's Host is one a web page
// cannot rebind its own name to: an IP literal, localhost, one of names
// (lower case), or none (no browser omits it).
func KnownHost(host string, names []string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	_, ipErr := netip.ParseAddr(host)
	return host == "" || ipErr == nil || strings.EqualFold(host, "localhost") || slices.Contains(names, strings.ToLower(host))
}
