package config_test

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/kognic"
	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const acmeSecret = "FAKE-acme-secret-not-real"

func TestLoadExample(t *testing.T) {
	cfg, err := config.LoadWith("testdata/broker.yaml", config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	want := &config.Config{
		Listen: "127.0.0.1:50052",
		Tenants: []config.Tenant{
			{
				Name:              "acme",
				TokenURL:          "https://auth.app.kognic.com/v1/auth/oauth/token",
				ClientID:          "fake-acme-client",
				ClientSecret:      acmeSecret,
				Scopes:            []string{"read:inputs", "write:inputs"},
				AuthStyle:         config.AuthStyleBody,
				CredentialsSource: "credentials file " + filepath.Join("testdata", "acme.json"),
			},
			{
				Name:              "globex",
				TokenURL:          "https://idp.example.com/oauth2/token",
				ClientID:          "fake-globex-client",
				ClientSecret:      "FAKE-globex-secret-not-real",
				Scopes:            []string{"read:inputs", "write:inputs"},
				AuthStyle:         config.AuthStyleBasic,
				CredentialsSource: "client_secret_file " + filepath.Join("testdata", "globex.secret"),
			},
			{
				Name:              "initech",
				TokenURL:          "https://auth.example.com/v1/auth/oauth/token",
				ClientID:          "fake-acme-client",
				ClientSecret:      acmeSecret,
				Scopes:            []string{"read:inputs", "write:inputs"},
				AuthStyle:         config.AuthStyleBody,
				CredentialsSource: "credentials file " + filepath.Join("testdata", "acme.json"),
			},
		},
	}
	assertConfig(t, cfg, want)
}

func assertConfig(t *testing.T, got, want *config.Config) {
	t.Helper()
	if got.Listen != want.Listen || len(got.Tenants) != len(want.Tenants) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for i := range want.Tenants {
		g, w := got.Tenants[i], want.Tenants[i]
		if g.Name != w.Name || g.TokenURL != w.TokenURL || g.ClientID != w.ClientID || g.ClientSecret.Reveal() != w.ClientSecret.Reveal() ||
			!slices.Equal(g.Scopes, w.Scopes) || g.AuthStyle != w.AuthStyle || g.CredentialsSource != w.CredentialsSource {
			t.Errorf("tenant %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func TestParseDefaultsAndPaths(t *testing.T) {
	abs, err := filepath.Abs("testdata/acme.json")
	if err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`
tenants:
  - name: a
    credentials_file: %s
    scopes: [z, y, z]
  - name: b
    auth_server: http://127.0.0.1:8080/base//
    client_id: 12345
    client_secret_file: globex.secret
`, abs)
	cfg, err := config.ParseWith([]byte(yaml), "b.yaml", "testdata", config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	assertConfig(t, cfg, &config.Config{
		Listen: config.DefaultListen,
		Tenants: []config.Tenant{
			{
				Name: "a", TokenURL: kognic.TokenURL(kognic.DefaultAuthServer), ClientID: "fake-acme-client", ClientSecret: acmeSecret,
				Scopes: []string{"y", "z"}, AuthStyle: config.AuthStyleBody, CredentialsSource: "credentials file " + abs,
			},
			{
				Name: "b", TokenURL: "http://127.0.0.1:8080/base/v1/auth/oauth/token", ClientID: "12345", ClientSecret: "FAKE-globex-secret-not-real",
				Scopes: nil, AuthStyle: config.AuthStyleBody, CredentialsSource: "client_secret_file " + filepath.Join("testdata", "globex.secret"),
			},
		},
	})
}

func TestTenantScopesOverrideFileScopes(t *testing.T) {
	// badscopes.json holds an invalid scope; it is ignored when the tenant
	// sets its own scopes.
	yaml := "tenants:\n  - name: acme\n    credentials_file: badscopes.json\n    scopes: [read:inputs]\n"
	cfg, err := config.ParseWith([]byte(yaml), "broker.yaml", "testdata", config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Tenants[0].Scopes; !slices.Equal(got, []string{"read:inputs"}) {
		t.Errorf("Scopes = %q, want [read:inputs]", got)
	}
}

func TestParseErrors(t *testing.T) {
	const fileTenant = "tenants:\n  - name: acme\n    credentials_file: acme.json\n"
	tests := []struct {
		name   string
		yaml   string
		want   string
		wantIs error
	}{
		{
			name: "empty file",
			yaml: "",
			want: "config: broker.yaml: file is empty; add a tenants list (see the package documentation for an example)",
		},
		{
			name: "only comments",
			yaml: "# nothing\n\n",
			want: "config: broker.yaml: file is empty; add a tenants list (see the package documentation for an example)",
		},
		{
			name: "null document",
			yaml: "---\n~\n",
			want: "config: broker.yaml: file is empty; add a tenants list (see the package documentation for an example)",
		},
		{
			name: "two documents",
			yaml: fileTenant + "---\n" + fileTenant,
			want: `config: broker.yaml:4: more than one YAML document; keep a single document (remove the "---" separator)`,
		},
		{
			name: "syntax error",
			yaml: "tenants:\n  - name: a\n    credentials_file: acme.json\n  bad\n",
			want: "config: broker.yaml:4: invalid YAML: could not find expected ':'",
		},
		{
			name: "tab indentation",
			yaml: "tenants:\n  - name: acme\n\tcredentials_file: x\n",
			want: "config: broker.yaml:2: invalid YAML: found a tab character that violates indentation",
		},
		{
			name: "syntax error without line",
			yaml: "a: b: c\n",
			want: "config: broker.yaml: invalid YAML: mapping values are not allowed in this context",
		},
		{
			name: "syntax error in second document",
			yaml: fileTenant + "---\nx: [\n",
			want: "config: broker.yaml:5: invalid YAML: did not find expected node content",
		},
		{
			name: "top level list",
			yaml: "- name: acme\n",
			want: "config: broker.yaml:1: must be a mapping with keys listen, unix_socket, tenants, tenants_dir, strict_file_permissions, tls, callers, audit, limits, insecure_plaintext, watch, admin, oauth, shutdown, got a list",
		},
		{
			name: "unknown top-level key",
			yaml: "listen: 127.0.0.1:1\ntenant:\n  - name: acme\n",
			want: `config: broker.yaml:2: unknown key "tenant"; allowed keys: listen, unix_socket, tenants, tenants_dir, strict_file_permissions, tls, callers, audit, limits, insecure_plaintext, watch, admin, oauth, shutdown`,
		},
		{
			name: "unknown tenant key",
			yaml: fileTenant + "    clientid: x\n",
			want: `config: broker.yaml:4: tenants[0]: unknown key "clientid"; allowed keys: name, auth_server, token_url, credentials_file, credentials_files, client_id, client_secret_file, client_secret_files, client_assertion_key_file, client_assertion_key_files, key_id, assertion_audience, scopes, auth_style, allow_insecure_http, ca_file`,
		},
		{
			name: "client_secret inline",
			yaml: "tenants:\n  - name: acme\n    client_id: x\n    client_secret: hunter2\n",
			want: `config: broker.yaml:4: tenants[0]: unknown key "client_secret"; secrets do not belong in the config file: write the secret to a file and set client_secret_file`,
		},
		{
			name: "key not a string",
			yaml: fileTenant + "    ? [a]\n    : b\n",
			want: "config: broker.yaml:4: tenants[0]: keys must be plain strings; allowed keys: name, auth_server, token_url, credentials_file, credentials_files, client_id, client_secret_file, client_secret_files, client_assertion_key_file, client_assertion_key_files, key_id, assertion_audience, scopes, auth_style, allow_insecure_http, ca_file",
		},
		{
			name: "null tenant",
			yaml: fileTenant + "  - ~\n",
			want: "config: broker.yaml:4: tenants[1]: must be a mapping with keys name, auth_server, token_url, credentials_file, credentials_files, client_id, client_secret_file, client_secret_files, client_assertion_key_file, client_assertion_key_files, key_id, assertion_audience, scopes, auth_style, allow_insecure_http, ca_file, got nothing",
		},
		{
			name: "custom tag",
			yaml: "!x tenants\n",
			want: "config: broker.yaml:1: must be a mapping with keys listen, unix_socket, tenants, tenants_dir, strict_file_permissions, tls, callers, audit, limits, insecure_plaintext, watch, admin, oauth, shutdown, got a string",
		},
		{
			name: "multi-line string for a mapping",
			yaml: "tls: \"a\\nb\"\n" + fileTenant,
			want: "config: broker.yaml:1: tls: must be a mapping with keys cert_file, key_file, client_ca_file, require_client_cert, reload_interval, got a string",
		},
		{
			name: "empty token_url does not mean the default",
			yaml: fileTenant + "    token_url:\n",
			want: "config: broker.yaml:4: tenants[0].token_url: must not be empty; remove the key for https://auth.app.kognic.com",
		},
		{
			name: "empty listen",
			yaml: "listen: ''\n" + fileTenant,
			want: "config: broker.yaml:1: listen: must not be empty",
		},
		{
			name: "duplicate key",
			yaml: fileTenant + "    name: other\n",
			want: "config: broker.yaml:4: tenants[0].name: duplicate key (first on line 2); remove one",
		},
		{
			name: "no tenants key",
			yaml: "listen: 127.0.0.1:1\n",
			want: "config: broker.yaml: tenants: at least one tenant is required; add an entry with a name and a credentials_file",
		},
		{
			name: "empty tenants",
			yaml: "listen: 127.0.0.1:1\ntenants: []\n",
			want: "config: broker.yaml:2: tenants: at least one tenant is required; add an entry with a name and a credentials_file",
		},
		{
			name: "tenants not a list",
			yaml: "tenants:\n  acme: {}\n",
			want: "config: broker.yaml:2: tenants: must be a list of tenants, got a mapping",
		},
		{
			name: "tenant not a mapping",
			yaml: "tenants:\n  - acme\n",
			want: "config: broker.yaml:2: tenants[0]: must be a mapping with keys name, auth_server, token_url, credentials_file, credentials_files, client_id, client_secret_file, client_secret_files, client_assertion_key_file, client_assertion_key_files, key_id, assertion_audience, scopes, auth_style, allow_insecure_http, ca_file, got a string",
		},
		{
			name: "wrong type: name is a list",
			yaml: "tenants:\n  - name: [acme]\n    credentials_file: acme.json\n",
			want: "config: broker.yaml:2: tenants[0].name: must be a string, got a list",
		},
		{
			name: "wrong type: listen is a mapping",
			yaml: "listen: {port: 1}\n" + fileTenant,
			want: "config: broker.yaml:1: listen: must be host:port, unix:///path or a list of at most one of each, got a mapping; write e.g. [127.0.0.1:50051, unix:///run/tokenbroker/broker.sock]",
		},
		{
			name: "missing name",
			yaml: "tenants:\n  - credentials_file: acme.json\n",
			want: `config: broker.yaml:2: tenants[0]: missing required key "name"; add e.g. name: acme`,
		},
		{
			name: "empty name",
			yaml: "tenants:\n  - name: ''\n    credentials_file: acme.json\n",
			want: "config: broker.yaml:2: tenants[0].name: must not be empty",
		},
		{
			name:   "bad tenant name",
			yaml:   fileTenant + "  - name: Acme\n    credentials_file: acme.json\n",
			want:   `config: broker.yaml:4: tenants[1].name: tenant name "Acme": must match [a-z0-9][a-z0-9-]{0,62} (lower-case letters, digits, hyphens)`,
			wantIs: names.ErrInvalidTenant,
		},
		{
			name: "duplicate tenant name",
			yaml: fileTenant + "  - name: other\n    credentials_file: acme.json\n  - name: acme\n    credentials_file: acme.json\n",
			want: `config: broker.yaml:6: tenants[2].name: duplicate tenant name "acme" (first on line 2); tenant names must be unique`,
		},
		{
			name: "token_url and auth_server",
			yaml: fileTenant + "    auth_server: https://a.example.com\n    token_url: https://a.example.com/token\n",
			want: "config: broker.yaml:5: tenants[0]: auth_server and token_url are mutually exclusive; set auth_server (/v1/auth/oauth/token is appended) or the full token_url, not both",
		},
		{
			name: "token_url relative",
			yaml: fileTenant + "    token_url: idp/x/token\n",
			want: `config: broker.yaml:4: tenants[0].token_url: "idp/x/token" is not an absolute http(s) URL; use the full token endpoint, e.g. https://idp.example.com/oauth2/token`,
		},
		{
			name: "token_url host without scheme",
			yaml: fileTenant + "    token_url: idp.example.com:443/token\n",
			want: `config: broker.yaml:4: tenants[0].token_url: "idp.example.com:443/token" is not an absolute http(s) URL; use the full token endpoint, e.g. https://idp.example.com/oauth2/token`,
		},
		{
			name: "token_url ftp",
			yaml: fileTenant + "    token_url: ftp://idp.example.com/token\n",
			want: `config: broker.yaml:4: tenants[0].token_url: "ftp://idp.example.com/token" is not an absolute http(s) URL; use the full token endpoint, e.g. https://idp.example.com/oauth2/token`,
		},
		{
			name: "token_url with password is not quoted",
			yaml: fileTenant + "    token_url: https://u:hunter2@idp.example.com/token\n",
			want: "config: broker.yaml:4: tenants[0].token_url: must not contain a user or password (put credentials in credentials_file or client_secret_file); use the full token endpoint, e.g. https://idp.example.com/oauth2/token",
		},
		{
			name: "auth_server with query",
			yaml: fileTenant + "    auth_server: https://a.example.com/?x=1\n",
			want: `config: broker.yaml:4: tenants[0].auth_server: "https://a.example.com/" must not have a query or fragment; use e.g. https://auth.app.kognic.com`,
		},
		{
			name: "credentials_file and client_id",
			yaml: fileTenant + "    client_id: abc\n",
			want: "config: broker.yaml:4: tenants[0]: credentials_file and client_id are mutually exclusive; use either a Kognic credentials_file, or client_id with client_secret_file",
		},
		{
			name: "credentials_file and client_secret_file",
			yaml: fileTenant + "    client_secret_file: globex.secret\n",
			want: "config: broker.yaml:4: tenants[0]: credentials_file and client_secret_file are mutually exclusive; use either a Kognic credentials_file, or client_id with client_secret_file",
		},
		{
			name: "client_id without client_secret_file",
			yaml: "tenants:\n  - name: acme\n    client_id: abc\n",
			want: "config: broker.yaml:3: tenants[0]: client_id is set but client_secret_file is missing; add client_secret_file naming a file that holds the client secret (or client_assertion_key_file with auth_style: private_key_jwt)",
		},
		{
			name: "client_secret_file without client_id",
			yaml: "tenants:\n  - name: acme\n    client_secret_file: globex.secret\n",
			want: "config: broker.yaml:3: tenants[0]: client_secret_file is set but client_id is missing; add client_id",
		},
		{
			name: "no credentials",
			yaml: "tenants:\n  - name: acme\n    scopes: [a]\n",
			want: "config: broker.yaml:2: tenants[0]: no credentials; set credentials_file to a Kognic credentials file, client_id and client_secret_file, or client_id, client_assertion_key_file and auth_style: private_key_jwt",
		},
		{
			name: "bad auth_style",
			yaml: fileTenant + "    auth_style: post\n",
			want: `config: broker.yaml:4: tenants[0].auth_style: "post" is not allowed; use "body" (client_secret_post, the default), "basic" (client_secret_basic) or "private_key_jwt" (a signed assertion, no secret)`,
		},
		{
			name:   "credentials file expired",
			yaml:   "tenants:\n  - name: old\n    credentials_file: expired.json\n",
			want:   `config: broker.yaml:3: tenants[0].credentials_file: tenant "old": credentials: testdata/expired.json: credentials expired at 2024-01-01T00:00:00Z (key "expires"); generate new credentials in the Kognic app`,
			wantIs: creds.ErrExpired,
		},
		{
			name:   "credentials file missing",
			yaml:   "tenants:\n  - name: acme\n    credentials_file: nope.json\n",
			want:   `config: broker.yaml:3: tenants[0].credentials_file: tenant "acme": credentials: testdata/nope.json: cannot open file: no such file or directory`,
			wantIs: fs.ErrNotExist,
		},
		{
			name:   "credentials file with bad scopes",
			yaml:   "tenants:\n  - name: acme\n    credentials_file: badscopes.json\n",
			want:   `config: broker.yaml:3: tenants[0].credentials_file: tenant "acme": testdata/badscopes.json: key "scopes": scope "read inputs": invalid character ' ' at byte 4; allowed are printable ASCII characters except space, '"' and '\'; fix the file or set scopes in the config`,
			wantIs: names.ErrInvalidScope,
		},
		{
			name:   "empty secret file",
			yaml:   "tenants:\n  - name: acme\n    client_id: abc\n    client_secret_file: empty.secret\n",
			want:   `config: broker.yaml:4: tenants[0].client_secret_file: tenant "acme": credentials: testdata/empty.secret: secret file is empty; write the client secret into it`,
			wantIs: creds.ErrMalformed,
		},
		{
			name:   "invalid scope",
			yaml:   fileTenant + "    scopes:\n      - read\n      - a b\n",
			want:   `config: broker.yaml:6: tenants[0].scopes[1]: scope "a b": invalid character ' ' at byte 1; allowed are printable ASCII characters except space, '"' and '\'`,
			wantIs: names.ErrInvalidScope,
		},
		{
			name:   "empty scope",
			yaml:   fileTenant + "    scopes: [read, '']\n",
			want:   `config: broker.yaml:4: tenants[0].scopes[1]: scope "": must not be empty`,
			wantIs: names.ErrInvalidScope,
		},
		{
			name:   "scope too long",
			yaml:   fileTenant + "    scopes: [" + strings.Repeat("s", 257) + "]\n",
			want:   `config: broker.yaml:4: tenants[0].scopes[0]: scope "` + strings.Repeat("s", 32) + `"...: is 257 bytes long; at most 256 are allowed`,
			wantIs: names.ErrInvalidScope,
		},
		{
			name: "scopes as a string",
			yaml: fileTenant + "    scopes: read write\n",
			want: "config: broker.yaml:4: tenants[0].scopes: must be a list of scopes, got a string; write e.g. [read:inputs, write:inputs]",
		},
		{
			name:   "too many scopes",
			yaml:   fileTenant + "    scopes: [" + manyScopes(33) + "]\n",
			want:   "config: broker.yaml:4: tenants[0].scopes: 33 distinct scopes; at most 32 are allowed",
			wantIs: names.ErrTooManyScopes,
		},
		{
			name: "listen without port",
			yaml: "listen: localhost\n" + fileTenant,
			want: `config: broker.yaml:1: listen: "localhost" is not host:port (missing port in address); use e.g. 127.0.0.1:50051 or unix:///run/tokenbroker/broker.sock`,
		},
		{
			name: "listen with bad port",
			yaml: "listen: localhost:grpc\n" + fileTenant,
			want: `config: broker.yaml:1: listen: "localhost:grpc" is not host:port (port "grpc" is not a number from 0 to 65535); use e.g. 127.0.0.1:50051 or unix:///run/tokenbroker/broker.sock`,
		},
		{
			name: "listen port out of range",
			yaml: "listen: ':70000'\n" + fileTenant,
			want: `config: broker.yaml:1: listen: ":70000" is not host:port (port "70000" is not a number from 0 to 65535); use e.g. 127.0.0.1:50051 or unix:///run/tokenbroker/broker.sock`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.ParseWith([]byte(tt.yaml), "broker.yaml", "testdata", config.Options{Now: now})
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg)
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n got %s\nwant %s", err, tt.want)
			}
			if _, ok := errors.AsType[*config.Error](err); !ok {
				t.Errorf("error is %T, want *config.Error", err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("errors.Is(err, %v) = false", tt.wantIs)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "not-real") {
				t.Errorf("error leaks a secret: %s", err)
			}
		})
	}
}

func manyScopes(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("s%d", i)
	}
	return strings.Join(s, ", ")
}

func TestLoadUnreadable(t *testing.T) {
	_, err := config.LoadWith("testdata/nope.yaml", config.Options{Now: now})
	if want := "config: cannot read config file: open testdata/nope.yaml: no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(%v, fs.ErrNotExist) = false", err)
	}
}

func TestConfigRedactsSecrets(t *testing.T) {
	cfg, err := config.LoadWith("testdata/broker.yaml", config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"%v", "%+v", "%#v"} {
		if out := fmt.Sprintf(verb, cfg); strings.Contains(out, "not-real") || !strings.Contains(out, "[REDACTED]") {
			t.Errorf("%s of Config: %s", verb, out)
		}
	}
	var logs strings.Builder
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("loaded", "tenant", cfg.Tenants[1])
	if out := logs.String(); strings.Contains(out, "not-real") || !strings.Contains(out, `"client_secret":"[REDACTED]"`) {
		t.Errorf("logged tenant: %s", out)
	}
	// A rotation's fallback credential logs its source, never its secret.
	logs.Reset()
	fallback := upstream.Credential{ClientID: "old-id", ClientSecret: creds.Secret("not-real-fallback"), Name: "client_secret_files old.secret"}
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("fallback", "credential", fallback)
	if out := logs.String(); strings.Contains(out, "not-real") || !strings.Contains(out, `"name":"client_secret_files old.secret"`) {
		t.Errorf("logged fallback credential: %s", out)
	}
}
