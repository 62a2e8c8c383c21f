package config_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

const keyDigest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" // sha256("test")

// securityDir returns a directory with the files the security sections
// name, all mode 0600 unless the name says otherwise: acme.json,
// server.crt, server.key, clients.pem (a CA), private-ca.pem, notpem.txt,
// and world-readable.key (0644).
func securityDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	acme, err := os.ReadFile("testdata/acme.json")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte, mode os.FileMode) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask-proof
			t.Fatal(err)
		}
	}
	ca := testpki.NewCA(t, "test")
	srv := ca.Server(t)
	write("acme.json", acme, 0o600)
	write("server.crt", srv.CertPEM, 0o600)
	write("server.key", srv.KeyPEM, 0o600)
	write("clients.pem", ca.CertPEM, 0o644)
	write("private-ca.pem", testpki.NewCA(t, "idp").CertPEM, 0o644)
	write("notpem.txt", []byte("not a certificate\n"), 0o644)
	write("world-readable.key", srv.KeyPEM, 0o644)
	write("world-readable.json", acme, 0o644)
	return dir
}

func TestParseSecuritySections(t *testing.T) {
	dir := securityDir(t)
	yaml := `
strict_file_permissions: true
tls:
  cert_file: server.crt
  key_file: server.key
  client_ca_file: clients.pem
  require_client_cert: false
  reload_interval: 30s
tenants:
  - name: acme
    credentials_file: acme.json
    token_url: http://idp.internal:8080/token
    allow_insecure_http: true
  - name: private
    credentials_file: acme.json
    token_url: https://idp.corp.example/token
    ca_file: private-ca.pem
callers:
  - name: billing
    spiffe_id: spiffe://prod/ns/billing/sa/api
    tenants: [acme, "team-*"]
    scopes: ["read:*"]
  - name: web
    dns_name: web.prod.svc
    tenants: ["*"]
  - name: legacy
    common_name: legacy-client
    tenants: [acme]
  - name: ci
    api_key_sha256: ` + strings.ToUpper(keyDigest) + `
    tenants: [private]
audit:
  path: audit.log
limits:
  requests_per_second: 2.5
  burst: 10
  max_streams_per_caller: 3
  max_scopes_per_request: 4
  max_message_bytes: 32768
  invalidations_per_second: 0.5
  invalidation_burst: 3
  denials_per_second_per_ip: 2
  denial_burst_per_ip: 4
  max_header_list_bytes: 8192
  max_streams_per_connection: 50
  max_connections: 500
  max_connections_per_ip: 20
  max_open_streams_per_ip: 30
  handshake_timeout: 3s
  max_connection_idle: 2m
  max_streams_per_ip: 64
  max_anonymous_streams_per_ip: 8
  max_streams_per_api_key: 500
  new_scope_sets_per_second: 2
  new_scope_set_burst: 20
  max_idp_requests_per_host: 32
insecure_plaintext: true
`
	cfg, err := config.ParseWith([]byte(yaml), "broker.yaml", dir, config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.StrictFilePermissions {
		t.Error("StrictFilePermissions = false")
	}
	wantTLS := config.TLS{
		CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key"),
		ClientCAFile: filepath.Join(dir, "clients.pem"), ReloadInterval: 30 * time.Second,
	}
	if cfg.TLS == nil || *cfg.TLS != wantTLS {
		t.Errorf("TLS = %+v, want %+v", cfg.TLS, wantTLS)
	}
	a, p := cfg.Tenants[0], cfg.Tenants[1]
	if !a.AllowInsecureHTTP || a.TokenURL != "http://idp.internal:8080/token" || a.CAFile != "" {
		t.Errorf("tenant acme = %+v", a)
	}
	if p.AllowInsecureHTTP || p.CAFile != filepath.Join(dir, "private-ca.pem") {
		t.Errorf("tenant private = %+v", p)
	}
	wantCallers := []config.Caller{
		{Name: "billing", SPIFFEID: "spiffe://prod/ns/billing/sa/api", Tenants: []string{"acme", "team-*"}, Scopes: []string{"read:*"}},
		{Name: "web", DNSName: "web.prod.svc", Tenants: []string{"*"}},
		{Name: "legacy", CommonName: "legacy-client", Tenants: []string{"acme"}},
		{Name: "ci", APIKeySHA256: keyDigest, Tenants: []string{"private"}},
	}
	if len(cfg.Callers) != len(wantCallers) {
		t.Fatalf("Callers = %+v", cfg.Callers)
	}
	for i, w := range wantCallers {
		g := cfg.Callers[i]
		if g.Name != w.Name || g.SPIFFEID != w.SPIFFEID || g.DNSName != w.DNSName || g.CommonName != w.CommonName ||
			g.APIKeySHA256 != w.APIKeySHA256 || !slices.Equal(g.Tenants, w.Tenants) || !slices.Equal(g.Scopes, w.Scopes) {
			t.Errorf("callers[%d] = %+v, want %+v", i, g, w)
		}
	}
	if cfg.Callers[3].UsesCertificate() || !cfg.Callers[0].UsesCertificate() {
		t.Error("UsesCertificate is wrong")
	}
	if want := filepath.Join(dir, "audit.log"); cfg.Audit.Path != want {
		t.Errorf("Audit.Path = %q, want %q", cfg.Audit.Path, want)
	}
	wantLimits := limits.Limits{RequestsPerSecond: 2.5, Burst: 10, MaxStreamsPerCaller: 3, MaxScopesPerRequest: 4, MaxMessageBytes: 32768,
		NewScopeSetsPerSecond: 2, NewScopeSetBurst: 20, MaxIdPRequestsPerHost: 32,
		MaxStreamsPerIP: 64, MaxAnonymousStreamsPerIP: 8, MaxStreamsPerAPIKey: 500,
		InvalidationsPerSecond: 0.5, InvalidationBurst: 3, DenialsPerSecondPerIP: 2, DenialBurstPerIP: 4,
		MaxHeaderListBytes: 8192, MaxStreamsPerConn: 50, MaxConnections: 500, MaxConnectionsPerIP: 20,
		MaxOpenStreamsPerIP: 30, HandshakeTimeout: 3 * time.Second, MaxConnectionIdle: 2 * time.Minute,
	}
	if cfg.Limits != wantLimits {
		t.Errorf("Limits = %+v, want %+v", cfg.Limits, wantLimits)
	}
	if !cfg.InsecurePlaintext {
		t.Error("InsecurePlaintext = false")
	}
}

func TestParseSecurityDefaults(t *testing.T) {
	cfg, err := config.ParseWith([]byte("tenants:\n  - name: acme\n    credentials_file: acme.json\n"), "broker.yaml", "testdata", config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS != nil || cfg.Callers != nil || cfg.Audit != (config.Audit{}) || cfg.Limits != (limits.Limits{}) || cfg.StrictFilePermissions {
		t.Errorf("defaults: %+v", cfg)
	}
	cfg, err = config.ParseWith([]byte("audit: {path: '-'}\ntenants:\n  - name: acme\n    credentials_file: acme.json\n"), "broker.yaml", "testdata", config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Audit.Path != "-" {
		t.Errorf("audit.path - resolved to %q", cfg.Audit.Path)
	}
	for fsync, want := range map[string]time.Duration{"never": 0, "always": config.AuditFsyncEachBatch, "250ms": 250 * time.Millisecond} {
		cfg, err = config.ParseWith([]byte("audit: {path: a.log, fsync: "+fsync+"}\ntenants:\n  - name: acme\n    credentials_file: acme.json\n"), "broker.yaml", "testdata", config.Options{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Audit.Fsync != want {
			t.Errorf("audit.fsync %s: %s, want %s", fsync, cfg.Audit.Fsync, want)
		}
	}
}

func TestParseSecurityErrors(t *testing.T) {
	const tenant = "tenants:\n  - name: acme\n    credentials_file: acme.json\n" // lines 1-3
	const tlsMTLS = "tls:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: clients.pem\n"
	tests := []struct {
		name   string
		yaml   string
		want   string
		wantIs error
	}{
		// upstream URLs
		{
			name:   "http token_url on a public host",
			yaml:   tenant + "    token_url: http://idp.example.com/token\n",
			want:   "config: broker.yaml:4: tenants[0].token_url: insecure upstream URL http://idp.example.com/token: http sends the client secret in clear text; use https, or set allow_insecure_http: true on the tenant if the network is trusted",
			wantIs: upstream.ErrInsecureURL,
		},
		{
			name:   "http auth_server on a public host",
			yaml:   tenant + "    auth_server: http://auth.example.com\n",
			want:   "config: broker.yaml:4: tenants[0].auth_server: insecure upstream URL http://auth.example.com: http sends the client secret in clear text; use https, or set allow_insecure_http: true on the tenant if the network is trusted",
			wantIs: upstream.ErrInsecureURL,
		},
		{
			name:   "allow_insecure_http false",
			yaml:   tenant + "    allow_insecure_http: false\n    token_url: http://idp.example.com/token\n",
			want:   "config: broker.yaml:5: tenants[0].token_url: insecure upstream URL http://idp.example.com/token: http sends the client secret in clear text; use https, or set allow_insecure_http: true on the tenant if the network is trusted",
			wantIs: upstream.ErrInsecureURL,
		},
		{
			name: "allow_insecure_http not a boolean",
			yaml: tenant + "    allow_insecure_http: yes please\n",
			want: `config: broker.yaml:4: tenants[0].allow_insecure_http: must be true or false, got the string "yes please"`,
		},
		// ca_file
		{
			name:   "ca_file missing",
			yaml:   tenant + "    ca_file: nope.pem\n",
			want:   "config: broker.yaml:4: tenants[0].ca_file: cannot read DIR/nope.pem: no such file or directory",
			wantIs: fs.ErrNotExist,
		},
		{
			name: "ca_file not PEM",
			yaml: tenant + "    ca_file: notpem.txt\n",
			want: `config: broker.yaml:4: tenants[0].ca_file: tenant "acme": DIR/notpem.txt holds no PEM certificate; give the private CA's certificate in PEM (-----BEGIN CERTIFICATE-----)`,
		},
		// secret files
		{
			name:   "strict: world-readable credentials_file",
			yaml:   "strict_file_permissions: true\ntenants:\n  - name: acme\n    credentials_file: world-readable.json\n",
			want:   "config: broker.yaml:4: tenants[0].credentials_file: DIR/world-readable.json has mode 0644: group or others can read it; it holds secrets, so run chmod 600 DIR/world-readable.json (or set defaultMode: 0400 on a Kubernetes secret volume) (strict_file_permissions is true)",
			wantIs: new(creds.PermissionError),
		},
		{
			name: "strict: world-readable tls.key_file",
			yaml: "strict_file_permissions: true\ntls:\n  cert_file: server.crt\n  key_file: world-readable.key\n" + tenant,
			want: "config: broker.yaml:4: tls.key_file: DIR/world-readable.key has mode 0644: group or others can read it; it holds secrets, so run chmod 600 DIR/world-readable.key (or set defaultMode: 0400 on a Kubernetes secret volume) (strict_file_permissions is true)",
		},
		{
			name: "strict_file_permissions not a boolean",
			yaml: "strict_file_permissions: 1\n" + tenant,
			want: "config: broker.yaml:1: strict_file_permissions: must be true or false, got 1",
		},
		// tls
		{
			name: "tls not a mapping",
			yaml: "tls: true\n" + tenant,
			want: "config: broker.yaml:1: tls: must be a mapping with keys cert_file, key_file, client_ca_file, require_client_cert, reload_interval, got a boolean",
		},
		{
			name: "tls unknown key",
			yaml: "tls:\n  cert_file: server.crt\n  key_file: server.key\n  ca_file: clients.pem\n" + tenant,
			want: `config: broker.yaml:4: tls: unknown key "ca_file"; allowed keys: cert_file, key_file, client_ca_file, require_client_cert, reload_interval`,
		},
		{
			name: "tls without cert_file",
			yaml: "tls:\n  key_file: server.key\n" + tenant,
			want: `config: broker.yaml:2: tls: missing required key "cert_file"; add the PEM certificate (chain) the broker presents`,
		},
		{
			name: "tls without key_file",
			yaml: "tls:\n  cert_file: server.crt\n" + tenant,
			want: `config: broker.yaml:2: tls: missing required key "key_file"; add the PEM private key of cert_file`,
		},
		{
			name:   "tls cert_file missing",
			yaml:   "tls:\n  cert_file: nope.crt\n  key_file: server.key\n" + tenant,
			want:   "config: broker.yaml:2: tls.cert_file: cannot read DIR/nope.crt: no such file or directory",
			wantIs: fs.ErrNotExist,
		},
		{
			name:   "tls key_file missing",
			yaml:   "tls:\n  cert_file: server.crt\n  key_file: nope.key\n" + tenant,
			want:   "config: broker.yaml:3: tls.key_file: cannot read DIR/nope.key: no such file or directory",
			wantIs: fs.ErrNotExist,
		},
		{
			name: "require_client_cert without client_ca_file",
			yaml: "tls:\n  cert_file: server.crt\n  key_file: server.key\n  require_client_cert: true\n" + tenant,
			want: "config: broker.yaml:4: tls.require_client_cert: needs tls.client_ca_file; add the PEM bundle of the CAs that sign client certificates",
		},
		{
			name: "reload_interval not a duration",
			yaml: "tls:\n  cert_file: server.crt\n  key_file: server.key\n  reload_interval: 10\n" + tenant,
			want: `config: broker.yaml:4: tls.reload_interval: "10" is not a duration; write e.g. 30s or 5m`,
		},
		{
			name: "reload_interval too short",
			yaml: "tls:\n  cert_file: server.crt\n  key_file: server.key\n  reload_interval: 10ms\n" + tenant,
			want: "config: broker.yaml:4: tls.reload_interval: 10ms is too short; use at least 1s",
		},
		// callers
		{
			name: "callers empty",
			yaml: tenant + "callers: []\n",
			want: "config: broker.yaml:4: callers: empty list; list at least one caller, or remove the key to serve only clients on this host, without authentication",
		},
		{
			name: "callers null",
			yaml: tenant + "callers:\n",
			want: "config: broker.yaml:4: callers: empty list; list at least one caller, or remove the key to serve only clients on this host, without authentication",
		},
		{
			name: "callers a mapping",
			yaml: tenant + "callers:\n  billing: {}\n",
			want: "config: broker.yaml:5: callers: must be a list of callers, got a mapping",
		},
		{
			name: "caller unknown key",
			yaml: tenant + "callers:\n  - name: ci\n    api_key: hunter2\n",
			want: `config: broker.yaml:6: callers[0]: unknown key "api_key"; allowed keys: name, spiffe_id, dns_name, common_name, api_key_sha256, unix_uid, unix_gid, tenants, scopes`,
		},
		{
			name: "caller without name",
			yaml: tenant + "callers:\n  - api_key_sha256: " + keyDigest + "\n    tenants: [acme]\n",
			want: `config: broker.yaml:5: callers[0]: missing required key "name"; add e.g. name: billing`,
		},
		{
			name: "duplicate caller name",
			yaml: tenant + "callers:\n  - name: ci\n    api_key_sha256: " + keyDigest + "\n    tenants: [acme]\n  - name: ci\n    api_key_sha256: " + strings.Repeat("a", 64) + "\n    tenants: [acme]\n",
			want: `config: broker.yaml:8: callers[1].name: duplicate caller name "ci" (first on line 5); caller names must be unique`,
		},
		{
			name: "caller without identity",
			yaml: tenant + "callers:\n  - name: ci\n    tenants: [acme]\n",
			want: `config: broker.yaml:5: callers[0]: caller "ci" has no identity; set exactly one of spiffe_id, dns_name, common_name, api_key_sha256, unix_uid, unix_gid`,
		},
		{
			name: "caller with two identities",
			yaml: tlsMTLS + tenant + "callers:\n  - name: web\n    dns_name: web.svc\n    common_name: web\n    tenants: [acme]\n",
			want: `config: broker.yaml:11: callers[0]: caller "web" has both dns_name and common_name; set exactly one of spiffe_id, dns_name, common_name, api_key_sha256, unix_uid, unix_gid`,
		},
		{
			name: "api_key_sha256 is the key itself",
			yaml: tenant + "callers:\n  - name: ci\n    api_key_sha256: hunter2-secret-key\n    tenants: [acme]\n",
			want: `config: broker.yaml:6: callers[0].api_key_sha256: must be the SHA-256 of the API key, 64 hex digits (printf %s "$KEY" | sha256sum), got 18 characters; never put the key itself in the config`,
		},
		{
			name: "api_key_sha256 not hex",
			yaml: tenant + "callers:\n  - name: ci\n    api_key_sha256: " + strings.Repeat("hunter2!", 8) + "\n    tenants: [acme]\n",
			want: `config: broker.yaml:6: callers[0].api_key_sha256: must be the SHA-256 of the API key, 64 hex digits (0-9, a-f) only; never put the key itself in the config`,
		},
		{
			name: "certificate caller without tls",
			yaml: tenant + "callers:\n  - name: billing\n    spiffe_id: spiffe://prod/billing\n    tenants: [acme]\n",
			want: `config: broker.yaml:6: callers[0].spiffe_id: caller "billing" is identified by a client certificate, but tls.client_ca_file is not set; add a tls section with cert_file, key_file and client_ca_file (the CAs that sign client certificates)`,
		},
		{
			name: "certificate caller without client_ca_file",
			yaml: "tls:\n  cert_file: server.crt\n  key_file: server.key\n" + tenant + "callers:\n  - name: web\n    dns_name: web.svc\n    tenants: [acme]\n",
			want: `config: broker.yaml:9: callers[0].dns_name: caller "web" is identified by a client certificate, but tls.client_ca_file is not set; add a tls section with cert_file, key_file and client_ca_file (the CAs that sign client certificates)`,
		},
		{
			name: "caller without tenants",
			yaml: tenant + "callers:\n  - name: ci\n    api_key_sha256: " + keyDigest + "\n",
			want: `config: broker.yaml:5: callers[0]: caller "ci": missing required key "tenants"; add the tenant globs it may use, e.g. tenants: [acme, "team-*"]`,
		},
		{
			name: "caller tenants empty",
			yaml: tenant + "callers:\n  - name: ci\n    api_key_sha256: " + keyDigest + "\n    tenants: []\n",
			want: `config: broker.yaml:7: callers[0].tenants: empty list; give at least one tenant glob, e.g. [acme] or ["team-*"]`,
		},
		{
			name: "caller tenants a string",
			yaml: tenant + "callers:\n  - name: ci\n    api_key_sha256: " + keyDigest + "\n    tenants: acme\n",
			want: `config: broker.yaml:7: callers[0].tenants: must be a list of globs, got a string; write e.g. [acme, "team-*"]`,
		},
		{
			name: "caller tenant not a string",
			yaml: tenant + "callers:\n  - name: ci\n    api_key_sha256: " + keyDigest + "\n    tenants:\n      - acme\n      - [b]\n",
			want: `config: broker.yaml:9: callers[0].tenants[1]: must be a string, got a list`,
		},
		{
			name: "caller scopes without a value",
			yaml: tenant + "callers:\n  - name: ci\n    api_key_sha256: " + keyDigest + "\n    tenants: [acme]\n    scopes:\n",
			want: `config: broker.yaml:8: callers[0].scopes: no value; remove the key to allow every scope, or list the scope globs the caller may request, e.g. ["read:*"]`,
		},
		{
			name: "caller scopes empty",
			yaml: tenant + "callers:\n  - name: ci\n    api_key_sha256: " + keyDigest + "\n    tenants: [acme]\n    scopes: []\n",
			want: `config: broker.yaml:8: callers[0].scopes: empty list; remove the key to allow every scope, or list the scope globs the caller may request, e.g. ["read:*"]`,
		},
		// audit
		{
			name: "audit fsync not a policy",
			yaml: tenant + "audit: {path: a.log, fsync: sometimes}\n",
			want: `config: broker.yaml:4: audit.fsync: "sometimes" is not never, always or an interval from 10ms to 1m; write e.g. always or 1s`,
		},
		{
			name: "audit fsync interval too long",
			yaml: tenant + "audit: {path: a.log, fsync: 1h}\n",
			want: `config: broker.yaml:4: audit.fsync: "1h" is not never, always or an interval from 10ms to 1m; write e.g. always or 1s`,
		},
		{
			name: "audit without path",
			yaml: tenant + "audit: {}\n",
			want: `config: broker.yaml:4: audit: missing required key "path"; set the file audit lines are appended to, or "-" for standard output`,
		},
		{
			name: "audit a string",
			yaml: tenant + "audit: audit.log\n",
			want: `config: broker.yaml:4: audit: must be a mapping with keys path, fsync, got a string`,
		},
		{
			name: "audit path empty",
			yaml: tenant + "audit:\n  path: ''\n",
			want: `config: broker.yaml:5: audit.path: must not be empty`,
		},
		// limits
		{
			name: "limits unknown key",
			yaml: tenant + "limits:\n  rps: 5\n",
			want: `config: broker.yaml:5: limits: unknown key "rps"; allowed keys: ` + strings.Join(limits.Keys(), ", "),
		},
		{
			name: "max_header_list_bytes too small",
			yaml: tenant + "limits:\n  max_header_list_bytes: 100\n",
			want: `config: broker.yaml:5: limits.max_header_list_bytes: must be from 4096 to 1048576, got 100`,
		},
		{
			name: "handshake_timeout not a duration",
			yaml: tenant + "limits:\n  handshake_timeout: 10\n",
			want: `config: broker.yaml:5: limits.handshake_timeout: "10" is not a duration; write e.g. 10s or 500ms`,
		},
		{
			name: "insecure_plaintext not a boolean",
			yaml: tenant + "insecure_plaintext: yes please\n",
			want: `config: broker.yaml:4: insecure_plaintext: must be true or false, got the string "yes please"`,
		},
		{
			name: "requests_per_second zero",
			yaml: tenant + "limits:\n  requests_per_second: 0\n",
			want: `config: broker.yaml:5: limits.requests_per_second: must be a number greater than 0 and at most 1e+06, got 0`,
		},
		{
			name: "requests_per_second a string",
			yaml: tenant + "limits:\n  requests_per_second: fast\n",
			want: `config: broker.yaml:5: limits.requests_per_second: must be a number, got the string "fast"`,
		},
		{
			name: "burst fractional",
			yaml: tenant + "limits:\n  burst: 1.5\n",
			want: `config: broker.yaml:5: limits.burst: must be a whole number, got 1.5`,
		},
		{
			name: "burst negative",
			yaml: tenant + "limits:\n  burst: -1\n",
			want: `config: broker.yaml:5: limits.burst: must be from 1 to 1000000, got -1`,
		},
		{
			name: "max_streams_per_caller zero",
			yaml: tenant + "limits:\n  max_streams_per_caller: 0\n",
			want: `config: broker.yaml:5: limits.max_streams_per_caller: must be from 1 to 1000000, got 0`,
		},
		{
			name: "max_scopes_per_request above the scope limit",
			yaml: tenant + "limits:\n  max_scopes_per_request: 33\n",
			want: `config: broker.yaml:5: limits.max_scopes_per_request: must be from 1 to 32, got 33`,
		},
		{
			name: "max_message_bytes too small",
			yaml: tenant + "limits:\n  max_message_bytes: 1024\n",
			want: `config: broker.yaml:5: limits.max_message_bytes: must be from 16384 to 4194304, got 1024`,
		},
	}
	dir := securityDir(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.ParseWith([]byte(tt.yaml), "broker.yaml", dir, config.Options{Now: now})
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg)
			}
			want := strings.ReplaceAll(tt.want, "DIR", dir)
			if err.Error() != want {
				t.Errorf("error:\n got %s\nwant %s", err, want)
			}
			if _, ok := errors.AsType[*config.Error](err); !ok {
				t.Errorf("error is %T, want *config.Error", err)
			}
			if pe, ok := tt.wantIs.(*creds.PermissionError); ok {
				if _, ok := errors.AsType[*creds.PermissionError](err); !ok {
					t.Errorf("error does not wrap %T", pe)
				}
			} else if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("errors.Is(err, %v) = false", tt.wantIs)
			}
			for _, secret := range []string{"hunter2", "not-real", "PRIVATE KEY"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error leaks %q: %s", secret, err)
				}
			}
		})
	}
}

