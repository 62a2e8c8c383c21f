package authn

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// serve starts a gRPC server with creds and a health service that reports
// the caller's identity in the error of an unknown service's Check.
func serve(t *testing.T, creds credentials.TransportCredentials) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(creds), grpc.ChainUnaryInterceptor(
		func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if r, ok := req.(*healthpb.HealthCheckRequest); ok && r.GetService() == "whoami" {
				id, ok, err := certIdentity(PeerOf(ctx))
				return nil, status.Errorf(codes.NotFound, "%v|%v|%v", id, ok, err)
			}
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(s, health.NewServer())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return lis.Addr().String()
}

// certIdentity is the identity of p's verified certificate, if any.
func certIdentity(p Peer) (id Identity, ok bool, err error) {
	if p.Cert == nil {
		return Identity{}, false, nil
	}
	if id, err = FromCertificate(p.Cert); err != nil {
		return Identity{}, false, err
	}
	return id, true, nil
}

// handshakes records the serial of the server certificate seen by each
// handshake of a client.
type handshakes struct {
	mu      sync.Mutex
	serials []string
}

func (h *handshakes) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.serials...)
}

func dial(t *testing.T, addr string, roots *x509.CertPool, client *tls.Certificate) (*grpc.ClientConn, *handshakes) {
	t.Helper()
	hs := &handshakes{}
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			hs.mu.Lock()
			defer hs.mu.Unlock()
			hs.serials = append(hs.serials, cs.PeerCertificates[0].SerialNumber.String())
			return nil
		}}
	if client != nil {
		// Always send it, even when the server asks for another CA.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return client, nil }
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, hs
}

