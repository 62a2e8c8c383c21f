package daemon

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// TestReadiness: ready once every tenant holds a valid token or failed
// permanently; pending and transient failures hold it back until then;
// draining and an unwritable audit trail withdraw it.
func TestReadiness(t *testing.T) {
	tenant := func(name string, st broker.State, err error) broker.TenantInfo {
		return broker.TenantInfo{Name: name, Status: broker.Status{State: st, LastError: err}}
	}
	transient := &upstream.Error{StatusCode: 503, Err: errors.New("unavailable")}
	rejected := &upstream.Error{StatusCode: 401, Code: "invalid_client", Permanent: true}
	tenants := []broker.TenantInfo{
		tenant("a", broker.StateReady, nil),
		tenant("b", broker.StatePending, nil),
		tenant("c", broker.StateFailing, transient),
	}
	serving := true
	r := readiness{tenants: func() []broker.TenantInfo { return tenants }, serving: func() bool { return serving }}
	if ok, why := r.check(); ok || why != "waiting for tenants: b (pending), c (failing)" {
		t.Errorf("with a pending and a transiently failing tenant: %v %q", ok, why)
	}
	tenants[1] = tenant("b", broker.StateStale, transient)
	tenants[2] = tenant("c", broker.StateFailing, rejected)
	if ok, why := r.check(); !ok {
		t.Errorf("with a stale and a rejected tenant: not ready: %q", why)
	}
	tenants[0] = tenant("a", broker.StateFailing, transient) // later failures keep it ready
	if ok, _ := r.check(); !ok {
		t.Error("readiness withdrawn by a later transient failure")
	}
	serving = false
	if ok, why := r.check(); ok || why != "not serving: the audit trail cannot be written" {
		t.Errorf("audit failing: %v %q", ok, why)
	}
	r.draining.Store(true)
	if ok, why := r.check(); ok || why != "draining: shutting down" {
		t.Errorf("draining: %v %q", ok, why)
	}
}

// TestAdminConnectionCap: one peer address holds at most
// adminMaxConnsPerIP admin connections (a further one is closed at once),
// and while it holds them a probe from another address is served at once
// (red team: 2,000 idle connections from one address kept /healthz
// unanswered for as long as they were held).
func TestAdminConnectionCap(t *testing.T) {
	src := statusFunc(func() []broker.TenantInfo { return nil })
	a, err := newAdmin(config.Admin{Listen: "127.0.0.1:0"}, newMetrics(), src, func() bool { return true }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.serve() }()
	t.Cleanup(func() {
		a.shutdown()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	addr := a.lis.Addr().String()
	flooder := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	// The flooding address holds adminMaxConnsPerIP keep-alive
	// connections, each proven accepted by one answered request.
	held := make([]net.Conn, 0, adminMaxConnsPerIP)
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for range adminMaxConnsPerIP {
		c, err := flooder.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// Its next connection is closed without an answer, at once.
	extra, err := flooder.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(extra, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(extra), nil); err == nil {
		t.Errorf("connection %d from one address was served", adminMaxConnsPerIP+1)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("connection %d from one address was held open, not closed: %v", adminMaxConnsPerIP+1, err)
	}
	// Another address is served meanwhile.
	probe := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := probe.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("probe from another address while one address holds its cap: %v", err)
	}
	resp.Body.Close()
}

type statusFunc func() []broker.TenantInfo

func (f statusFunc) Tenants() []broker.TenantInfo { return f() }

// TestAdminPprofOnlyWhenEnabled: Go's profiles are served on the admin
// listener only with admin.pprof, and never take over the status page.
func TestAdminPprofOnlyWhenEnabled(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		src := statusFunc(func() []broker.TenantInfo { return nil })
		a, err := newAdmin(config.Admin{Listen: "127.0.0.1:0", Pprof: enabled}, newMetrics(), src, func() bool { return true }, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- a.serve() }()
		base := "http://" + a.lis.Addr().String()
		for path, wantOn := range map[string]int{"/debug/pprof/goroutine?debug=1": 200, "/debug/pprof/heap": 200, "/healthz": 200} {
			resp, err := http.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := wantOn
			if !enabled && strings.HasPrefix(path, "/debug/") {
				want = http.StatusNotFound
			}
			if resp.StatusCode != want {
				t.Errorf("pprof=%v: GET %s = %d, want %d", enabled, path, resp.StatusCode, want)
			}
			if enabled && path == "/debug/pprof/goroutine?debug=1" && !strings.Contains(string(body), "goroutine profile") {
				t.Errorf("pprof=%v: %s does not look like a goroutine profile: %.80q", enabled, path, body)
			}
		}
		a.shutdown()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
