package config_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
)

func lookup(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := kv[k]
		return v, ok
	}
}

func TestFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    config.Tenant
		wantErr string
		wantIs  error
	}{
		{
			name: "client id and secret",
			env:  map[string]string{"KOGNIC_CLIENT_ID": "env-id", "KOGNIC_CLIENT_SECRET": "env-secret"},
			want: config.Tenant{
				Name: "default", TokenURL: "https://auth.app.kognic.com/v1/auth/oauth/token", ClientID: "env-id", ClientSecret: "env-secret",
				AuthStyle: config.AuthStyleBody, CredentialsSource: "KOGNIC_CLIENT_ID/KOGNIC_CLIENT_SECRET",
			},
		},
		{
			name: "credentials file and auth server",
			env:  map[string]string{"KOGNIC_CREDENTIALS": "testdata/acme.json", "KOGNIC_AUTH_SERVER": "http://localhost:8080/"},
			want: config.Tenant{
				Name: "default", TokenURL: "http://localhost:8080/v1/auth/oauth/token", ClientID: "fake-acme-client", ClientSecret: acmeSecret,
				Scopes: []string{"read:inputs", "write:inputs"}, AuthStyle: config.AuthStyleBody, CredentialsSource: "credentials file testdata/acme.json",
			},
		},
		{
			name:    "nothing",
			env:     map[string]string{"KOGNIC_AUTH_SERVER": "http://localhost:8080"},
			wantErr: "config: no --config given and no credentials in the environment: set KOGNIC_CREDENTIALS to a credentials file, or KOGNIC_CLIENT_ID and KOGNIC_CLIENT_SECRET, or pass --config broker.yaml, or run with --dev for a local demo identity provider",
			wantIs:  creds.ErrNoCredentials,
		},
		{
			name:    "bad auth server",
			env:     map[string]string{"KOGNIC_CLIENT_ID": "env-id", "KOGNIC_CLIENT_SECRET": "env-secret", "KOGNIC_AUTH_SERVER": "auth.example.com"},
			wantErr: `config: KOGNIC_AUTH_SERVER: "auth.example.com" is not an absolute http(s) URL; use e.g. https://auth.app.kognic.com`,
		},
		{
			name:    "expired credentials file",
			env:     map[string]string{"KOGNIC_CREDENTIALS": "testdata/expired.json"},
			wantErr: `credentials: KOGNIC_CREDENTIALS=testdata/expired.json: credentials expired at 2024-01-01T00:00:00Z (key "expires"); generate new credentials in the Kognic app`,
			wantIs:  creds.ErrExpired,
		},
		{
			name:    "credentials file with invalid scopes",
			env:     map[string]string{"KOGNIC_CREDENTIALS": "testdata/badscopes.json"},
			wantErr: `config: credentials file testdata/badscopes.json: scopes: scope "read inputs": invalid character ' ' at byte 4; allowed are printable ASCII characters except space, '"' and '\'`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.FromEnvWith(lookup(tt.env), config.Options{Now: now})
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error:\n got %v\nwant %s", err, tt.wantErr)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("errors.Is(err, %v) = false", tt.wantIs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Listen != config.DefaultListen || len(cfg.Tenants) != 1 {
				t.Fatalf("got %+v", cfg)
			}
			g, w := cfg.Tenants[0], tt.want
			if g.Name != w.Name || g.TokenURL != w.TokenURL || g.ClientID != w.ClientID || g.ClientSecret.Reveal() != w.ClientSecret.Reveal() ||
				!slices.Equal(g.Scopes, w.Scopes) || g.AuthStyle != w.AuthStyle || g.CredentialsSource != w.CredentialsSource {
				t.Errorf("got  %+v\nwant %+v", g, w)
			}
		})
	}
}

func TestParseAliases(t *testing.T) {
	yaml := `
tenants:
  - name: a
    credentials_file: acme.json
    scopes: &common [read, write]
  - name: b
    credentials_file: acme.json
    scopes: *common
`
	cfg, err := config.ParseWith([]byte(yaml), "b.yaml", "testdata", config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Tenants[1].Scopes, []string{"read", "write"}) {
		t.Errorf("alias scopes = %q", cfg.Tenants[1].Scopes)
	}
}
