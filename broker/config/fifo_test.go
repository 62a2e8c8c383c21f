//go:build unix

package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// TestNamedPipeAtAnyPath: a FIFO at the config file's path or at any file
// it names (credentials_file, client_secret_file, ca_file, the tls files)
// is an error naming the path and its type, returned at once: open(2) of
// a FIFO waits for a writer, which hung the broker at start. A tenant's
// own file is confined to the tenant on a re-read.
func TestNamedPipeAtAnyPath(t *testing.T) {
	const tlsSection = "tls:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: clients.pem\n"
	for _, tc := range []struct {
		name, fifo, yaml string
		tenantFile       bool // a tenant's own file (Tenant.LoadErr on a re-read)
	}{
		{"config file", "broker.yaml", "", false},
		{"credentials_file", "acme.json", "tenants:\n  - name: acme\n    credentials_file: acme.json\n", true},
		{"client_secret_file", "acme.secret", "tenants:\n  - name: acme\n    client_id: id\n    client_secret_file: acme.secret\n", true},
		{"ca_file", "private-ca.pem", "tenants:\n  - name: acme\n    credentials_file: acme.json\n    ca_file: private-ca.pem\n", true},
		{"tls.cert_file", "server.crt", tlsSection + "tenants:\n  - name: acme\n    credentials_file: acme.json\n", false},
		{"tls.key_file", "server.key", tlsSection + "tenants:\n  - name: acme\n    credentials_file: acme.json\n", false},
		{"tls.client_ca_file", "clients.pem", tlsSection + "tenants:\n  - name: acme\n    credentials_file: acme.json\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := securityDir(t)
			path := filepath.Join(dir, "broker.yaml")
			if tc.yaml != "" {
				if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			fifo := filepath.Join(dir, tc.fifo)
			_ = os.Remove(fifo)
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, keep := range []bool{false, true} {
				cfg, err := loadWithin(t, path, config.Options{Now: now, KeepTenantsOnFileError: keep})
				if keep && tc.tenantFile {
					if err != nil || len(cfg.Tenants) != 1 {
						t.Fatalf("re-read: %v, want the tenant with its LoadErr", err)
					}
					err = cfg.Tenants[0].LoadErr
				}
				if err == nil || !strings.Contains(err.Error(), fifo+": is a named pipe (FIFO), not a regular file") && !strings.Contains(err.Error(), fifo+": cannot open file: is a named pipe (FIFO), not a regular file") {
					t.Errorf("keep=%v: error %v, want one naming %s as a named pipe", keep, err, fifo)
				}
				if !errors.Is(err, creds.ErrNotRegular) {
					t.Errorf("keep=%v: errors.Is(err, creds.ErrNotRegular) = false", keep)
				}
			}
		})
	}
}

// loadWithin is config.LoadWith, failing the test if it blocks.
func loadWithin(t *testing.T, path string, o config.Options) (*config.Config, error) {
	t.Helper()
	type result struct {
		cfg *config.Config
		err error
	}
	done := make(chan result, 1)
	go func() {
		cfg, err := config.LoadWith(path, o)
		done <- result{cfg, err}
	}()
	select {
	case r := <-done:
		return r.cfg, r.err
	case <-time.After(5 * time.Second):
		t.Fatalf("LoadWith blocked on a FIFO")
		return nil, nil
	}
}

func mkfifo(path string) error { return syscall.Mkfifo(path, 0o600) }
