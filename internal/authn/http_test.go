package authn

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

func TestPeerOfConn(t *testing.T) {
	leaf := &x509.Certificate{}
	for _, tc := range []struct {
		remote string
		cs     *tls.ConnectionState
		want   Peer
	}{
		{"127.0.0.1:5000", nil, Peer{Addr: "127.0.0.1:5000", Loopback: true}},
		{"[::1]:5000", &tls.ConnectionState{}, Peer{Addr: "[::1]:5000", Loopback: true, TLS: true}},
		{"[::ffff:127.0.0.1]:5000", nil, Peer{Addr: "127.0.0.1:5000", Loopback: true}},
		{"192.0.2.7:443", &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}, Peer{Addr: "192.0.2.7:443", TLS: true, Cert: leaf}},
		// An unverified certificate (no chain) proves nothing.
		{"192.0.2.7:443", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}, Peer{Addr: "192.0.2.7:443", TLS: true}},
		{"pipe", nil, Peer{Addr: "pipe"}},
	} {
		if got := PeerOfConn(tc.remote, tc.cs); got != tc.want {
			t.Errorf("PeerOfConn(%q): %+v, want %+v", tc.remote, got, tc.want)
		}
	}
}
