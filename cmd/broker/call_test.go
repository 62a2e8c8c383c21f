package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// authzRecorder is a loopback server that records the Authorization header
// of every request and answers with handle.
type authzRecorder struct {
	*httptest.Server
	mu    sync.Mutex
	authz []string
}

func startAuthzRecorder(t *testing.T, addr string, handle http.HandlerFunc) *authzRecorder {
	t.Helper()
	r := &authzRecorder{}
	r.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.authz = append(r.authz, req.Header.Get("Authorization"))
		r.mu.Unlock()
		handle(w, req)
	}))
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	r.Listener.Close()
	r.Listener = lis
	r.Start()
	t.Cleanup(r.Close)
	return r
}

// seen returns how many requests came and how many had Authorization.
func (r *authzRecorder) seen() (requests, withAuthz int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.authz {
		if a != "" {
			withAuthz++
		}
	}
	return len(r.authz), withAuthz
}

// TestCallRedirectGetsNoToken runs `broker call` through the secured broker
// against an API that redirects, with every redirect status, to another
// loopback address that answers 401: that host must see no token, and its
// 401 must not make the broker replace the tenant's token (the audit trail
// shows no InvalidateToken).
func TestCallRedirectGetsNoToken(t *testing.T) {
	s := brokertest.StartSecured(t)
	keyFile := filepath.Join(s.Dir, "ci.key")
	testpki.WriteFile(t, keyFile, []byte(s.APIKey+"\n"))
	other := startAuthzRecorder(t, "127.0.0.2:0", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "who are you?", http.StatusUnauthorized)
	})
	api := startAuthzRecorder(t, "127.0.0.1:0", func(w http.ResponseWriter, r *http.Request) {
		var code int
		fmt.Sscan(r.URL.Query().Get("code"), &code)
		http.Redirect(w, r, other.URL+"/elsewhere", code)
	})
	for _, code := range []int{301, 302, 303, 307, 308} {
		var stdout, stderr strings.Builder
		err := run(t.Context(), []string{"call", "get", api.URL + "/v1/thing?" + url.Values{"code": {fmt.Sprint(code)}}.Encode(),
			"--addr", s.Addr, "--tenant", "team-a", "--tls-ca", filepath.Join(s.Dir, "broker-ca.pem"), "--api-key-file", keyFile, "--timeout", "10s"},
			envFunc(), &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "401 Unauthorized: who are you?") {
			t.Errorf("%d: error %v, want the other host's 401", code, err)
		}
	}
	if n, withAuthz := api.seen(); n != 5 || withAuthz != 5 {
		t.Errorf("the API got %d requests, %d with a token; want 5 with", n, withAuthz)
	}
	if n, withAuthz := other.seen(); n != 5 || withAuthz != 0 {
		t.Errorf("the other host got %d requests, %d with Authorization; want 5 without", n, withAuthz)
	}
	gets := 0
	for _, r := range s.AuditRecords() {
		switch {
		case strings.HasSuffix(r.Method, "/InvalidateToken"):
			t.Errorf("audit: %s by %s at %s: the other host's 401 replaced the token", r.Method, r.Caller, r.Time)
		case strings.HasSuffix(r.Method, "/GetToken"), strings.HasSuffix(r.Method, "/WatchToken"):
			gets++
		}
	}
	if gets < 5 {
		t.Errorf("audit: %d token deliveries for 5 calls; the trail is not what this test reads", gets)
	}
}
