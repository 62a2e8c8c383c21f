package daemon_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// TestReadmeConfigsParse keeps the README's example configurations
// valid: every ```yaml block that has broker config keys is parsed by
// broker/config (strict: an unknown or misspelt key fails), with the
// files it names faked in a temporary directory. A block without tenants
// (a fragment such as the admin section) gets one.
func TestReadmeConfigsParse(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1)
	ca := testpki.NewCA(t, "readme-ca")
	leaf := ca.Server(t)
	parsed := 0
	for i, b := range blocks {
		text := string(b[1])
		var top map[string]any
		if err := yaml.Unmarshal(b[1], &top); err != nil {
			t.Errorf("README yaml block %d is not YAML: %v\n%s", i, err, text)
			continue
		}
		if !looksLikeConfig(top) {
			continue
		}
		dir := t.TempDir()
		text = strings.NewReplacer("/etc/tokenbroker/", dir+"/", "/var/log/tokenbroker/", dir+"/").Replace(text)
		if _, ok := top["tenants"]; !ok {
			text += "tenants:\n  - name: fragment\n    credentials_file: fragment.json\n"
		}
		// Fake every file the block names, by the key that names it.
		for _, m := range regexp.MustCompile(`(?m)^\s*-?\s*(\w+_files?):\s*(\S.*?)\s*(?:#.*)?$`).FindAllStringSubmatch(text, -1) {
			key, val := m[1], strings.Trim(m[2], "[]")
			for _, p := range strings.Split(val, ",") {
				p = strings.TrimSpace(p)
				if !filepath.IsAbs(p) {
					p = filepath.Join(dir, p)
				}
				if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
					t.Fatal(err)
				}
				testpki.WriteFile(t, p, fakeFile(key, ca.CertPEM, leaf))
			}
		}
		if m := regexp.MustCompile(`(?m)^tenants_dir:\s*(\S+)`).FindStringSubmatch(text); m != nil {
			if err := os.MkdirAll(filepath.Join(dir, m[1]), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := config.ParseWith([]byte(text), "README block", dir, config.Options{Now: time.Now()}); err != nil {
			t.Errorf("README yaml block %d does not parse: %v\n%s", i, err, text)
		}
		parsed++
	}
	if parsed < 3 {
		t.Errorf("parsed %d README config blocks, want at least 3 (configuration, security, admin)", parsed)
	}
}

func looksLikeConfig(top map[string]any) bool {
	for _, k := range []string{"tenants", "listen", "admin", "shutdown", "callers", "tls"} {
		if _, ok := top[k]; ok {
			return true
		}
	}
	return false
}

// fakeFile is a valid file for a config key that names one.
func fakeFile(key string, caPEM []byte, leaf *testpki.Leaf) []byte {
	switch key {
	case "credentials_file", "credentials_files":
		return []byte(`{"clientId":"readme-client","clientSecret":"FAKE-readme-secret","email":"robot@example.com","userId":1,"issuer":"auth.app.kognic.com"}`)
	case "client_secret_file", "client_secret_files":
		return []byte("FAKE-readme-secret\n")
	case "cert_file":
		return leaf.CertPEM
	case "key_file", "client_assertion_key_file", "client_assertion_key_files":
		return leaf.KeyPEM // an EC P-256 PKCS#8 key
	}
	return caPEM // ca_file, client_ca_file
}
