package config_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// TestConfigFiles checks that Files lists every file the configuration was
// read from (what the daemon watches), once each, and not the audit file.
func TestConfigFiles(t *testing.T) {
	dir := securityDir(t)
	for _, name := range []string{"new.secret", "old.secret"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("s3cret-"+name+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	yaml := `
tls:
  cert_file: server.crt
  key_file: server.key
  client_ca_file: clients.pem
tenants:
  - name: acme
    credentials_file: acme.json
  - name: private
    credentials_file: acme.json
    ca_file: private-ca.pem
  - name: globex
    token_url: https://idp.example.com/token
    client_id: globex
    client_secret_files: [new.secret, old.secret]
audit:
  path: audit.log
`
	path := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadWith(path, config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range []string{"broker.yaml", "server.crt", "server.key", "clients.pem", "acme.json", "private-ca.pem", "new.secret", "old.secret"} {
		want = append(want, filepath.Join(dir, f))
	}
	if !slices.Equal(cfg.Files, want) {
		t.Errorf("Files:\n got %v\nwant %v", cfg.Files, want)
	}

	// Parse has no config file of its own.
	cfg, err = config.ParseWith([]byte(yaml), "broker.yaml", dir, config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Files, want[1:]) {
		t.Errorf("Parse: Files = %v, want %v", cfg.Files, want[1:])
	}
}

func TestFromEnvFiles(t *testing.T) {
	valid, err := filepath.Abs("../creds/testdata/valid.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(valid, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"credentials file", map[string]string{creds.EnvCredentials: valid}, []string{valid}},
		{"id and secret", map[string]string{creds.EnvClientID: "id", creds.EnvClientSecret: "not-real"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			cfg, err := config.FromEnvWith(lookup, config.Options{Now: now})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Files, tt.want) {
				t.Errorf("Files = %v, want %v", cfg.Files, tt.want)
			}
		})
	}
}

func TestParseWatch(t *testing.T) {
	dir := securityDir(t)
	const tenant = "tenants:\n  - name: acme\n    credentials_file: acme.json\n" // lines 1-3
	for _, tt := range []struct {
		name, yaml string
		want       config.Watch
		wantErr    string
	}{
		{name: "absent: on, default interval", yaml: tenant},
		{name: "empty mapping", yaml: tenant + "watch: {}\n"},
		{name: "on with interval", yaml: tenant + "watch:\n  enabled: true\n  interval: 2m\n", want: config.Watch{Interval: 2 * time.Minute}},
		{name: "off", yaml: tenant + "watch:\n  enabled: false\n", want: config.Watch{Disabled: true}},
		{
			name:    "not a mapping",
			yaml:    tenant + "watch: true\n",
			wantErr: "config: broker.yaml:4: watch: must be a mapping with keys enabled, interval, got a boolean",
		},
		{
			name:    "unknown key",
			yaml:    tenant + "watch:\n  period: 10s\n",
			wantErr: `config: broker.yaml:5: watch: unknown key "period"; allowed keys: enabled, interval`,
		},
		{
			name:    "enabled not a boolean",
			yaml:    tenant + "watch:\n  enabled: yes please\n",
			wantErr: "config: broker.yaml:5: watch.enabled: must be true or false, got the string \"yes please\"",
		},
		{
			name:    "interval not a duration",
			yaml:    tenant + "watch:\n  interval: 30\n",
			wantErr: `config: broker.yaml:5: watch.interval: "30" is not a duration; write e.g. 30s or 5m`,
		},
		{
			name:    "interval too short",
			yaml:    tenant + "watch:\n  interval: 100ms\n",
			wantErr: "config: broker.yaml:5: watch.interval: 100ms is too short; use at least 1s",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.ParseWith([]byte(tt.yaml), "broker.yaml", dir, config.Options{Now: now})
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error:\n got %v\nwant %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Watch != tt.want {
				t.Errorf("Watch = %+v, want %+v", cfg.Watch, tt.want)
			}
			if strings.Contains(tt.yaml, "watch") && len(cfg.Files) != 1 {
				t.Errorf("Files = %v", cfg.Files)
			}
		})
	}
}
