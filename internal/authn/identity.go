package authn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Kind is the kind of a caller identity.
type Kind int

// Identity kinds: a certificate's, in the order it is searched for
// them, an API key, and a Unix socket peer's uid or gid (UnixPeer).
const (
	KindNone Kind = iota
	KindSPIFFE
	KindDNS
	KindCommonName
	KindAPIKey
	KindUnixUID
	KindUnixGID
)

var kindNames = [...]string{"none", "spiffe_id", "dns_name", "common_name", "api_key", "unix_uid", "unix_gid"}

// String returns the config key that names an identity of this kind.
func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return "none"
	}
	return kindNames[k]
}

// Identity is who a caller proved to be.
type Identity struct {
	Kind Kind
	// Value is the SPIFFE ID, the DNS name (lower-case), the common name
	// or the decimal uid or gid. It is empty for KindAPIKey: a key is
	// never an identity's text.
	Value string
}

// String returns e.g. "spiffe_id=spiffe://prod/ns/billing/sa/api" or
// "unix_uid=1000", or "api_key" for an API key.
func (id Identity) String() string {
	if id.Kind == KindAPIKey || id.Kind == KindNone {
		return id.Kind.String()
	}
	return id.Kind.String() + "=" + id.Value
}

// ErrNoIdentity is wrapped by FromCertificate when a certificate names
// nothing usable.
var ErrNoIdentity = errors.New("certificate carries no identity")

// FromCertificate returns the identity a verified certificate proves: its
// SPIFFE ID (then it must be an X.509-SVID: exactly one URI SAN, a valid
// SPIFFE ID), else its first DNS SAN, else its subject common name.
func FromCertificate(cert *x509.Certificate) (Identity, error) {
	// crypto/x509 parses URI SANs with net/url, which lower-cases the
	// scheme: "SPIFFE://…" would reach go-spiffe as "spiffe://…". The
	// SPIFFE ID must be read from the certificate's own bytes.
	raw, signed, err := rawURISANs(cert)
	if err != nil {
		return Identity{}, fmt.Errorf("authn: certificate subject alternative names: %w", err)
	}
	hasSPIFFE := false
	for _, u := range raw {
		if len(u) >= len("spiffe:") && strings.EqualFold(u[:len("spiffe:")], "spiffe:") {
			if !strings.HasPrefix(u, "spiffe://") {
				return Identity{}, fmt.Errorf("authn: certificate URI SAN: %w: the scheme must be exactly \"spiffe://\" (lower case)", ErrInvalidSPIFFEID)
			}
			hasSPIFFE = true
		}
	}
	for _, u := range cert.URIs {
		if strings.EqualFold(u.Scheme, "spiffe") {
			hasSPIFFE = true
		}
	}
	switch {
	case hasSPIFFE:
		// An X.509-SVID has exactly one URI SAN, its SPIFFE ID; go-spiffe
		// enforces that and the ID's syntax.
		id, err := x509svid.IDFromCert(cert)
		if err != nil {
			return Identity{}, fmt.Errorf("authn: certificate URI SAN: %w: %v", ErrInvalidSPIFFEID, err)
		}
		if len(id.String()) > maxSPIFFEIDBytes {
			return Identity{}, fmt.Errorf("authn: certificate URI SAN: %w: longer than %d bytes", ErrInvalidSPIFFEID, maxSPIFFEIDBytes)
		}
		if signed && (len(raw) != 1 || raw[0] != id.String()) {
			// What go-spiffe read must be, byte for byte, what was signed.
			return Identity{}, fmt.Errorf("authn: certificate URI SAN: %w: not in canonical form", ErrInvalidSPIFFEID)
		}
		return Identity{Kind: KindSPIFFE, Value: id.String()}, nil
	case len(cert.DNSNames) > 0:
		return Identity{Kind: KindDNS, Value: strings.ToLower(cert.DNSNames[0])}, nil
	case cert.Subject.CommonName != "":
		return Identity{Kind: KindCommonName, Value: cert.Subject.CommonName}, nil
	}
	return Identity{}, fmt.Errorf("authn: %w: no SPIFFE ID, DNS name or subject common name", ErrNoIdentity)
}

// oidSubjectAltName is the SubjectAltName extension (RFC 5280 §4.2.1.6).
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// rawURISANs returns the certificate's URI SANs exactly as signed, from
// its SubjectAltName extension; signed reports that it has one (a
// certificate built in memory, not parsed, has none).
func rawURISANs(cert *x509.Certificate) (out []string, signed bool, err error) {
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		signed = true
		var names []asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &names)
		if err != nil || len(rest) > 0 {
			return nil, true, errors.New("malformed SubjectAltName extension")
		}
		for _, n := range names {
			if n.Class == asn1.ClassContextSpecific && n.Tag == 6 { // uniformResourceIdentifier
				out = append(out, string(n.Bytes))
			}
		}
	}
	return out, signed, nil
}

// Peer is the other end of a call, as its transport saw it: what the
// broker authenticates a caller from, besides an API key.
type Peer struct {
	Addr string // host:port, "" if unknown; UnixPeer.String on a Unix socket
	// Loopback reports a local peer: a loopback IP address or a Unix
	// socket. A peer behind a local proxy looks like loopback too; modes
	// that trust loopback must only be used without one.
	Loopback bool
	TLS      bool
	// Cert is the leaf of the client certificate chain the TLS handshake
	// verified against the client CA; nil without one.
	Cert *x509.Certificate
	// Unix is what the kernel says of a peer on a Unix socket; nil on TCP.
	Unix *UnixPeer
}

// PeerOf returns the gRPC peer of ctx.
func PeerOf(ctx context.Context) Peer {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return Peer{}
	}
	var cs *tls.ConnectionState
	if ti, ok := pr.AuthInfo.(credentials.TLSInfo); ok {
		cs = &ti.State
	}
	switch a := pr.Addr.(type) {
	case *net.TCPAddr:
		return peerAt(a.AddrPort(), cs)
	case *UnixPeer:
		return withTLS(Peer{Addr: a.String(), Loopback: true, Unix: a}, cs)
	case nil:
		return withTLS(Peer{}, cs)
	}
	return PeerOfConn(pr.Addr.String(), cs)
}

// PeerOfConn is PeerOf for a transport other than gRPC (net/http's
// Request.RemoteAddr and Request.TLS).
func PeerOfConn(remoteAddr string, cs *tls.ConnectionState) Peer {
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		return peerAt(ap, cs)
	}
	return withTLS(Peer{Addr: remoteAddr}, cs)
}

// peerAt is the peer at ap, an IPv4-mapped address written as IPv4.
func peerAt(ap netip.AddrPort, cs *tls.ConnectionState) Peer {
	ip := ap.Addr().Unmap()
	return withTLS(Peer{Addr: netip.AddrPortFrom(ip, ap.Port()).String(), Loopback: ip.IsLoopback()}, cs)
}

// withTLS adds to p what its TLS handshake verified.
func withTLS(p Peer, cs *tls.ConnectionState) Peer {
	if cs != nil {
		p.TLS = true
		if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
			p.Cert = cs.VerifiedChains[0][0]
		}
	}
	return p
}
