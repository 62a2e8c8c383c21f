package authn

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/peer"
)

func certWith(cn string, dns []string, uris ...string) *x509.Certificate {
	c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, DNSNames: dns}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			panic(err)
		}
		c.URIs = append(c.URIs, u)
	}
	return c
}

func TestFromCertificate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cert    *x509.Certificate
		want    Identity
		wantErr string
	}{
		{"spiffe wins over dns and cn", certWith("cn", []string{"api.billing.svc"}, "spiffe://prod/ns/billing/sa/api"),
			Identity{KindSPIFFE, "spiffe://prod/ns/billing/sa/api"}, ""},
		{"non-spiffe uri ignored", certWith("", []string{"Api.Billing.svc"}, "https://example.com/x"),
			Identity{KindDNS, "api.billing.svc"}, ""},
		{"first dns wins over cn", certWith("cn", []string{"a.example", "b.example"}),
			Identity{KindDNS, "a.example"}, ""},
		{"cn only", certWith("billing-batch", nil), Identity{KindCommonName, "billing-batch"}, ""},
		{"nothing", certWith("", nil), Identity{}, "no SPIFFE ID, DNS name or subject common name"},
		{"two spiffe ids", certWith("", nil, "spiffe://a/x", "spiffe://a/y"), Identity{}, "more than one URI SAN"},
		// An X.509-SVID has exactly one URI SAN (go-spiffe x509svid).
		{"spiffe id beside another uri", certWith("cn", nil, "spiffe://a/x", "https://example.com/"), Identity{}, "more than one URI SAN"},
		{"percent-encoded path", certWith("cn", nil, "spiffe://prod/a%2Fb"), Identity{}, "invalid SPIFFE ID"},
		{"port in trust domain", certWith("cn", nil, "spiffe://prod:443/x"), Identity{}, "invalid SPIFFE ID"},
		{"invalid spiffe id", certWith("cn", nil, "spiffe://Prod/x"), Identity{}, "trust domain"},
		{"trailing slash", certWith("cn", nil, "spiffe://prod/x/"), Identity{}, "invalid SPIFFE ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromCertificate(tc.cert)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if _, err := FromCertificate(certWith("", nil)); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("err = %v, want ErrNoIdentity", err)
	}
}

func TestValidSPIFFEID(t *testing.T) {
	for id, ok := range map[string]bool{
		"spiffe://prod/ns/billing/sa/api":            true,
		"spiffe://example.org":                       true,
		"spiffe://td_1.example-x/A.b_c-1":            true,
		"SPIFFE://prod/x":                            false,
		"spiffe://":                                  false,
		"spiffe:///x":                                false,
		"spiffe://Prod/x":                            false,
		"spiffe://prod:443/x":                        false,
		"spiffe://user@prod/x":                       false,
		"spiffe://prod/x/":                           false,
		"spiffe://prod//x":                           false,
		"spiffe://prod/./x":                          false,
		"spiffe://prod/../x":                         false,
		"spiffe://prod/x?y=1":                        false,
		"spiffe://prod/x#f":                          false,
		"spiffe://prod/%41":                          false,
		"https://prod/x":                             false,
		"spiffe://prod/" + strings.Repeat("a", 2048): false,
	} {
		err := ValidSPIFFEID(id)
		if (err == nil) != ok {
			t.Errorf("ValidSPIFFEID(%q) = %v, want ok=%v", id, err, ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidSPIFFEID) {
			t.Errorf("ValidSPIFFEID(%q) = %v, does not wrap ErrInvalidSPIFFEID", id, err)
		}
	}
}

func TestIdentityString(t *testing.T) {
	for id, want := range map[Identity]string{
		{KindSPIFFE, "spiffe://a/b"}: "spiffe_id=spiffe://a/b",
		{KindDNS, "a.example"}:       "dns_name=a.example",
		{KindCommonName, "x"}:        "common_name=x",
		{Kind: KindAPIKey}:           "api_key",
		{}:                           "none",
	} {
		if got := id.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", id, got, want)
		}
	}
}

// TestPeerOfAddr: PeerOf's address is the peer's net.Addr.String() (IPv4
// written as such also when the transport hands a mapped IPv6 address),
// and Loopback is true for loopback IPs only.
func TestPeerOfAddr(t *testing.T) {
	for _, tc := range []struct {
		addr     net.Addr
		want     string
		loopback bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}, "127.0.0.1:4242", true},
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.2").To4(), Port: 1}, "127.0.0.2:1", true},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 443}, "192.0.2.7:443", false},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 9}, "[::1]:9", true},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 9, Zone: "eth0"}, "[fe80::1%eth0]:9", false},
		{&net.UnixAddr{Name: "/run/broker.sock", Net: "unix"}, "/run/broker.sock", false},
	} {
		p := PeerOf(peer.NewContext(context.Background(), &peer.Peer{Addr: tc.addr}))
		if p.Addr != tc.want || p.Addr != tc.addr.String() || p.Loopback != tc.loopback {
			t.Errorf("PeerOf(%v) = %q loopback %v; want %q loopback %v", tc.addr, p.Addr, p.Loopback, tc.want, tc.loopback)
		}
	}
}
