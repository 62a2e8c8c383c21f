package broker_test

import (
	"crypto/x509"
	"io"
	"log"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// tlsIdP is the development identity provider behind an https endpoint
// whose certificate only the returned pool trusts.
func tlsIdP(t *testing.T) (tokenURL string, cert *x509.Certificate, client devidp.Client) {
	t.Helper()
	client = devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	u, err := url.Parse(idp.URL())
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(u))
	front.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted client's failed handshakes
	front.StartTLS()
	t.Cleanup(front.Close)
	return front.URL + devidp.TokenPath, front.Certificate(), client
}

func poolOf(cert *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(cert)
	return p
}

// TestTenantRootCAs: a tenant's RootCAs reach the upstream HTTP client;
// without them the private CA is not trusted (verification stays on); a
// reload with an equal pool keeps the tenant's token.
func TestTenantRootCAs(t *testing.T) {
	tokenURL, cert, client := tlsIdP(t)
	roots := poolOf(cert)
	tenant := func(name string, roots *x509.CertPool) broker.Tenant {
		return broker.Tenant{
			Name: name, TokenURL: tokenURL, ClientID: client.ID, ClientSecret: creds.Secret(client.Secret),
			AuthStyle: oauth2.AuthStyleInHeader, RootCAs: roots,
		}
	}
	b, err := broker.New(broker.Config{Tenants: []broker.Tenant{tenant("private", roots), tenant("untrusted", nil)}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	tok, err := b.Token(t.Context(), "private", nil, 0)
	if err != nil {
		t.Fatalf("tenant with RootCAs: %v", err)
	}
	if _, err := b.Token(t.Context(), "untrusted", nil, 0); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("tenant without RootCAs: err = %v, want a certificate verification error", err)
	}

	same := poolOf(cert) // equal, not identical
	if err := b.SetTenants([]broker.Tenant{tenant("private", same), tenant("untrusted", nil)}); err != nil {
		t.Fatal(err)
	}
	again, err := b.Token(t.Context(), "private", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if again.Version != tok.Version || again.AccessToken != tok.AccessToken {
		t.Errorf("an equal RootCAs pool reconfigured the tenant: version %d → %d", tok.Version, again.Version)
	}
}
