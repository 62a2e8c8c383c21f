package daemon

import (
	"errors"
	"testing"

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
