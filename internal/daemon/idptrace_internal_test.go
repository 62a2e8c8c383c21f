package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// TestIdPSpansCarryNoTransportText: otelhttp puts a failed request's
// err.Error() in the span status. Through the daemon's IdP client that
// error is already upstream's fixed description, so an IdP whose header
// line quotes the secret, or whose certificate names hold it, gets none
// of it (nor any 12-character run of it) into a span.
func TestIdPSpansCarryNoTransportText(t *testing.T) {
	const tlsSecret = "qz9kp-wxyvb7lm-r4wtq8zk3n" // DNS-name safe, for the certificate
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(t.Context())
	u := newUpstreams(nil, "tokenbroker-test", slog.New(slog.DiscardHandler), httpTracing(tp))

	fetch := func(t *testing.T, tokenURL, secret string, roots *x509.CertPool) {
		t.Helper()
		hc, err := u.pools.Client(tokenURL, roots)
		if err != nil {
			t.Fatal(err)
		}
		c, err := upstream.New(upstream.Config{TokenURL: tokenURL, ClientID: "cid", ClientSecret: creds.Secret(secret), HTTPClient: hc})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Fetch(t.Context(), nil); err == nil {
			t.Fatal("Fetch succeeded against a faulty IdP")
		} else if strings.Contains(err.Error(), secret) {
			t.Fatalf("error quotes the secret: %v", err)
		}
	}

	// A header line without a colon that quotes the secret.
	idp := faultidp.Start()
	defer idp.Close()
	idp.Push(faultidp.MalformedEcho())
	fetch(t, idp.TokenURL(), faultidp.RedTeamSecret, nil)

	// A certificate from a trusted CA whose names hold the secret but not
	// the host dialled (127.0.0.1): x509's error lists those names.
	ca := testpki.NewCA(t, "fault CA")
	leaf := ca.Issue(t, testpki.Options{CommonName: tlsSecret, DNSNames: []string{tlsSecret + ".example", "a." + tlsSecret}, Server: true})
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLSCertificate(t)}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	fetch(t, srv.URL+"/token", tlsSecret, ca.Pool())

	var b strings.Builder
	write := func(kvs []attribute.KeyValue) {
		for _, kv := range kvs {
			fmt.Fprintf(&b, "%s=%s\n", kv.Key, kv.Value.String())
		}
	}
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("recorded %d spans, want 2", len(spans))
	}
	for _, sp := range spans {
		if sp.Status().Description == "" {
			t.Errorf("span %s has no error status", sp.Name())
		}
		fmt.Fprintf(&b, "span %s %s %s\n", sp.Name(), sp.Status().Code, sp.Status().Description)
		write(sp.Attributes())
		for _, e := range sp.Events() {
			b.WriteString(e.Name + "\n")
			write(e.Attributes)
		}
	}
	dump := strings.ToLower(b.String())
	for _, s := range []string{faultidp.RedTeamSecret, tlsSecret} {
		low := strings.ToLower(s)
		for i := 0; i+12 <= len(low); i++ {
			if strings.Contains(dump, low[i:i+12]) {
				t.Fatalf("spans hold %q, a run of the secret:\n%s", low[i:i+12], b.String())
			}
		}
	}
	for _, want := range []string{"malformed http response", "tls: certificate is not valid for the token url's host"} {
		if !strings.Contains(dump, want) {
			t.Errorf("spans lack the mapped status %q:\n%s", want, b.String())
		}
	}
	t.Logf("spans:\n%s", b.String())
}
