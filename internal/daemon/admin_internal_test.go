package daemon

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
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

// TestAdminConnectionCap: the admin listener serves at most adminMaxConns
// connections at once (issue D7); a further one is served only after one
// of them closes.
func TestAdminConnectionCap(t *testing.T) {
	src := statusFunc(func() []broker.TenantInfo { return nil })
	a, err := newAdmin("127.0.0.1:0", newMetrics(), src, func() bool { return true }, "test", slog.New(slog.DiscardHandler))
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
	// Hold adminMaxConns keep-alive connections, each proven accepted by
	// one answered request.
	held := make([]net.Conn, 0, adminMaxConns)
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for range adminMaxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get := func(timeout time.Duration) error {
		client := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(300 * time.Millisecond); err == nil {
		t.Fatalf("connection %d was served while %d were open", adminMaxConns+1, adminMaxConns)
	}
	held[0].Close()
	if err := get(10 * time.Second); err != nil {
		t.Fatalf("after one connection closed: %v", err)
	}
}

type statusFunc func() []broker.TenantInfo

func (f statusFunc) Tenants() []broker.TenantInfo { return f() }
