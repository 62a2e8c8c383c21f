//go:build unix

package daemon_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// mkfifo replaces the file at path by a named pipe.
func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestWatchedFIFODoesNotBlock: a watched secret file, then the config file
// itself, replaced by a FIFO at runtime is an error naming the path and
// its type (the tenant keeps its running configuration, counted as an
// error), and the watcher and SIGHUP go on: a later change applies
// (before: the watcher blocked in open(2) for good, every later reload
// was lost and shutdown never ended).
func TestWatchedFIFODoesNotBlock(t *testing.T) {
	k := startKeyed(t, false)
	keyed := brokertest.Bearer(t.Context(), k.key)
	secret := filepath.Join(filepath.Dir(k.path), "idp.secret")
	mkfifo(t, secret)
	waitFor(t, "the FIFO reported", func() bool {
		for _, l := range logLines(k.logs, "tenant's files could not be loaded; the tenant keeps its running configuration, the other tenants' changes apply") {
			if strings.Contains(fmt.Sprint(l["error"]), secret+": cannot open file: is a named pipe (FIFO), not a regular file") {
				return true
			}
		}
		return false
	})
	if n := reloads(t, k.d, "error"); n != 1 {
		t.Errorf("error reloads = %v, want 1", n)
	}
	if _, err := k.api.GetToken(keyed, &tbv1.GetTokenRequest{Tenant: "acme"}); err != nil {
		t.Errorf("acme with its running configuration: %v", err)
	}

	// The watcher is alive: a new tenant in the config file is added.
	dir := filepath.Dir(k.path)
	testpki.WriteFile(t, filepath.Join(dir, "beta.secret"), []byte("FAKE-beta-secret\n"))
	beta := strings.Replace(k.yaml, "callers:", "  - name: beta\n    token_url: http://127.0.0.1:1/token\n    client_id: beta\n    client_secret_file: beta.secret\ncallers:", 1)
	testpki.WriteFile(t, k.path, []byte(beta))
	waitFor(t, "tenant beta added", func() bool {
		resp, err := k.api.ListTenants(keyed, &tbv1.ListTenantsRequest{})
		return err == nil && len(resp.GetTenants()) == 2
	})

	// SIGHUP does not block either.
	done := make(chan error, 1)
	go func() { done <- k.d.Reread() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Reread blocked")
	}

	// The config file itself.
	mkfifo(t, k.path)
	waitFor(t, "the config FIFO reported", func() bool {
		for _, l := range logLines(k.logs, "config reload failed; keeping the running configuration") {
			if strings.Contains(fmt.Sprint(l["error"]), k.path+": is a named pipe (FIFO), not a regular file") {
				return true
			}
		}
		return false
	})
	if _, err := k.api.GetToken(keyed, &tbv1.GetTokenRequest{Tenant: "acme"}); err != nil {
		t.Errorf("acme after the config FIFO: %v", err)
	}
}
