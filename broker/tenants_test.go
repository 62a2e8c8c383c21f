package broker_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

func TestSlowWatcherGetsLatestNotBacklog(t *testing.T) {
	e := newEnv(t, broker.Config{})
	w, err := e.broker.Watch("acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next(t, w, hasVersion(1))
	for v := uint64(2); v <= 4; v++ {
		e.clock.Advance(broker.ForcedRefreshInterval) // past the forced-refresh limit
		tok, err := e.broker.Invalidate(t.Context(), "acme", nil, e.mustToken(nil, 0).SHA256())
		if err != nil || tok.Version != v {
			t.Fatalf("invalidate: %v, version %d", err, tok.Version)
		}
	}
	<-w.Ready()
	u, _, _ := w.Next()
	if u.Token == nil || u.Token.Version != 4 {
		t.Fatalf("slow watcher first sees %+v, want the latest version 4", u)
	}
	if u, ok, _ := w.Next(); ok {
		t.Errorf("backlog: another update (version %d) queued", u.Token.Version)
	}
}

func TestTenantRemovalEndsWatches(t *testing.T) {
	e := newEnv(t, broker.Config{})
	w, err := e.broker.Watch("acme", []string{"read"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := e.broker.SetTenants(nil); err != nil {
		t.Fatal(err)
	}
	if err := awaitEnd(t, w); !errors.Is(err, broker.ErrTenantRemoved) {
		t.Errorf("watch ended with %v, want ErrTenantRemoved", err)
	}
	if _, err := e.token(t.Context(), nil, 0); !errors.Is(err, broker.ErrUnknownTenant) {
		t.Errorf("token of removed tenant: %v, want ErrUnknownTenant", err)
	}
}

func TestTenantHealth(t *testing.T) {
	var mu sync.Mutex
	changes := make(chan bool, 10)
	e := newEnv(t, broker.Config{OnTenantHealth: func(tenant string, serving bool) {
		mu.Lock()
		defer mu.Unlock()
		if tenant == "acme" {
			changes <- serving
		}
	}})
	if <-changes {
		t.Fatal("a new tenant reported serving before it had a token")
	}
	if !<-changes {
		t.Fatal("tenant did not become serving after its first token")
	}
	e.idp.RemoveClient(e.client.ID)
	e.clock.Advance(2 * time.Hour) // refreshes fail; the token expires
	if <-changes {
		t.Fatal("want not serving once the token expired")
	}
}

func TestTenantsCountsScopeSetsAndWatches(t *testing.T) {
	e := newEnv(t, broker.Config{})
	count := func() (int, int) {
		info := e.broker.Tenants()[0]
		return info.ScopeSets, info.Watches
	}
	e.mustToken(nil, 0)
	if sets, watches := count(); sets != 1 || watches != 0 {
		t.Fatalf("after a default token: %d scope sets, %d watches; want 1, 0", sets, watches)
	}
	e.mustToken([]string{"a"}, 0)
	w1, err := e.broker.Watch("acme", []string{"b"})
	if err != nil {
		t.Fatal(err)
	}
	w2, err := e.broker.Watch("acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	if sets, watches := count(); sets != 3 || watches != 2 {
		t.Errorf("with sets {}, {a}, {b} and two watches: %d scope sets, %d watches; want 3, 2", sets, watches)
	}
	_ = w1.Close()
	_ = w2.Close()
	if _, watches := count(); watches != 0 {
		t.Errorf("after closing both watches: %d watches, want 0", watches)
	}
}

// Watchers of one key receive each state with one Shared value: a
// consumer converts an update once for all of them, also for a watcher
// that starts while the state is current.
func TestWatchersShareEachUpdate(t *testing.T) {
	e := newEnv(t, broker.Config{})
	var ws []*broker.Watch
	for range 3 {
		w, err := e.broker.Watch("acme", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		ws = append(ws, w)
	}
	builds := 0
	build := func() any { builds++; return new(int) }
	shared := func(v uint64) any {
		var first any
		for i, w := range ws {
			u := next(t, w, hasVersion(v))
			got := u.Shared(build)
			if i > 0 && got != first {
				t.Errorf("version %d: watcher %d got its own shared value", v, i)
			}
			first = got
		}
		return first
	}
	v1 := shared(1)
	late, err := e.broker.Watch("acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if got := next(t, late, hasVersion(1)).Shared(build); got != v1 {
		t.Error("a watcher that started on the current state got its own shared value")
	}
	ws = append(ws, late)
	e.clock.Advance(broker.ForcedRefreshInterval)
	if _, err := e.broker.Invalidate(t.Context(), "acme", nil, e.mustToken(nil, 0).SHA256()); err != nil {
		t.Fatal(err)
	}
	if shared(2) == v1 {
		t.Error("a new state kept the old shared value")
	}
	if builds != 2 {
		t.Errorf("build ran %d times for 2 states watched by 4 watchers, want 2", builds)
	}
}

// An update still unread when the broker ends a watch is read first;
// the end follows (one signal channel carries both).
func TestWatchDeliversUnreadUpdateThenEnd(t *testing.T) {
	e := newEnv(t, broker.Config{})
	w, err := e.broker.Watch("acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next(t, w, hasVersion(1))
	e.clock.Advance(broker.ForcedRefreshInterval)
	if _, err := e.broker.Invalidate(t.Context(), "acme", nil, e.mustToken(nil, 0).SHA256()); err != nil {
		t.Fatal(err)
	}
	if err := e.broker.SetTenants(nil); err != nil {
		t.Fatal(err)
	}
	<-w.Ready()
	if u, ok, ended := w.Next(); !ok || ended || u.Token == nil || u.Token.Version != 2 {
		t.Fatalf("Next = %+v, %t, %t; want version 2, then the end", u, ok, ended)
	}
	if err := awaitEnd(t, w); !errors.Is(err, broker.ErrTenantRemoved) {
		t.Errorf("watch ended with %v, want ErrTenantRemoved", err)
	}
	if err := w.Close(); err != nil || !errors.Is(w.Err(), broker.ErrTenantRemoved) {
		t.Errorf("Close after the end: %v; Err %v, want ErrTenantRemoved kept", err, w.Err())
	}
}
