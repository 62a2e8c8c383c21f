package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// TestBrokerTokenClientFlags runs `broker token` against the secured
// broker: with no credentials, a wrong identity and the right ones.
func TestBrokerTokenClientFlags(t *testing.T) {
	s := brokertest.StartSecured(t)
	ca := filepath.Join(s.Dir, "broker-ca.pem")
	s.ClientCA.Issue(t, testpki.Options{CommonName: "billing", URIs: []string{brokertest.BillingSPIFFE}}).WriteFiles(t, s.Dir, "billing")
	s.ClientCA.Issue(t, testpki.Options{CommonName: "intruder", URIs: []string{brokertest.IntruderSPIFFE}}).WriteFiles(t, s.Dir, "intruder")
	keyFile := filepath.Join(s.Dir, "ci.key")
	testpki.WriteFile(t, keyFile, []byte(s.APIKey+"\n"))
	wrongKeyFile := filepath.Join(s.Dir, "wrong.key")
	testpki.WriteFile(t, wrongKeyFile, []byte(s.WrongKey+"\n"))

	tokenCmd := func(args ...string) (string, error) {
		var out, errOut strings.Builder
		err := run(t.Context(), append([]string{"token", "--addr", s.Addr, "--timeout", "10s"}, args...), envFunc(), &out, &errOut)
		if strings.Contains(errOut.String(), s.APIKey) || err != nil && strings.Contains(err.Error(), s.APIKey) {
			t.Error("broker token printed the API key")
		}
		return strings.TrimSpace(out.String()), err
	}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string // prefix; "" for success
	}{
		{"no credentials", []string{"--tenant", "acme", "--tls-ca", ca}, "token: Unauthenticated: no credentials"},
		{"plaintext to TLS", []string{"--tenant", "acme"}, "token: Unavailable: "},
		{"wrong identity", []string{"--tenant", "acme", "--tls-ca", ca, "--tls-cert", filepath.Join(s.Dir, "intruder.crt"), "--tls-key", filepath.Join(s.Dir, "intruder.key")},
			"token: PermissionDenied: spiffe_id=" + brokertest.IntruderSPIFFE + " is not a caller in this broker's policy"},
		{"wrong API key", []string{"--tenant", "team-a", "--tls-ca", ca, "--api-key-file", wrongKeyFile}, "token: Unauthenticated: API key not recognised"},
		{"right certificate, other tenant", []string{"--tenant", "team-a", "--tls-ca", ca, "--tls-cert", filepath.Join(s.Dir, "billing.crt"), "--tls-key", filepath.Join(s.Dir, "billing.key")},
			`token: PermissionDenied: caller "billing" may not use tenant "team-a"`},
		{"right certificate", []string{"--tenant", "acme", "--tls-ca", ca, "--tls-cert", filepath.Join(s.Dir, "billing.crt"), "--tls-key", filepath.Join(s.Dir, "billing.key")}, ""},
		{"right API key", []string{"--tenant", "team-a", "--tls-ca", ca, "--tls-server-name", "localhost", "--api-key-file", keyFile}, ""},
		{"cert without key", []string{"--tenant", "acme", "--tls-cert", filepath.Join(s.Dir, "billing.crt")}, "token: --tls-cert and --tls-key go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := tokenCmd(tc.args...)
			if tc.wantErr == "" {
				if err != nil || strings.Count(out, ".") != 2 {
					t.Fatalf("got %q, %v; want a JWT", out, err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want prefix %q", err, tc.wantErr)
			}
		})
	}
}

func TestBrokerTokenAPIKeyNeedsTLSOffLoopback(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "k")
	testpki.WriteFile(t, keyFile, []byte("tbk_secret-key-value\n"))
	err := run(t.Context(), []string{"token", "--addr", "broker.example.com:50051", "--api-key-file", keyFile}, envFunc(), io.Discard, io.Discard)
	want := "token: --api-key-file: broker.example.com:50051 is not a loopback address, and without TLS the key would cross the network in clear text; add --tls-ca (or --tls)"
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
}
