package upstream

import (
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

func TestPoolsShareByHostAndCAs(t *testing.T) {
	p := NewPools(PoolsConfig{})
	a, err := p.Client("http://127.0.0.1:1/token", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := p.Client("http://127.0.0.1:1/other", nil)
	if a != b {
		t.Error("two token URLs on one host got different pools; want one shared connection pool")
	}
	c, _ := p.Client("http://127.0.0.1:2/token", nil)
	if a == c {
		t.Error("two hosts share a pool")
	}
	roots1, roots2 := x509.NewCertPool(), x509.NewCertPool() // equal contents, as two reads of one ca_file
	d, _ := p.Client("http://127.0.0.1:1/token", roots1)
	e, _ := p.Client("http://127.0.0.1:1/token", roots2)
	if d == a {
		t.Error("custom CAs share the system-roots pool")
	}
	if d != e {
		t.Error("equal CA sets got different pools; tenants with the same ca_file must share one")
	}
	if _, err := NewPools(PoolsConfig{HTTPClient: &http.Client{Transport: roundTripFunc(nil)}}).Client("https://127.0.0.1:1/", roots1); err == nil {
		t.Error("custom CAs over a non-*http.Transport: want an error")
	}
}

// TestPoolsWrapSeesMappedErrors: a wrapping layer (tracing) sits over
// MapTransportErrors, so it never sees transport text.
func TestPoolsWrapSeesMappedErrors(t *testing.T) {
	var seen []error
	var mu sync.Mutex
	p := NewPools(PoolsConfig{Wrap: func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			mu.Lock()
			seen = append(seen, err)
			mu.Unlock()
			return resp, err
		})
	}})
	hc, err := p.Client("http://127.0.0.1:1/token", nil) // nothing listens on port 1
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{TokenURL: "http://127.0.0.1:1/token", ClientID: "cid", ClientSecret: creds.Secret("s3cr3t-value"), HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(t.Context(), nil); err == nil {
		t.Fatal("Fetch from a closed port succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 {
		t.Fatalf("wrap saw %d requests, want 1", len(seen))
	}
	if _, ok := seen[0].(*TransportError); !ok {
		t.Errorf("wrap saw %T (%v), want the mapped *TransportError", seen[0], seen[0])
	}
}

// TestPoolClientsShareOneCopy: the Clients of one pool share one copy of
// its http.Client (per user agent), so that thousands of tenants do not
// each hold one, and that copy still refuses redirects.
func TestPoolClientsShareOneCopy(t *testing.T) {
	p := NewPools(PoolsConfig{})
	hc, err := p.Client("http://127.0.0.1:1/token", nil)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(id, ua string) *Client {
		c, err := New(Config{TokenURL: "http://127.0.0.1:1/token", ClientID: id, ClientSecret: creds.Secret("s"), HTTPClient: hc, UserAgent: ua})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b, other := mk("a", "tb/1"), mk("b", "tb/1"), mk("c", "tb/2")
	if a.http != b.http {
		t.Error("two clients of one pool hold separate http.Client copies")
	}
	if a.http == other.http {
		t.Error("clients with different user agents share a copy")
	}
	if a.http == hc || a.http.CheckRedirect == nil {
		t.Error("the shared copy is the pool's own client or follows redirects")
	}
}

// TestPoolsShareByCAFile: tenants that name the same ca_file each read it
// into a CertPool of their own (RootCAs, as the config parser does), yet
// share one pool; another CA's file gets another.
func TestPoolsShareByCAFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, ca *testpki.CA) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, ca.CertPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	same, other := write("a.pem", testpki.NewCA(t, "idp-ca")), write("b.pem", testpki.NewCA(t, "other-ca"))
	p := NewPools(PoolsConfig{})
	client := func(file string) *http.Client {
		roots, err := RootCAs(file)
		if err != nil {
			t.Fatal(err)
		}
		c, err := p.Client("https://127.0.0.1:8443/token", roots)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b, c := client(same), client(same), client(other)
	if a != b {
		t.Error("two tenants with the same ca_file got different connection pools")
	}
	if a == c {
		t.Error("tenants with different ca_files share a connection pool")
	}
}
