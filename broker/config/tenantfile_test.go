package config_test

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/config"
)

// With KeepTenantsOnFileError a tenant whose own file does not load comes
// back with a LoadErr naming the tenant and the file, the other tenants
// load as usual and the broken file stays watched; without it, or for an
// error that is not one tenant's file, the whole configuration fails.
func TestKeepTenantsOnFileError(t *testing.T) {
	good := strings.Replace(strings.Replace(kognicFile, "%s", "client-1", 1), "%s", "secret-1", 1)
	dir := writeFiles(t, map[string]string{
		"r1.json": good, "r2.json": good[:len(good)-20], "r3.secret": "s3\n", "bad-ca.pem": "not a certificate\n",
	})
	yaml := `tenants:
  - name: r1
    credentials_file: r1.json
  - name: r2
    credentials_file: r2.json
  - name: r3
    token_url: https://idp.example.com/token
    client_id: c3
    client_secret_files: [r3.secret, missing.secret]
  - name: r4
    token_url: https://idp.example.com/token
    client_id: c4
    client_secret_file: r3.secret
    ca_file: bad-ca.pem
`
	if _, err := config.ParseWith([]byte(yaml), "broker.yaml", dir, config.Options{Now: now}); err == nil ||
		!strings.Contains(err.Error(), "r2.json") {
		t.Fatalf("without the option: err = %v, want the whole config refused naming r2.json", err)
	} else if _, ok := errors.AsType[*config.Error](err); !ok {
		t.Errorf("without the option: err is %T, want *config.Error", err)
	}

	cfg, err := config.ParseWith([]byte(yaml), "broker.yaml", dir, config.Options{Now: now, KeepTenantsOnFileError: true})
	if err != nil {
		t.Fatal(err)
	}
	if r1 := cfg.Tenants[0]; r1.LoadErr != nil || r1.ClientSecret.Reveal() != "secret-1" {
		t.Errorf("r1 = %+v, want loaded", r1)
	}
	for i, want := range map[int]string{1: "r2.json", 2: "missing.secret", 3: "bad-ca.pem"} {
		tn := cfg.Tenants[i]
		if tn.LoadErr == nil {
			t.Errorf("%s: no LoadErr", tn.Name)
			continue
		}
		if msg := tn.LoadErr.Error(); !strings.Contains(msg, want) || !strings.Contains(msg, `"`+tn.Name+`"`) {
			t.Errorf("%s: LoadErr %q does not name the tenant and %s", tn.Name, msg, want)
		}
		if tn.ClientID != "" || tn.ClientSecret.Reveal() != "" || tn.TokenURL != "" {
			t.Errorf("%s: a tenant with a LoadErr carries settings: %+v", tn.Name, tn)
		}
	}
	for _, f := range []string{"r2.json", "missing.secret", "bad-ca.pem"} {
		if !slices.Contains(cfg.Files, filepath.Join(dir, f)) {
			t.Errorf("Files %v lacks %s, whose fix must be noticed", cfg.Files, f)
		}
	}

	for name, broken := range map[string]string{
		"unknown key": yaml + "    colour: blue\n",
		"yaml syntax": yaml + "  - name: [\n",
		"callers":     yaml + "callers:\n  - name: x\n",
	} {
		if _, err := config.ParseWith([]byte(broken), "broker.yaml", dir, config.Options{Now: now, KeepTenantsOnFileError: true}); err == nil {
			t.Errorf("%s: accepted with the option; only a tenant's own files may be kept", name)
		}
	}
}
