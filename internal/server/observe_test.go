package server_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/broker"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/server"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// panicking is a broker whose Get panics: a fault no real broker
// produces on demand.
type panicking struct{ server.Broker }

func (panicking) Get(context.Context, broker.Request) (*broker.Token, error) { panic("boom") }

// counted is server.Metrics recording every call by method.
type counted struct {
	mu sync.Mutex
	by map[string]*methodCount
}

type methodCount struct {
	mu                      *sync.Mutex
	typ                     string
	started, received, sent int
	handled                 map[codes.Code]int
}

func (c *counted) Method(service, method, typ string) server.MethodMetrics {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := &methodCount{mu: &c.mu, typ: typ, handled: map[codes.Code]int{}}
	c.by[service+"/"+method] = m
	return m
}

func (m *methodCount) Started()  { m.mu.Lock(); m.started++; m.mu.Unlock() }
func (m *methodCount) Received() { m.mu.Lock(); m.received++; m.mu.Unlock() }
func (m *methodCount) Sent()     { m.mu.Lock(); m.sent++; m.mu.Unlock() }
func (m *methodCount) Handled(code codes.Code, _ time.Duration) {
	m.mu.Lock()
	m.handled[code]++
	m.mu.Unlock()
}

func (c *counted) get(method string) methodCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.by[method]
	if m == nil {
		return methodCount{}
	}
	cp := *m
	cp.handled = map[codes.Code]int{}
	for k, v := range m.handled {
		cp.handled[k] = v
	}
	return cp
}

// TestPanicIsRecoveredCountedAndLogged: a handler that panics ends its
// call INTERNAL without a word of the panic to the client; the log says
// what panicked, the request log and the metrics count the call as
// INTERNAL (the recovery, before outermost, hid it from both), and the
// server goes on serving.
func TestPanicIsRecoveredCountedAndLogged(t *testing.T) {
	f := brokertest.Start(t)
	var logs logtest.Buffer
	m := &counted{by: map[string]*methodCount{}}
	srv := server.New(server.Config{Broker: panicking{f.Broker}, Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Metrics: m})
	api := serveOnLoopback(t, srv)

	_, err := api.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "acme"})
	brokertest.WantStatus(t, "GetToken whose handler panics", err, codes.Internal)
	if strings.Contains(err.Error(), "boom") {
		t.Errorf("the client learned the panic: %v", err)
	}
	if _, err := api.ListTenants(t.Context(), &tbv1.ListTenantsRequest{}); err != nil {
		t.Errorf("the next call: %v", err)
	}
	var panicLine, callLine map[string]any
	for ln := range strings.Lines(logs.String()) {
		var l map[string]any
		if json.Unmarshal([]byte(ln), &l) != nil {
			continue
		}
		switch {
		case l["msg"] == "panic in handler":
			panicLine = l
		case l["msg"] == "finished call" && l["grpc.method"] == "GetToken":
			callLine = l
		}
	}
	if panicLine == nil || panicLine["panic"] != "boom" || panicLine["level"] != "ERROR" {
		t.Errorf("panic log line = %v, want level ERROR, panic boom", panicLine)
	}
	if callLine == nil || callLine["grpc.code"] != "Internal" || callLine["level"] != "ERROR" {
		t.Errorf("request log line = %v, want level ERROR, grpc.code Internal", callLine)
	}
	got := m.get("tokenbroker.v1.TokenBrokerService/GetToken")
	if got.typ != "unary" || got.started != 1 || got.received != 1 || got.sent != 0 || got.handled[codes.Internal] != 1 {
		t.Errorf("GetToken metrics = %+v, want unary, 1 started, 1 received, 0 sent, 1 handled Internal", got)
	}
}

// TestMetricsCountEveryMethodFromTheStart: the server asks its metrics
// for every method it serves when it is built (their series exist before
// the first call), and counts a stream's messages.
func TestMetricsCountEveryMethodFromTheStart(t *testing.T) {
	f := brokertest.Start(t)
	m := &counted{by: map[string]*methodCount{}}
	srv := server.New(server.Config{Broker: f.Broker, Metrics: m})
	for method, typ := range map[string]string{
		"tokenbroker.v1.TokenBrokerService/GetToken":   "unary",
		"tokenbroker.v1.TokenBrokerService/WatchToken": "server_stream",
		"grpc.health.v1.Health/Check":                  "unary",
		"grpc.health.v1.Health/Watch":                  "server_stream",
	} {
		if got := m.get(method).typ; got != typ {
			t.Errorf("%s before any call: type %q, want %q", method, got, typ)
		}
	}
	api := serveOnLoopback(t, srv)
	stream, err := api.WatchToken(t.Context(), &tbv1.WatchTokenRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	got := m.get("tokenbroker.v1.TokenBrokerService/WatchToken")
	if got.started != 1 || got.received != 1 || got.sent < 1 {
		t.Errorf("WatchToken metrics = %+v, want 1 started, 1 received, at least 1 sent", got)
	}
}
