package config_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// keyFiles writes PEM keys to a new directory: ec.pem and rsa.pem (PKCS#8
// and PKCS#1), p224.pem (a curve JWS lacks), cert.pem (not a key),
// encrypted.pem, and readable.pem (mode 0640).
func keyFiles(t *testing.T) (dir string, ec *ecdsa.PrivateKey, rsaKey *rsa.PrivateKey) {
	t.Helper()
	dir = t.TempDir()
	ec, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	old, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ = rsa.GenerateKey(rand.Reader, 2048)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	sec1, _ := x509.MarshalECPrivateKey(p224)
	encrypted, err := os.ReadFile("../creds/testdata/encrypted-pkcs8.pem")
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"ec.pem":        {pkcs8(ec), 0o600},
		"old.pem":       {pkcs8(old), 0o600},
		"rsa.pem":       {pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), 0o600},
		"p224.pem":      {pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), 0o600},
		"cert.pem":      {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}}), 0o600},
		"encrypted.pem": {encrypted, 0o600},
		"readable.pem":  {pkcs8(ec), 0o640},
		"acme.secret":   {[]byte("a-client-secret\n"), 0o600},
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	return dir, ec, rsaKey
}

func TestPrivateKeyJWTTenant(t *testing.T) {
	dir, ec, rsaKey := keyFiles(t)
	yaml := `tenants:
  - name: acme
    token_url: https://idp.example.com/oauth2/token
    client_id: acme-client
    auth_style: private_key_jwt
    client_assertion_key_file: ec.pem
    key_id: acme-2025
    assertion_audience: https://idp.example.com/
  - name: globex
    token_url: https://idp.example.com/oauth2/token
    client_id: globex-client
    auth_style: private_key_jwt
    client_assertion_key_files: [rsa.pem, old.pem]
`
	cfg, err := config.ParseWith([]byte(yaml), "broker.yaml", dir, config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	a, g := cfg.Tenants[0], cfg.Tenants[1]
	wantEC, _ := creds.NewPrivateKey(ec)
	wantRSA, _ := creds.NewPrivateKey(rsaKey)
	if a.AuthStyle != config.AuthStylePrivateKeyJWT || a.ClientID != "acme-client" || !a.ClientKey.Equal(wantEC) || a.ClientSecret != "" ||
		a.KeyID != "acme-2025" || a.AssertionAudience != "https://idp.example.com/" || a.CredentialsSource != "client_assertion_key_file "+filepath.Join(dir, "ec.pem") {
		t.Errorf("acme = %+v", a)
	}
	if !g.ClientKey.Equal(wantRSA) || g.KeyID != "" || g.AssertionAudience != "" || len(g.Fallbacks) != 1 ||
		g.Fallbacks[0].Key.IsZero() || g.Fallbacks[0].ClientID != "globex-client" || g.Fallbacks[0].Name != "client_assertion_key_files "+filepath.Join(dir, "old.pem") {
		t.Errorf("globex = %+v", g)
	}
	// The key files are watched like the other secret files.
	for _, f := range []string{"ec.pem", "rsa.pem", "old.pem"} {
		if !strings.Contains(strings.Join(cfg.Files, "\n"), filepath.Join(dir, f)) {
			t.Errorf("Files %v lack %s", cfg.Files, f)
		}
	}
	noKeyInLogs(t, ec, rsaKey, a, g)
}

// noKeyInLogs checks that tenants logged and printed show no key.
func noKeyInLogs(t *testing.T, ec *ecdsa.PrivateKey, rsaKey *rsa.PrivateKey, tenants ...config.Tenant) {
	t.Helper()
	var logs bytes.Buffer
	for _, tn := range tenants {
		slog.New(slog.NewJSONHandler(&logs, nil)).Info("tenant", "tenant", tn)
	}
	raw, _ := ec.Bytes()
	if s := logs.String() + fmt.Sprintf("%v %+v", tenants, tenants); strings.Contains(s, new(big.Int).SetBytes(raw).String()) || strings.Contains(s, rsaKey.D.String()) || !strings.Contains(logs.String(), `"client_key":"[REDACTED]"`) {
		t.Errorf("key material in %s", s)
	}
}

func TestPrivateKeyJWTErrors(t *testing.T) {
	dir, _, _ := keyFiles(t)
	const head = "tenants:\n  - name: acme\n    token_url: https://idp.example.com/token\n"
	for _, tc := range []struct{ name, tenant, want string }{
		{"missing key file", "    client_id: c\n    auth_style: private_key_jwt\n    client_assertion_key_file: missing.pem\n",
			"broker.yaml:7: tenants[0].client_assertion_key_file: tenant \"acme\": credentials: DIR/missing.pem: cannot open file: no such file or directory"},
		{"certificate instead of the key", "    client_id: c\n    auth_style: private_key_jwt\n    client_assertion_key_file: cert.pem\n",
			`broker.yaml:7: tenants[0].client_assertion_key_file: tenant "acme": credentials: DIR/cert.pem: holds a PEM block of type "CERTIFICATE", not a private key; give the PEM private key`},
		{"encrypted key", "    client_id: c\n    auth_style: private_key_jwt\n    client_assertion_key_file: encrypted.pem\n",
			"broker.yaml:7: tenants[0].client_assertion_key_file: tenant \"acme\": credentials: DIR/encrypted.pem: the private key is encrypted; the broker reads only unencrypted keys (protect the file with its mode instead): write a decrypted copy with openssl pkey -in KEY -out KEY.plain"},
		{"wrong curve", "    client_id: c\n    auth_style: private_key_jwt\n    client_assertion_key_files: [ec.pem, p224.pem]\n",
			"broker.yaml:7: tenants[0].client_assertion_key_files[1]: tenant \"acme\": credentials: DIR/p224.pem: the private key is on curve P-224, which JWS does not define; use P-256 (ES256), P-384 (ES384) or P-521 (ES512)"},
		{"group-readable key, strict", "    client_id: c\n    auth_style: private_key_jwt\n    client_assertion_key_file: readable.pem\n",
			"broker.yaml:7: tenants[0].client_assertion_key_file: DIR/readable.pem has mode 0640: group or others can read it; it holds secrets, so run chmod 600 DIR/readable.pem (or set defaultMode: 0400 on a Kubernetes secret volume) (strict_file_permissions is true)"},
		{"key file without auth_style", "    client_id: c\n    client_assertion_key_file: ec.pem\n",
			"broker.yaml:6: tenants[0]: client_assertion_key_file needs auth_style: private_key_jwt; add it"},
		{"auth_style without key file", "    client_id: c\n    auth_style: private_key_jwt\n",
			"broker.yaml:6: tenants[0]: auth_style private_key_jwt needs client_assertion_key_file, the PEM private key the assertions are signed with; add it, and register its public key with the identity provider (broker keys prints it)"},
		{"secret and key", "    client_id: c\n    auth_style: private_key_jwt\n    client_secret_file: acme.secret\n    client_assertion_key_file: ec.pem\n",
			"broker.yaml:7: tenants[0]: auth_style private_key_jwt sends no secret; remove client_secret_file"},
		{"credentials file and key", "    credentials_file: acme.json\n    auth_style: private_key_jwt\n    client_assertion_key_file: ec.pem\n",
			"broker.yaml:5: tenants[0]: auth_style private_key_jwt sends no secret; remove credentials_file"},
		{"no client_id", "    auth_style: private_key_jwt\n    client_assertion_key_file: ec.pem\n",
			"broker.yaml:6: tenants[0]: client_assertion_key_file is set but client_id is missing; add client_id (the assertions' iss and sub)"},
		{"both singular and plural", "    client_id: c\n    auth_style: private_key_jwt\n    client_assertion_key_file: ec.pem\n    client_assertion_key_files: [old.pem]\n",
			"broker.yaml:8: tenants[0]: client_assertion_key_file and client_assertion_key_files are mutually exclusive"},
		{"key_id with several keys", "    client_id: c\n    auth_style: private_key_jwt\n    client_assertion_key_files: [ec.pem, old.pem]\n    key_id: k1\n",
			"broker.yaml:8: tenants[0]: key_id names one key, but client_assertion_key_files lists several; remove key_id"},
		{"too many keys", "    client_id: c\n    auth_style: private_key_jwt\n    client_assertion_key_files: [ec.pem, old.pem, rsa.pem, cert.pem]\n",
			"broker.yaml:7: tenants[0].client_assertion_key_files: must be a list of 1 to 3 files, newest first, got 4 entries; write e.g. [new.pem, old.pem]"},
		{"key_id with a secret", "    client_id: c\n    client_secret_file: acme.secret\n    key_id: k1\n",
			"broker.yaml:7: tenants[0]: key_id is the kid of private_key_jwt assertions; remove it, or set auth_style: private_key_jwt with client_assertion_key_file"},
		{"assertion_audience with a secret", "    client_id: c\n    client_secret_file: acme.secret\n    assertion_audience: https://idp.example.com/\n",
			"broker.yaml:7: tenants[0]: assertion_audience is the aud of private_key_jwt assertions"},
		{"empty assertion_audience", "    client_id: c\n    auth_style: private_key_jwt\n    client_assertion_key_file: ec.pem\n    assertion_audience: \"\"\n",
			"broker.yaml:8: tenants[0].assertion_audience: must not be empty; remove the key for the token URL"},
		{"key_id with a space", "    client_id: c\n    auth_style: private_key_jwt\n    client_assertion_key_file: ec.pem\n    key_id: \"a b\"\n",
			"broker.yaml:8: tenants[0].key_id: must be at most 1024 characters without spaces or control characters"},
		{"unknown auth_style", "    client_id: c\n    client_secret_file: acme.secret\n    auth_style: jwt\n",
			`broker.yaml:7: tenants[0].auth_style: "jwt" is not allowed; use "body" (client_secret_post, the default), "basic" (client_secret_basic) or "private_key_jwt" (a signed assertion, no secret)`},
		{"client_id alone", "    client_id: c\n",
			"broker.yaml:5: tenants[0]: client_id is set but client_secret_file is missing; add client_secret_file naming a file that holds the client secret (or client_assertion_key_file with auth_style: private_key_jwt)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := "strict_file_permissions: true\n" + head + tc.tenant
			_, err := config.ParseWith([]byte(yaml), "broker.yaml", dir, config.Options{Now: now})
			want := "config: " + strings.ReplaceAll(tc.want, "DIR", dir)
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("\n got %v\nwant %s…", err, want)
			}
		})
	}
}

