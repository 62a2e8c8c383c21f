package upstream

import (
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

func TestCheckURL(t *testing.T) {
	for _, tc := range []struct {
		url      string
		rules    URLRules
		want     string // "" for accepted
		insecure bool   // wraps ErrInsecureURL
	}{
		{"https://auth.app.kognic.com/v1/auth/oauth/token", URLRules{}, "", false},
		{"https://idp.example.com:8443/token?audience=x", URLRules{}, "", false},
		{"http://127.0.0.1:8080/token", URLRules{}, "", false},
		{"http://127.8.9.10/token", URLRules{}, "", false},
		{"http://[::1]:9000/token", URLRules{}, "", false},
		{"http://localhost:9000/token", URLRules{}, "", false},
		{"http://LocalHost:9000/token", URLRules{}, "clear text", true}, // only the exact lower-case name
		{"http://idp.internal/token", URLRules{AllowInsecureHTTP: true}, "", false},
		{"http://idp.internal/token", URLRules{}, "allow_insecure_http", true},
		{"http://10.0.0.1/token", URLRules{}, "clear text", true},
		{"http://localhost./token", URLRules{}, "clear text", true},
		{"http://x.localhost/token", URLRules{}, "clear text", true},
		{"http://localhost.evil.com/token", URLRules{}, "clear text", true},
		{"http://127.0.0.1.nip.io/token", URLRules{}, "clear text", true},
		{"ftp://idp.example.com/token", URLRules{AllowInsecureHTTP: true}, "not an absolute http(s) URL", false},
		{"https://user:hunter2@idp.example.com/token", URLRules{}, "user or password", false},
		{"/v1/auth/oauth/token", URLRules{}, "not an absolute", false},
		{"https:///token", URLRules{}, "not an absolute", false},
		{"://bad", URLRules{}, "not a valid URL", false},
		{"https://idp.example.com/token#x", URLRules{}, "query or fragment", false},
		{"https://auth.example?x=1", URLRules{Base: true}, "query or fragment", false},
	} {
		err := CheckURL(tc.url, tc.rules)
		if tc.want == "" {
			if err != nil {
				t.Errorf("CheckURL(%q, %+v) = %v, want nil", tc.url, tc.rules, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, ErrInsecureURL) != tc.insecure {
			t.Errorf("CheckURL(%q, %+v) = %v, want %q (insecure %v)", tc.url, tc.rules, err, tc.want, tc.insecure)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "127.0.0.1": true, "127.1.2.3": true, "::1": true,
		"0:0:0:0:0:0:0:1": true, "::ffff:127.0.0.1": true,
		// Issue 7 red team: only the exact lower-case name, never resolved.
		"LOCALHOST": false, "LocalHost": false, "localhost.": false, "LOCALHOST.": false,
		"x.localhost": false, "localhost.example.com": false, " localhost": false, "localhost\x00": false,
		"[::1]": false, "127.0.0.1:80": false, "10.0.0.1": false, "": false, "::": false,
		"0.0.0.0": false, "example.com": false, "127.0.0.1.nip.io": false,
	} {
		if got := IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestRootCAs(t *testing.T) {
	if p, err := RootCAs(""); p != nil || err != nil {
		t.Errorf("RootCAs(\"\") = %v, %v; want nil, nil (system roots)", p, err)
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := RootCAs(bad); err == nil || !strings.Contains(err.Error(), "no PEM certificates") {
		t.Errorf("RootCAs(bad) = %v", err)
	}
}

func TestRootCAsTrustsPrivateCA(t *testing.T) {
	ca := testpki.NewCA(t, "private-idp-ca")
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pool, err := RootCAs(file)
	if err != nil {
		t.Fatal(err)
	}
	leaf := ca.Server(t).Cert
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Fatalf("certificate from the private CA not trusted: %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
