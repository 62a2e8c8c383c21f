package hygiene

import (
	"bytes"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/testpki"
)

func TestCheckUpstreamURL(t *testing.T) {
	for _, tc := range []struct {
		url      string
		insecure bool
		ok       bool
		want     string
	}{
		{"https://auth.app.kognic.com/v1/auth/oauth/token", false, true, ""},
		{"https://idp.example.com:8443/token", false, true, ""},
		{"http://127.0.0.1:8080/token", false, true, ""},
		{"http://127.8.9.10/token", false, true, ""},
		{"http://[::1]:9000/token", false, true, ""},
		{"http://localhost:9000/token", false, true, ""},
		{"http://LOCALHOST./token", false, true, ""},
		{"http://idp.internal/token", false, false, "allow_insecure_http"},
		{"http://idp.internal/token", true, true, ""},
		{"http://10.0.0.1/token", false, false, "clear text"},
		{"http://localhost.evil.com/token", false, false, "clear text"},
		{"http://127.0.0.1.nip.io/token", false, false, "clear text"},
		{"ftp://idp.example.com/token", true, false, "not https"},
		{"https://user:hunter2@idp.example.com/token", false, false, "user info"},
		{"/v1/auth/oauth/token", false, false, "absolute"},
		{"https:///token", false, false, "absolute"},
		{"://bad", false, false, "not a URL"},
	} {
		err := CheckUpstreamURL(tc.url, tc.insecure)
		if (err == nil) != tc.ok {
			t.Errorf("CheckUpstreamURL(%q, %v) = %v, want ok=%v", tc.url, tc.insecure, err, tc.ok)
			continue
		}
		if err != nil {
			if !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInsecureURL) {
				t.Errorf("CheckUpstreamURL(%q) = %v, want %q wrapping ErrInsecureURL", tc.url, err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows the password: %v", err)
			}
		}
	}
}

func TestCheckSecretFiles(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no POSIX modes")
	}
	dir := t.TempDir()
	files := map[string]os.FileMode{"private": 0o600, "readonly": 0o400, "group": 0o640, "world": 0o604, "all": 0o644}
	paths := map[string]string{}
	for name, mode := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("secret-content"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // not subject to umask
			t.Fatal(err)
		}
		paths[name] = p
	}
	for name, bad := range map[string]bool{"private": false, "readonly": false, "group": true, "world": true, "all": true} {
		err := CheckFileMode(paths[name])
		var pe *PermissionError
		if got := errors.As(err, &pe); got != bad {
			t.Errorf("%s (%04o): CheckFileMode = %v, want permission problem=%v", name, files[name], err, bad)
		}
	}

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	all := []string{paths["private"], paths["group"], "", paths["all"]}
	if err := CheckSecretFiles(log, false, all...); err != nil {
		t.Fatalf("lenient check failed: %v", err)
	}
	out := logs.String()
	if strings.Count(out, "level=WARN") != 2 || !strings.Contains(out, paths["group"]) || !strings.Contains(out, paths["all"]) ||
		strings.Contains(out, paths["private"]+" ") || !strings.Contains(out, "mode=0640") {
		t.Errorf("warnings = %q, want one each for group and all", out)
	}
	if strings.Contains(out, "secret-content") {
		t.Error("file content logged")
	}

	err := CheckSecretFiles(log, true, all...)
	var pe *PermissionError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), paths["group"]) || !strings.Contains(err.Error(), paths["all"]) ||
		!strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("strict check = %v, want errors naming both files and the fix", err)
	}
	if err := CheckSecretFiles(log, false, filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file not reported")
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