// Without strict_file_permissions a group-readable key is a warning
// naming the file, line and fix; a broken key file is that tenant's
// LoadErr on a re-read.
func TestPrivateKeyJWTWarningsAndKeep(t *testing.T) {
	dir, _, _ := keyFiles(t)
	var logs bytes.Buffer
	yaml := "tenants:\n  - name: acme\n    token_url: https://idp.example.com/token\n    client_id: c\n    auth_style: private_key_jwt\n    client_assertion_key_file: readable.pem\n" +
		"  - name: broken\n    token_url: https://idp.example.com/token\n    client_id: c\n    auth_style: private_key_jwt\n    client_assertion_key_file: cert.pem\n"
	cfg, err := config.ParseWith([]byte(yaml), "broker.yaml", dir, config.Options{Now: now, Logger: slog.New(slog.NewTextHandler(&logs, nil)), KeepTenantsOnFileError: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "secret file readable by group or others") || !strings.Contains(logs.String(), "config=broker.yaml:6") ||
		!strings.Contains(logs.String(), "chmod 600 "+filepath.Join(dir, "readable.pem")) {
		t.Errorf("logs %s: want the mode warning naming broker.yaml:6 and the fix", logs.String())
	}
	if cfg.Tenants[0].ClientKey.IsZero() || cfg.Tenants[1].LoadErr == nil || !strings.Contains(cfg.Tenants[1].LoadErr.Error(), "cert.pem") {
		t.Errorf("tenants = %+v", cfg.Tenants)
	}
}
