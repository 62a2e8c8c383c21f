package clientlib_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tokenbroker/tokenbroker/clientlib"
)

// newTestClient returns an http.Client over a Transport with its own base
// transport, torn down with the test.
func newTestClient(t testing.TB, src *clientlib.Source) *http.Client {
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	return &http.Client{Transport: clientlib.NewTransport(src, clientlib.WithBaseTransport(base))}
}

func get(t testing.TB, hc *http.Client, url string) int {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func TestTransportRetriesOnceAfter401(t *testing.T) {
	s := startStack(t, stackConfig{})
	src := newSource(t, s)
	res := startResource(t, s.IdP, s.Client.ID)
	res.rejectFirst = true
	hc := newTestClient(t, src)

	resp, err := hc.Post(res.URL, "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello, "+s.Client.ID {
		t.Fatalf("POST = %d %q, want 200 after one retry", resp.StatusCode, body)
	}
	seen, bodies := res.Seen(), res.Bodies()
	cur, _ := s.Current(t.Context())
	if len(seen) != 2 || seen[0] == seen[1] || seen[1] != cur.AccessToken {
		t.Fatalf("the resource server saw %d requests; want the rejected token, then the broker's new one", len(seen))
	}
	if bodies[0] != "payload" || bodies[1] != "payload" {
		t.Fatalf("bodies = %q, want the payload twice", bodies)
	}
	if n := s.Calls("InvalidateToken"); n != 1 {
		t.Fatalf("InvalidateToken calls = %d, want 1", n)
	}
	if tok, _ := src.Token(); tok.AccessToken != cur.AccessToken {
		t.Fatal("the Source did not adopt the replacement")
	}
}

// onlyReader hides strings.Reader so that http.NewRequest sets no GetBody.
type onlyReader struct{ io.Reader }

func TestTransportUnreplayableBodyNotRetried(t *testing.T) {
	s := startStack(t, stackConfig{})
	src := newSource(t, s)
	res := startResource(t, s.IdP, s.Client.ID)
	res.rejectFirst = true
	hc := newTestClient(t, src)

	req, _ := http.NewRequestWithContext(t.Context(), "POST", res.URL, onlyReader{strings.NewReader("once")})
	if req.GetBody != nil {
		t.Fatal("test setup: GetBody is set")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || len(res.Seen()) != 1 {
		t.Fatalf("POST = %d after %d requests, want the 401 after 1", resp.StatusCode, len(res.Seen()))
	}
	// The token was still reported, so the next request succeeds.
	if n := s.Calls("InvalidateToken"); n != 1 {
		t.Fatalf("InvalidateToken calls = %d, want 1", n)
	}
	if code := get(t, hc, res.URL); code != 200 {
		t.Fatalf("next GET = %d, want 200", code)
	}
	if n := s.Calls("InvalidateToken"); n != 1 {
		t.Fatalf("InvalidateToken calls = %d, want still 1", n)
	}
}

func TestTransportRetriesOnlyOnce(t *testing.T) {
	s := startStack(t, stackConfig{})
	src := newSource(t, s)
	res := startResource(t, s.IdP, "someone-else") // rejects every token
	hc := newTestClient(t, src)
	if code := get(t, hc, res.URL); code != http.StatusUnauthorized {
		t.Fatalf("GET = %d, want 401", code)
	}
	if n := len(res.Seen()); n != 2 {
		t.Fatalf("the resource server saw %d requests, want 2", n)
	}
}

func TestTransportConcurrent401(t *testing.T) {
	const n = 100
	s := startStack(t, stackConfig{})
	src := newSource(t, s)
	res := startResource(t, s.IdP, s.Client.ID)
	old, _ := src.Token()
	res.reject[old.AccessToken] = true
	// Hold every rejection until all n requests have arrived with the old
	// token, so that the 401s really are concurrent.
	var arrived atomic.Int64
	all := make(chan struct{})
	res.hold = func() {
		if arrived.Add(1) == n {
			close(all)
		}
		<-all
	}
	base := &http.Transport{MaxIdleConnsPerHost: n}
	t.Cleanup(base.CloseIdleConnections)
	hc := &http.Client{Transport: clientlib.NewTransport(src, clientlib.WithBaseTransport(base))}

	var wg sync.WaitGroup
	codes := make(chan int, n)
	for range n {
		wg.Go(func() {
			resp, err := hc.Get(res.URL)
			if err != nil {
				codes <- -1
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("a request ended with %d, want 200", c)
		}
	}
	if got := s.Calls("InvalidateToken"); got != 1 {
		t.Fatalf("InvalidateToken calls = %d, want 1", got)
	}
	if got := s.IdP.RequestsFor(s.Client.ID); got != 2 {
		t.Fatalf("IdP requests = %d, want 2", got)
	}
}

// countingBase answers 200 without a network and records the requests.
type countingBase struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (c *countingBase) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	c.mu.Lock()
	c.reqs = append(c.reqs, r)
	c.mu.Unlock()
	return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
}

type closeTracker struct {
	io.Reader
	closed bool
}

func (c *closeTracker) Close() error { c.closed = true; return nil }

func TestTransportPlainHTTP(t *testing.T) {
	s := startStack(t, stackConfig{})
	src := newSource(t, s)
	tok, _ := src.Token()
	for _, tc := range []struct {
		url   string
		allow bool
		ok    bool
	}{
		{"https://api.example.com/x", false, true},
		{"http://127.0.0.1:8080/x", false, true},
		{"http://[::1]:8080/x", false, true},
		{"http://localhost/x", false, true},
		{"http://api.example.com/x", false, false},
		{"http://10.0.0.1/x", false, false},
		{"http://localhost./x", false, false},
		{"http://api.localhost/x", false, false},
		{"http://api.example.com/x", true, true},
	} {
		t.Run(tc.url, func(t *testing.T) {
			base := &countingBase{}
			opts := []clientlib.TransportOption{clientlib.WithBaseTransport(base)}
			if tc.allow {
				opts = append(opts, clientlib.WithInsecureHTTP())
			}
			tr := clientlib.NewTransport(src, opts...)
			body := &closeTracker{Reader: strings.NewReader("x")}
			req, _ := http.NewRequestWithContext(t.Context(), "POST", tc.url, body)
			req.Header.Set("X-Keep", "1")
			resp, err := tr.RoundTrip(req)
			if !tc.ok {
				if !errors.Is(err, clientlib.ErrInsecureTransport) || len(base.reqs) != 0 {
					t.Fatalf("RoundTrip = %v with %d sent; want ErrInsecureTransport and nothing sent", err, len(base.reqs))
				}
				if !strings.Contains(err.Error(), "http://"+req.URL.Host) {
					t.Fatalf("error %q does not name the URL", err)
				}
				if !body.closed {
					t.Fatal("the request body was not closed")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			sent := base.reqs[0]
			if got := sent.Header.Get("Authorization"); got != "Bearer "+tok.AccessToken || sent.Header.Get("X-Keep") != "1" {
				t.Fatal("the sent request lacks the token or the caller's header")
			}
			if req.Header.Get("Authorization") != "" {
				t.Fatal("the caller's request was modified")
			}
		})
	}
}

func TestTransportAfterClose(t *testing.T) {
	s := startStack(t, stackConfig{})
	src := newSource(t, s)
	hc := newTestClient(t, src)
	_ = src.Close()
	_, err := hc.Get("https://api.example.com/")
	if !errors.Is(err, clientlib.ErrClosed) {
		t.Fatalf("GET after Close: %v, want ErrClosed", err)
	}
}
