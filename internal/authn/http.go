package authn

import (
	"crypto/tls"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// PeerOfConn is PeerOf for a transport other than gRPC (net/http's
// Request.RemoteAddr and Request.TLS): the same address form, loopback
// rule and verified client certificate.
func PeerOfConn(remoteAddr string, cs *tls.ConnectionState) Peer {
	var p Peer
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		ip := ap.Addr().Unmap()
		p.Addr, p.Loopback = netip.AddrPortFrom(ip, ap.Port()).String(), ip.IsLoopback()
	} else {
		p.Addr = remoteAddr
	}
	if cs != nil {
		p.TLS = true
		if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
			p.Cert = cs.VerifiedChains[0][0]
		}
	}
	return p
}

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
