package authn_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// Issue 7 red team §5: crypto/x509 lower-cases a URI SAN's scheme, so a
// certificate whose SAN is "SPIFFE://prod/ns/a" was accepted as
// spiffe://prod/ns/a. The signed bytes decide now.
func TestUpperCaseSPIFFESchemeInCertificateRejected(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	for _, tc := range []struct {
		uri   string
		valid bool
	}{
		{"spiffe://prod/ns/a", true},
		{"SPIFFE://prod/ns/a", false},
		{"Spiffe://prod/ns/a", false},
		{"spiffe:prod/ns/a", false},
	} {
		leaf := ca.Issue(t, testpki.Options{CommonName: "cn", URIs: []string{tc.uri}})
		if got := leaf.Cert.URIs[0].String(); tc.uri == "SPIFFE://prod/ns/a" && got != "spiffe://prod/ns/a" {
			t.Logf("note: crypto/x509 now reads %q as %q", tc.uri, got)
		}
		id, err := authn.FromCertificate(leaf.Cert)
		if tc.valid {
			if err != nil || id.Value != tc.uri {
				t.Errorf("%s: got %v, %v; want the SPIFFE ID", tc.uri, id, err)
			}
			continue
		}
		if !errors.Is(err, authn.ErrInvalidSPIFFEID) {
			t.Errorf("%s: got %v, %v; want ErrInvalidSPIFFEID", tc.uri, id, err)
		}
	}
}

// The same through the whole daemon over mutual TLS on loopback: a
// client certificate for SPIFFE://prod/ns/billing/sa/api gets no token of
// the tenant that spiffe://prod/ns/billing/sa/api may use.
func TestUpperCaseSPIFFECertificateGetsNoToken(t *testing.T) {
	s := brokertest.StartSecured(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := s.Get(ctx, s.API(s.WithCert(brokertest.BillingSPIFFE)), "acme"); err != nil {
		t.Fatalf("the genuine caller: %v", err)
	}
	upper := "SPIFFE://" + brokertest.BillingSPIFFE[len("spiffe://"):]
	_, err := s.Get(ctx, s.API(s.WithCert(upper)), "acme")
	brokertest.WantStatus(t, "GetToken with "+upper, err, codes.Unauthenticated)
}
