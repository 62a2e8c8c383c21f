package daemon_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// TestIdPRequestsPerHostBound: limits.max_idp_requests_per_host bounds
// the token requests in flight to one identity-provider host, over all
// tenants that share it (issue 11: a stated, configurable bound).
func TestIdPRequestsPerHostBound(t *testing.T) {
	const tenants, bound = 8, 2
	var inFlight, peak, served atomic.Int64
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(30 * time.Millisecond) // the IdP's latency, so that requests overlap
		served.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("tok-%d", served.Load()), "token_type": "Bearer", "expires_in": 3600})
	}))
	t.Cleanup(idp.Close)

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s"), []byte("per-host-test-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nwatch:\n  enabled: false\nlimits:\n  max_idp_requests_per_host: %d\ntenants:\n", bound)
	for i := range tenants {
		fmt.Fprintf(&b, "  - {name: t%d, token_url: %s/token, client_id: c%d, client_secret_file: s}\n", i, idp.URL, i)
	}
	path := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	d := runFile(t, path, io.Discard, io.Discard)
	c := api(t, d)
	var wg sync.WaitGroup
	for i := range tenants {
		wg.Go(func() {
			if _, err := c.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: fmt.Sprintf("t%d", i)}); err != nil {
				t.Errorf("t%d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > bound || p < 1 {
		t.Errorf("peak concurrent IdP requests %d, want 1..%d", p, bound)
	}
	if s := served.Load(); s < tenants {
		t.Errorf("%d IdP requests served for %d tenants", s, tenants)
	}
}