// TestSecretFilePermissionWarnings: without strict_file_permissions, each
// secret file group or others can read is a warning naming the file, the
// config line and the fix; the config still loads.
func TestSecretFilePermissionWarnings(t *testing.T) {
	dir := securityDir(t)
	if err := os.WriteFile(filepath.Join(dir, "globex.secret"), []byte("FAKE-globex-secret-not-real\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "globex.secret"), 0o640); err != nil {
		t.Fatal(err)
	}
	yaml := `tls:
  cert_file: server.crt
  key_file: world-readable.key
tenants:
  - name: acme
    credentials_file: world-readable.json
  - name: globex
    client_id: g
    client_secret_file: globex.secret
  - name: quiet
    credentials_file: acme.json
`
	path := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cfg, err := config.LoadWith(path, config.Options{Now: now, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Tenants) != 3 {
		t.Fatalf("tenants = %d", len(cfg.Tenants))
	}
	type warning struct {
		Level, Msg, File, Mode, Fix, Config, Field string
	}
	var got []warning
	for _, ln := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var w warning
		if err := json.Unmarshal([]byte(ln), &w); err != nil {
			t.Fatalf("log line %q: %v", ln, err)
		}
		got = append(got, w)
	}
	const msg = "secret file readable by group or others; strict_file_permissions: true makes this an error"
	want := []warning{
		{"WARN", msg, filepath.Join(dir, "world-readable.key"), "0644", "chmod 600 " + filepath.Join(dir, "world-readable.key"), path + ":3", "tls.key_file"},
		{"WARN", msg, filepath.Join(dir, "world-readable.json"), "0644", "chmod 600 " + filepath.Join(dir, "world-readable.json"), path + ":6", "tenants[0].credentials_file"},
		{"WARN", msg, filepath.Join(dir, "globex.secret"), "0640", "chmod 600 " + filepath.Join(dir, "globex.secret"), path + ":9", "tenants[1].client_secret_file"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("warnings:\n got %+v\nwant %+v", got, want)
	}
	if strings.Contains(logs.String(), "not-real") || strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Errorf("warnings leak a secret: %s", logs.String())
	}

	// The same with strict_file_permissions is an error, at the first file.
	if err := os.WriteFile(path, []byte("strict_file_permissions: true\n"+yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = config.LoadWith(path, config.Options{Now: now})
	if _, ok := errors.AsType[*creds.PermissionError](err); !ok || !strings.HasPrefix(err.Error(), "config: "+path+":4: tls.key_file: ") {
		t.Errorf("strict: err = %v", err)
	}
}

func TestErrorAt(t *testing.T) {
	dir := securityDir(t)
	yaml := "tenants:\n  - name: acme\n    credentials_file: acme.json\n" + // 1-3
		"callers:\n" + // 4
		"  - name: ci\n" + // 5
		"    api_key_sha256: " + keyDigest + "\n" + // 6
		"    tenants:\n" + // 7
		"      - acme\n" + // 8
		"      - 'a b'\n" // 9
	cfg, err := config.ParseWith([]byte(yaml), "broker.yaml", dir, config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	cause := errors.New("problem")
	for field, want := range map[string]string{
		"callers[0].tenants[1]":     "config: broker.yaml:9: callers[0].tenants[1]: problem",
		"callers[0].tenants":        "config: broker.yaml:7: callers[0].tenants: problem",
		"callers[0]":                "config: broker.yaml:5: callers[0]: problem",
		"callers[0].scopes[3]":      "config: broker.yaml:5: callers[0].scopes[3]: problem",
		"callers[0].api_key_sha256": "config: broker.yaml:6: callers[0].api_key_sha256: problem",
		"callers[7]":                "config: broker.yaml:4: callers[7]: problem",
		"elsewhere":                 "config: broker.yaml: elsewhere: problem",
	} {
		err := cfg.ErrorAt(field, cause)
		if err.Error() != want {
			t.Errorf("ErrorAt(%q) = %s, want %s", field, err, want)
		}
		if !errors.Is(err, cause) {
			t.Errorf("ErrorAt(%q) does not wrap the cause", field)
		}
	}
}

// TestErrorAtMergedCallers: callers set through a YAML merge key have no
// node of their own; ErrorAt then gives no line instead of panicking.
func TestErrorAtMergedCallers(t *testing.T) {
	yaml := "tenants:\n  - name: acme\n    credentials_file: acme.json\n" +
		"<<: {callers: [{name: ci, api_key_sha256: " + keyDigest + ", tenants: [acme]}]}\n"
	cfg, err := config.ParseWith([]byte(yaml), "broker.yaml", securityDir(t), config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Callers) != 1 {
		t.Fatalf("callers = %+v", cfg.Callers)
	}
	if err := cfg.ErrorAt("callers[0].tenants[0]", errors.New("problem")); err.Error() != "config: broker.yaml: callers[0].tenants[0]: problem" {
		t.Errorf("ErrorAt = %v", err)
	}
}

func TestFromEnvInsecureAuthServer(t *testing.T) {
	env := map[string]string{"KOGNIC_CLIENT_ID": "env-id", "KOGNIC_CLIENT_SECRET": "env-secret-not-real", "KOGNIC_AUTH_SERVER": "http://auth.example.com"}
	_, err := config.FromEnvWith(lookup(env), config.Options{Now: now})
	want := "config: KOGNIC_AUTH_SERVER: insecure upstream URL http://auth.example.com: http sends the client secret in clear text; use https (http is accepted only for localhost and loopback addresses), or a config file whose tenant sets allow_insecure_http: true"
	if err == nil || err.Error() != want {
		t.Fatalf("error:\n got %v\nwant %s", err, want)
	}
	if !errors.Is(err, upstream.ErrInsecureURL) {
		t.Error("error does not wrap upstream.ErrInsecureURL")
	}
	for _, ok := range []string{"http://localhost:8080", "http://127.0.0.1:9", "http://[::1]:9", "https://auth.example.com"} {
		env["KOGNIC_AUTH_SERVER"] = ok
		if _, err := config.FromEnvWith(lookup(env), config.Options{Now: now}); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

func TestFromEnvCredentialsFilePermissions(t *testing.T) {
	dir := securityDir(t)
	var logs bytes.Buffer
	_, err := config.FromEnvWith(lookup(map[string]string{"KOGNIC_CREDENTIALS": filepath.Join(dir, "world-readable.json")}),
		config.Options{Now: now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "world-readable.json") {
		t.Errorf("no warning about the credentials file: %s", logs.String())
	}
	logs.Reset()
	if _, err := config.FromEnvWith(lookup(map[string]string{"KOGNIC_CREDENTIALS": filepath.Join(dir, "acme.json")}),
		config.Options{Now: now, Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil || logs.Len() != 0 {
		t.Errorf("0600 file: err %v, logs %s", err, logs.String())
	}
}
