//go:build unix

package authn

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// TestReloaderRefusesFIFO: a TLS file replaced by a FIFO makes Reload
// (SIGHUP, the watcher, the reload interval) fail at once, naming the file
// and keeping the current certificate, instead of blocking in open(2).
func TestReloaderRefusesFIFO(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "ca")
	ca.Server(t).WriteFiles(t, dir, "server")
	testpki.WriteFile(t, filepath.Join(dir, "clients.pem"), ca.CertPEM)
	files := TLSFiles{CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key"), ClientCAFile: filepath.Join(dir, "clients.pem")}
	r, err := NewReloader(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{files.CertFile, files.KeyFile, files.ClientCAFile} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := r.Reload(); done <- err }()
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("Reload blocked on the FIFO at %s", f)
		}
		if !errors.Is(err, creds.ErrNotRegular) || !strings.Contains(err.Error(), f+": is a named pipe (FIFO)") {
			t.Errorf("Reload with a FIFO at %s: %v", f, err)
		}
		if _, err := NewReloader(files, nil); !errors.Is(err, creds.ErrNotRegular) {
			t.Errorf("NewReloader with a FIFO at %s: %v", f, err)
		}
		_ = os.Remove(f)
		testpki.WriteFile(t, f, data)
	}
	if _, err := r.Reload(); err != nil {
		t.Errorf("Reload of the restored files: %v", err)
	}
}
