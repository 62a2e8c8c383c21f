package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

func (s *secured) healthClient(creds credentials.TransportCredentials) healthpb.HealthClient {
	s.t.Helper()
	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

// TestHealthDoesNotEnumerateTenants: on a TLS broker with callers, a
// peer without certificate or key (or with a wrong key) sees service ""
// only: Check and Watch of an existing and of a missing tenant give the
// same NOT_FOUND, List shows "". A caller sees its own tenants only.
func TestHealthDoesNotEnumerateTenants(t *testing.T) {
	s := startSecured(t)
	ctx := t.Context()
	// Token calls make the tenants' health known to the broker.
	if _, err := s.get(ctx, s.withCert(billingSPIFFE), "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.get(bearer(ctx, s.apiKey), s.tlsOnly(), "team-a"); err != nil {
		t.Fatal(err)
	}
	tlsCreds := credentials.NewTLS(&tls.Config{RootCAs: s.serverCA.Pool()})
	anon := s.healthClient(tlsCreds)
	for name, cctx := range map[string]context.Context{"no credentials": ctx, "wrong key": bearer(ctx, s.wrongKey)} {
		t.Run(name, func(t *testing.T) {
			if r, err := anon.Check(cctx, &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("Check(\"\") = %v, %v; want SERVING for probes", r, err)
			}
			var answers []string
			for _, svc := range []string{"tenant/acme", "tenant/hidden", "tenant/no-such-tenant"} {
				_, err := anon.Check(cctx, &healthpb.HealthCheckRequest{Service: svc})
				wantStatus(t, "Check "+svc, err, codes.NotFound)
				answers = append(answers, status.Convert(err).Message())
				w, err := anon.Watch(cctx, &healthpb.HealthCheckRequest{Service: svc})
				if err == nil {
					_, err = w.Recv()
				}
				wantStatus(t, "Watch "+svc, err, codes.NotFound)
				answers = append(answers, status.Convert(err).Message())
			}
			if len(slices.Compact(slices.Clone(answers))) != 1 {
				t.Errorf("answers differ between existing and missing tenants: %q", answers)
			}
			l, err := anon.List(cctx, &healthpb.HealthListRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if got := keys(l.GetStatuses()); !slices.Equal(got, []string{""}) {
				t.Errorf("List = %q, want only \"\"", got)
			}
		})
	}
	// billing may use acme only; ci (API key) team-*.
	billingCert := s.clientCA.Issue(t, testpki.Options{CommonName: "client", URIs: []string{billingSPIFFE}}).TLSCertificate(t)
	billing := s.healthClient(credentials.NewTLS(&tls.Config{RootCAs: s.serverCA.Pool(), Certificates: []tls.Certificate{billingCert}}))
	if r, err := billing.Check(ctx, &healthpb.HealthCheckRequest{Service: "tenant/acme"}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("billing: Check(tenant/acme) = %v, %v; want SERVING", r, err)
	}
	_, err := billing.Check(ctx, &healthpb.HealthCheckRequest{Service: "tenant/team-a"})
	wantStatus(t, "billing: Check(tenant/team-a)", err, codes.NotFound)
	for name, tc := range map[string]struct {
		c    healthpb.HealthClient
		ctx  context.Context
		want []string
	}{
		"billing": {billing, ctx, []string{"", "tenant/acme"}},
		"ci":      {anon, bearer(ctx, s.apiKey), []string{"", "tenant/team-a"}},
	} {
		l, err := tc.c.List(tc.ctx, &healthpb.HealthListRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := keys(l.GetStatuses()); !slices.Equal(got, tc.want) {
			t.Errorf("%s: List = %q, want %q", name, got, tc.want)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestServeRefusesPlaintextCallersOffLoopback: with callers and no tls
// section, a listener on a non-loopback address (and "localhost." is not
// loopback) needs insecure_plaintext: true.
func TestServeRefusesPlaintextCallersOffLoopback(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", "localhost.:0", "[::]:0"} {
		t.Run(listen, func(t *testing.T) {
			dir := t.TempDir()
			testpki.WriteFile(t, filepath.Join(dir, "s"), []byte("FAKE-secret-value"))
			cfg := filepath.Join(dir, "c.yaml")
			testpki.WriteFile(t, cfg, fmt.Appendf(nil, `listen: %q
tenants:
  - name: acme
    token_url: http://127.0.0.1:1/token
    client_id: id
    client_secret_file: s
callers:
  - name: ci
    api_key_sha256: %s
    tenants: [acme]
`, listen, strings.Repeat("a", 64)))
			err := run(t.Context(), []string{"serve", "--config", cfg}, envFunc(), &logtest.Buffer{}, &logtest.Buffer{})
			if err == nil || !strings.Contains(err.Error(), "insecure_plaintext: true") || !strings.Contains(err.Error(), "plaintext listener on a non-loopback address") {
				t.Fatalf("serve = %v, want a refusal naming insecure_plaintext", err)
			}
		})
	}
}
