package config_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/config"
)

// TestParseAdminAndShutdown covers the admin and shutdown sections: the
// defaults when absent, an explicit "" disabling the admin listener, and
// strict errors naming the field and the fix.
func TestParseAdminAndShutdown(t *testing.T) {
	const tenant = "tenants:\n  - name: acme\n    credentials_file: acme.json\n"
	tests := []struct {
		name      string
		yaml      string
		admin     string
		pprof     bool
		hosts     []string
		drain     time.Duration
		timeout   time.Duration
		wantError string
	}{
		{name: "defaults", yaml: tenant, admin: "127.0.0.1:9464", drain: 5 * time.Second, timeout: 10 * time.Second},
		{name: "set", yaml: tenant + "admin:\n  listen: 0.0.0.0:9000\nshutdown:\n  drain: 0s\n  timeout: 2s\n",
			admin: "0.0.0.0:9000", drain: 0, timeout: 2 * time.Second},
		{name: "pprof", yaml: tenant + "admin:\n  pprof: true\n", admin: "127.0.0.1:9464", pprof: true, drain: 5 * time.Second, timeout: 10 * time.Second},
		{name: "bad pprof", yaml: tenant + "admin:\n  pprof: yes please\n", wantError: "admin.pprof"},
		{name: "disabled", yaml: tenant + "admin:\n  listen: \"\"\n", admin: "", drain: 5 * time.Second, timeout: 10 * time.Second},
		{name: "empty sections keep defaults", yaml: tenant + "admin: {}\nshutdown: {}\n", admin: "127.0.0.1:9464", drain: 5 * time.Second, timeout: 10 * time.Second},
		{name: "unknown admin key", yaml: tenant + "admin:\n  address: x\n",
			wantError: `config: broker.yaml:5: admin: unknown key "address"; allowed keys: listen, pprof, hosts`},
		{name: "hosts", yaml: tenant + "admin:\n  hosts: [TokenBroker.Monitoring.svc, tb-0.tb]\n", admin: "127.0.0.1:9464",
			hosts: []string{"tokenbroker.monitoring.svc", "tb-0.tb"}, drain: 5 * time.Second, timeout: 10 * time.Second},
		{name: "hosts not a list", yaml: tenant + "admin:\n  hosts: tb.example\n",
			wantError: `config: broker.yaml:5: admin.hosts: must be a list of host names, got a string; write e.g. [tokenbroker.monitoring.svc, tokenbroker.example.com]`},
		{name: "host with port", yaml: tenant + "admin:\n  hosts: [tb.example, \"tb.example:9464\"]\n",
			wantError: `config: broker.yaml:5: admin.hosts[1]: "tb.example:9464" is not a host name; give the name clients put in the Host header, without scheme, port or wildcard, e.g. tokenbroker.monitoring.svc (IP literals and localhost are always accepted)`},
		{name: "wildcard host", yaml: tenant + "admin:\n  hosts: [\"*.example\"]\n", wantError: `admin.hosts[0]: "*.example" is not a host name`},
		{name: "URL host", yaml: tenant + "admin:\n  hosts: [\"http://tb.example\"]\n", wantError: `admin.hosts[0]: "http://tb.example" is not a host name`},
		{name: "bad admin listen", yaml: tenant + "admin:\n  listen: 9464\n",
			wantError: `admin.listen: "9464" is not host:port (missing port in address); use e.g. 127.0.0.1:9464`},
		{name: "bad drain", yaml: tenant + "shutdown:\n  drain: soon\n",
			wantError: `shutdown.drain: "soon" is not a duration; write e.g. 10s or 500ms`},
		{name: "negative drain", yaml: tenant + "shutdown:\n  drain: -1s\n",
			wantError: `shutdown.drain: -1s is too short; use at least 0s`},
		{name: "timeout too long", yaml: tenant + "shutdown:\n  timeout: 1h\n",
			wantError: `shutdown.timeout: 1h0m0s is too long; use at most 5m0s`},
		{name: "unknown shutdown key", yaml: tenant + "shutdown:\n  grace: 1s\n",
			wantError: `unknown key "grace"; allowed keys: drain, timeout`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.ParseWith([]byte(tc.yaml), "broker.yaml", "testdata", config.Options{Now: now})
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Admin.Hosts, tc.hosts) {
				t.Errorf("admin.hosts %q, want %q", cfg.Admin.Hosts, tc.hosts)
			}
			if cfg.Admin.Pprof != tc.pprof {
				t.Errorf("admin.pprof %v, want %v", cfg.Admin.Pprof, tc.pprof)
			}
			if cfg.Admin.Listen != tc.admin || cfg.Shutdown.Drain != tc.drain || cfg.Shutdown.Timeout != tc.timeout {
				t.Errorf("admin %q, shutdown %+v; want %q, drain %s, timeout %s", cfg.Admin.Listen, cfg.Shutdown, tc.admin, tc.drain, tc.timeout)
			}
		})
	}
}

// TestFromEnvOpsDefaults: running from the environment (no config file)
// gets the same admin and shutdown defaults as a file.
func TestFromEnvOpsDefaults(t *testing.T) {
	env := map[string]string{"KOGNIC_CLIENT_ID": "id", "KOGNIC_CLIENT_SECRET": "FAKE-secret"}
	cfg, err := config.FromEnvWith(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Listen != config.DefaultAdminListen || cfg.Shutdown.Drain != config.DefaultShutdownDrain || cfg.Shutdown.Timeout != config.DefaultShutdownTimeout {
		t.Errorf("admin %+v shutdown %+v, want the defaults", cfg.Admin, cfg.Shutdown)
	}
}

// TestParseOAuth: the oauth section is off when absent (or listen ""),
// its listen is a host:port, and its keys are strict.
func TestParseOAuth(t *testing.T) {
	const tenant = "tenants:\n  - name: acme\n    credentials_file: acme.json\n"
	for _, tc := range []struct {
		name, yaml, want, wantError string
	}{
		{name: "absent: off", yaml: tenant},
		{name: "empty section: off", yaml: tenant + "oauth: {}\n"},
		{name: "listen empty: off", yaml: tenant + "oauth:\n  listen: \"\"\n"},
		{name: "on", yaml: tenant + "oauth:\n  listen: 127.0.0.1:8443\n", want: "127.0.0.1:8443"},
		{name: "not host:port", yaml: tenant + "oauth:\n  listen: 8443\n",
			wantError: `config: broker.yaml:5: oauth.listen: "8443" is not host:port (missing port in address); use e.g. 127.0.0.1:8443`},
		{name: "unknown key", yaml: tenant + "oauth:\n  path: /token\n",
			wantError: `config: broker.yaml:5: oauth: unknown key "path"; allowed keys: listen`},
		{name: "not a mapping", yaml: tenant + "oauth: 127.0.0.1:8443\n", wantError: "oauth: must be a mapping with keys listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.ParseWith([]byte(tc.yaml), "broker.yaml", "testdata", config.Options{Now: now})
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.OAuth.Listen != tc.want {
				t.Errorf("oauth.listen %q, want %q", cfg.OAuth.Listen, tc.want)
			}
		})
	}
}
