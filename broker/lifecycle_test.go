package broker_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// hangingFetcher ignores its context until released: the worst Fetcher a
// Shutdown must still return from.
type hangingFetcher struct {
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (f *hangingFetcher) Fetch(context.Context, []string) (upstream.Grant, error) {
	f.once.Do(func() { close(f.started) })
	<-f.release
	return upstream.Grant{}, errors.New("released")
}

func TestCloseIsIdempotentAndEndsWatches(t *testing.T) {
	e := newEnv(t, broker.Config{})
	e.mustToken(nil, 0)
	w, err := e.broker.Watch("acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = e.broker.Close() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Close %d: %v", i, err)
		}
	}
	if err := awaitEnd(t, w); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("watch ended with %v, want ErrClosed", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("Watch.Close after the broker closed: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Watch.Close: %v", err)
	}
	if _, err := e.token(t.Context(), nil, 0); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Token after Close: %v, want ErrClosed", err)
	}
	if err := e.broker.Shutdown(t.Context()); err != nil {
		t.Errorf("Shutdown after Close: %v", err)
	}
}

func TestShutdownReturnsWhenCtxEndsAndCloseWaits(t *testing.T) {
	f := &hangingFetcher{started: make(chan struct{}), release: make(chan struct{})}
	b, err := broker.New(broker.Config{Tenants: []broker.Tenant{{Name: "acme", Fetcher: f}}})
	if err != nil {
		t.Fatal(err)
	}
	<-f.started
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with a fetch that ignores its context: %v, want context.Canceled", err)
	}
	if _, err := b.Get(t.Context(), broker.Request{Tenant: "acme"}); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Get after a timed-out Shutdown: %v, want ErrClosed", err)
	}
	close(f.release)
	if err := b.Close(); err != nil { // waits for the released fetch
		t.Errorf("Close after release: %v", err)
	}
}
