package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/config"
)

// FuzzConfig: Parse never panics or hangs, and every rejection is a
// *config.Error naming the file, without the content of the secret
// files the config points at. Seeds are in testdata/fuzz/FuzzConfig.
func FuzzConfig(f *testing.F) {
	const secret = "fuzz-secret-Zq8/+=&%"
	dir := f.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	keyBody := strings.Split(keyPEM, "\n")[2] // a line of the key's base64
	for name, content := range map[string]string{
		"s.secret": secret + "\n",
		"c.json":   `{"clientId":"c","clientSecret":"` + secret + `","email":"e","userId":1,"issuer":"i"}`,
		"k.pem":    keyPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			f.Fatal(err)
		}
	}
	f.Add([]byte("tenants:\n  - name: a\n    credentials_file: c.json\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.ParseWith(data, "fuzz.yaml", dir, config.Options{Now: now})
		if err == nil {
			if len(cfg.Tenants) == 0 {
				t.Fatal("accepted a config without tenants")
			}
			return
		}
		if _, ok := errors.AsType[*config.Error](err); !ok {
			t.Fatalf("error %T %v, want *config.Error", err, err)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "config: fuzz.yaml") {
			t.Fatalf("error does not name the file: %q", msg)
		}
		if strings.Contains(msg, secret) && !strings.Contains(string(data), secret) ||
			strings.Contains(msg, keyBody) && !strings.Contains(string(data), keyBody) {
			t.Fatalf("error shows a secret file's content: %q", msg)
		}
	})
}