func check(ctx context.Context, cc *grpc.ClientConn) error {
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestReloaderRotatesUnderLiveConnection(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	ca1, ca2 := testpki.NewCA(t, "ca-one"), testpki.NewCA(t, "ca-two")
	srv1, srv2 := ca1.Server(t), ca2.Server(t)
	certFile, keyFile := srv1.WriteFiles(t, dir, "server")

	var logs bytes.Buffer
	r, err := NewReloader(TLSFiles{CertFile: certFile, KeyFile: keyFile}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r.Credentials())

	both := ca1.Pool()
	both.AddCert(ca2.Cert)
	old, oldHS := dial(t, addr, both, nil)
	if err := check(ctx, old); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	if got := oldHS.list(); len(got) != 1 || got[0] != srv1.Cert.SerialNumber.String() {
		t.Fatalf("first connection saw %v, want the first certificate %s", got, srv1.Cert.SerialNumber)
	}

	// Rotate the files; the unchanged check is a no-op.
	if changed, err := r.Reload(); changed || err != nil {
		t.Fatalf("Reload without change = %v, %v", changed, err)
	}
	srv2.WriteFiles(t, dir, "server")
	if changed, err := r.Reload(); !changed || err != nil {
		t.Fatalf("Reload after rotation = %v, %v; want true, nil", changed, err)
	}

	// A new handshake gets the new certificate...
	fresh, freshHS := dial(t, addr, both, nil)
	if err := check(ctx, fresh); err != nil {
		t.Fatalf("new connection after rotation: %v", err)
	}
	if got := freshHS.list(); len(got) != 1 || got[0] != srv2.Cert.SerialNumber.String() {
		t.Fatalf("new connection saw %v, want the rotated certificate %s", got, srv2.Cert.SerialNumber)
	}
	// ...a client trusting only the old CA is refused...
	oldOnly, _ := dial(t, addr, ca1.Pool(), nil)
	if err := check(ctx, oldOnly); status.Code(err) != codes.Unavailable {
		t.Fatalf("client trusting only the old CA: %v, want UNAVAILABLE (handshake failure)", err)
	}
	// ...and the established connection keeps working without a new handshake.
	if err := check(ctx, old); err != nil {
		t.Fatalf("established connection after rotation: %v", err)
	}
	if got := oldHS.list(); len(got) != 1 {
		t.Fatalf("established connection re-handshook: %v", got)
	}
	if !strings.Contains(logs.String(), "TLS certificate loaded") {
		t.Errorf("no reload logged: %s", logs.String())
	}
}

func TestReloaderKeepsCertificateOnBadFiles(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "ca")
	a, b := ca.Server(t), ca.Server(t)
	certFile, keyFile := a.WriteFiles(t, dir, "server")
	r, err := NewReloader(TLSFiles{CertFile: certFile, KeyFile: keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Half a rotation: new certificate, old key.
	testpki.WriteFile(t, certFile, b.CertPEM)
	if changed, err := r.Reload(); changed || err == nil {
		t.Fatalf("Reload of mismatched pair = %v, %v; want an error", changed, err)
	} else if strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Fatalf("error shows key material: %v", err)
	}
	if got := r.Certificate().Leaf.SerialNumber; got.Cmp(a.Cert.SerialNumber) != 0 {
		t.Fatalf("serving %s after a failed reload, want the old %s", got, a.Cert.SerialNumber)
	}
	// The rest of the rotation lands.
	testpki.WriteFile(t, keyFile, b.KeyPEM)
	if changed, err := r.Reload(); !changed || err != nil {
		t.Fatalf("Reload = %v, %v", changed, err)
	}
	if got := r.Certificate().Leaf.SerialNumber; got.Cmp(b.Cert.SerialNumber) != 0 {
		t.Fatalf("serving %s, want the new %s", got, b.Cert.SerialNumber)
	}
}

func TestReloaderWatchPollsOnTick(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "ca")
	a, b := ca.Server(t), ca.Server(t)
	certFile, keyFile := a.WriteFiles(t, dir, "server")
	r, err := NewReloader(TLSFiles{CertFile: certFile, KeyFile: keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	tick := make(chan time.Time)
	done := make(chan struct{})
	go func() { defer close(done); r.watch(ctx, tick) }()
	b.WriteFiles(t, dir, "server")
	tick <- time.Now() // starts the reload
	tick <- time.Now() // accepted only once the first reload is done
	cancel()
	<-done
	if got := r.Certificate().Leaf.SerialNumber; got.Cmp(b.Cert.SerialNumber) != 0 {
		t.Fatalf("Watch did not pick up the new certificate: serving %s", got)
	}
}

func TestMutualTLSIdentities(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	ca, other := testpki.NewCA(t, "clients"), testpki.NewCA(t, "someone-else")
	certFile, keyFile := ca.Server(t).WriteFiles(t, dir, "server")
	caFile := filepath.Join(dir, "clients.pem")
	testpki.WriteFile(t, caFile, ca.CertPEM)
	r, err := NewReloader(TLSFiles{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r.Credentials())

	whoami := func(cc *grpc.ClientConn) string {
		_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "whoami"})
		return status.Convert(err).Message()
	}
	for _, tc := range []struct {
		name string
		opts testpki.Options
		want string
	}{
		{"spiffe", testpki.Options{CommonName: "x", DNSNames: []string{"x.example"}, URIs: []string{"spiffe://prod/ns/billing/sa/api"}},
			"spiffe_id=spiffe://prod/ns/billing/sa/api|true|<nil>"},
		{"dns", testpki.Options{CommonName: "x", DNSNames: []string{"reports.prod.svc"}}, "dns_name=reports.prod.svc|true|<nil>"},
		{"cn", testpki.Options{CommonName: "batch-job"}, "common_name=batch-job|true|<nil>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ca.Issue(t, tc.opts).TLSCertificate(t)
			cc, _ := dial(t, addr, ca.Pool(), &c)
			if got := whoami(cc); got != tc.want {
				t.Fatalf("identity = %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("no client certificate", func(t *testing.T) {
		cc, _ := dial(t, addr, ca.Pool(), nil)
		if got := whoami(cc); got != "none|false|<nil>" {
			t.Fatalf("identity = %q, want none", got)
		}
	})
	t.Run("certificate from another CA is refused", func(t *testing.T) {
		c := other.Issue(t, testpki.Options{CommonName: "intruder"}).TLSCertificate(t)
		cc, _ := dial(t, addr, ca.Pool(), &c)
		// With TLS 1.3 the client learns of the refusal after its side of
		// the handshake, so the error text varies; the code does not.
		_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "whoami"})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("untrusted client certificate: %v, want UNAVAILABLE (connection refused by the server)", err)
		}
	})
	// Rotating the client CA applies to new handshakes.
	testpki.WriteFile(t, caFile, other.CertPEM)
	if _, err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	c := other.Issue(t, testpki.Options{CommonName: "newcomer"}).TLSCertificate(t)
	cc, _ := dial(t, addr, ca.Pool(), &c)
	if got := whoami(cc); got != "common_name=newcomer|true|<nil>" {
		t.Fatalf("after CA rotation identity = %q", got)
	}
}

func TestNewReloaderErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		files TLSFiles
		want  string
	}{
		{"no key", TLSFiles{CertFile: "x"}, "both cert_file and key_file"},
		{"require without ca", TLSFiles{CertFile: "x", KeyFile: "y", RequireClientCert: true}, "client_ca_file"},
		{"missing file", TLSFiles{CertFile: filepath.Join(dir, "nope"), KeyFile: "y"}, "tls.cert_file"},
	} {
		if _, err := NewReloader(tc.files, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// Certificate returns the certificate in use.
func (r *Reloader) Certificate() *tls.Certificate {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert
}
