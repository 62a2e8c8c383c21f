package authn

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Kind is the kind of a caller identity.
type Kind int

// Identity kinds, in the order a certificate is searched for them.
const (
	KindNone Kind = iota
	KindSPIFFE
	KindDNS
	KindCommonName
	KindAPIKey
)

// String returns the config key that names an identity of this kind.
func (k Kind) String() string {
	switch k {
	case KindSPIFFE:
		return "spiffe_id"
	case KindDNS:
		return "dns_name"
	case KindCommonName:
		return "common_name"
	case KindAPIKey:
		return "api_key"
	}
	return "none"
}

// Identity is who a caller proved to be.
type Identity struct {
	Kind Kind
	// Value is the SPIFFE ID, the DNS name (lower-case) or the common
	// name. It is empty for KindAPIKey: a key is never an identity's text.
	Value string
}

// String returns e.g. "spiffe_id=spiffe://prod/ns/billing/sa/api", or
// "api_key" for an API key.
func (id Identity) String() string {
	if id.Kind == KindAPIKey || id.Kind == KindNone {
		return id.Kind.String()
	}
	return id.Kind.String() + "=" + id.Value
}

// ErrNoIdentity is wrapped by FromCertificate when a certificate names
// nothing usable.
var ErrNoIdentity = errors.New("certificate carries no identity")

// FromCertificate returns the identity a verified certificate proves:
// its SPIFFE ID, else its first DNS SAN, else its subject common name.
// A certificate with a spiffe URI SAN must be an X.509-SVID, parsed by
// go-spiffe's x509svid.IDFromCert: exactly one URI SAN, a valid SPIFFE ID;
// anything else is an error, as is a certificate with none of the three.
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

// PeerCertIdentity returns the identity of the gRPC peer in ctx from its
// verified client certificate. ok is false when the connection is not TLS
// or the client presented no certificate; err is set when it presented a
// verified certificate without a usable identity.
func PeerCertIdentity(ctx context.Context) (id Identity, ok bool, err error) {
	p, found := peer.FromContext(ctx)
	if !found {
		return Identity{}, false, nil
	}
	info, isTLS := p.AuthInfo.(credentials.TLSInfo)
	if !isTLS || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Identity{}, false, nil
	}
	id, err = FromCertificate(info.State.VerifiedChains[0][0])
	if err != nil {
		return Identity{}, false, err
	}
	return id, true, nil
}

// PeerIsTLS reports whether the gRPC peer in ctx is connected over TLS.
func PeerIsTLS(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	_, isTLS := p.AuthInfo.(credentials.TLSInfo)
	return isTLS
}

// PeerIsLoopback reports whether the gRPC peer in ctx connects from a
// loopback IP address. A peer behind a local proxy looks like loopback
// too; modes that trust loopback must only be used without one.
func PeerIsLoopback(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return false
	}
	if a, ok := p.Addr.(*net.TCPAddr); ok {
		return a.IP.IsLoopback()
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// PeerAddr returns the gRPC peer's address, or "" if unknown.
func PeerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
