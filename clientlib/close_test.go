package clientlib_test

import (
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tokenbroker/tokenbroker/clientlib"
)

// sourceGoroutines counts the goroutines a Source started, those running
// its code other than Close.
func sourceGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "clientlib.(*Source).") && !strings.Contains(g, "clientlib.(*Source).Close") {
			n++
		}
	}
	return n
}

// closeConcurrently calls close from several goroutines at once and checks
// that every call returns nil and only after the Source's goroutines have
// ended.
func closeConcurrently(t *testing.T, close func() error) {
	t.Helper()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if n := sourceGoroutines(); n != 0 {
				t.Errorf("Close returned with %d Source goroutines running", n)
			}
		})
	}
	wg.Wait()
	if err := close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
}

func TestSourceCloseConcurrent(t *testing.T) {
	s := startStack(t, stackConfig{})
	src := newSource(t, s)
	if n := sourceGoroutines(); n == 0 {
		t.Fatal("a running Source shows no goroutine; the check below would prove nothing")
	}
	closeConcurrently(t, src.Close)
	if _, err := src.Token(); !errors.Is(err, clientlib.ErrClosed) {
		t.Fatalf("Token after Close: %v, want ErrClosed", err)
	}
}

// closeCounter is a base transport whose CloseIdleConnections is counted.
type closeCounter struct {
	http.RoundTripper
	closes atomic.Int32
}

func (c *closeCounter) CloseIdleConnections() { c.closes.Add(1) }

func TestHTTPClientCloseConcurrent(t *testing.T) {
	s := startStack(t, stackConfig{})
	res := startResource(t, s.IdP, s.Client.ID)
	base := &closeCounter{RoundTripper: &http.Transport{}}
	t.Cleanup(base.RoundTripper.(*http.Transport).CloseIdleConnections)
	hc, err := clientlib.NewHTTPClient(t.Context(), clientlib.WithBroker(s.Addr(), ""), clientlib.WithBaseTransport(base))
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := getBody(t, hc.Client(), res.URL); code != 200 {
		t.Fatalf("GET = %d", code)
	}
	closeConcurrently(t, hc.Close)
	if n := base.closes.Load(); n != 0 {
		t.Fatalf("Close closed the caller's base transport %d times; it must close only what it created", n)
	}
	if _, err := hc.Client().Get(res.URL); !errors.Is(err, clientlib.ErrClosed) {
		t.Fatalf("GET after Close: %v, want ErrClosed", err)
	}
}
