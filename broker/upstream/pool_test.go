package upstream

import (
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

func TestPoolsShareByHostAndCAs(t *testing.T) {
	p := NewPools(nil, 4)
	a, err := p.Client("http://127.0.0.1:1/token", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := p.Client("http://127.0.0.1:1/other", nil)
	if a != b {
		t.Error("two token URLs on one host got different pools; want one shared connection pool")
	}
	c, _ := p.Client("http://127.0.0.1:2/token", nil)
	if a == c {
		t.Error("two hosts share a pool")
	}
	roots1, roots2 := x509.NewCertPool(), x509.NewCertPool() // equal contents, as two reads of one ca_file
	d, _ := p.Client("http://127.0.0.1:1/token", roots1)
	e, _ := p.Client("http://127.0.0.1:1/token", roots2)
	if d == a {
		t.Error("custom CAs share the system-roots pool")
	}
	if d != e {
		t.Error("equal CA sets got different pools; tenants with the same ca_file must share one")
	}
	if _, err := NewPools(&http.Client{Transport: roundTripFunc(nil)}, 1).Client("https://127.0.0.1:1/", roots1); err == nil {
		t.Error("custom CAs over a non-*http.Transport: want an error")
	}
}

func TestPoolsBoundConcurrentFetchesPerHost(t *testing.T) {
	const bound, fetches = 3, 12
	var inflight, peak atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for pk := peak.Load(); n > pk && !peak.CompareAndSwap(pk, n); pk = peak.Load() {
		}
		time.Sleep(20 * time.Millisecond) // overlap the requests
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"tok","token_type":"Bearer","expires_in":3600}`))
	}))
	defer srv.Close()
	pools := NewPools(nil, bound)
	hc, err := pools.Client(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range fetches {
		c, err := New(Config{TokenURL: srv.URL, ClientID: "c" + string(rune('a'+i)), ClientSecret: creds.Secret("s"), HTTPClient: hc})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if _, err := c.Fetch(t.Context(), nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := peak.Load(); got > bound || got < 2 {
		t.Errorf("peak concurrent requests to the host = %d; want at most %d (and some overlap)", got, bound)
	}
	// A fetch that cannot get a slot ends with its context.
	slots := hc.Transport.(*limitTransport)
	for range bound {
		slots.sem <- struct{}{}
	}
	c, _ := New(Config{TokenURL: srv.URL, ClientID: "x", ClientSecret: creds.Secret("s"), HTTPClient: hc})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Fetch(ctx, nil); err == nil {
		t.Error("fetch with every slot taken and an ending context: want an error")
	}
}
