package clientlib_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/clientlib"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// flaky answers the first failures requests of each method with status
// (plus headers), then 200 with the request body; it counts requests.
type flaky struct {
	mu       sync.Mutex
	n        map[string]int
	failures int
	status   int
	headers  http.Header
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.n[r.Method]++
	n := f.n[r.Method]
	f.mu.Unlock()
	for k, v := range f.headers {
		w.Header()[k] = v
	}
	if n <= f.failures {
		http.Error(w, "try later", f.status)
		return
	}
	w.Write(append([]byte("ok:"), body...))
}

func (f *flaky) count(m string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n[m]
}

func directClient(t *testing.T, opts ...clientlib.Option) *clientlib.HTTPClient {
	t.Helper()
	c := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{c}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	base := []clientlib.Option{env("KOGNIC_CLIENT_ID", c.ID, "KOGNIC_CLIENT_SECRET", c.Secret, "KOGNIC_AUTH_SERVER", idp.URL()),
		clientlib.WithRetryBackoff(time.Millisecond, 5*time.Millisecond)}
	return newHTTPClient(t, append(base, opts...)...)
}

func TestRetries(t *testing.T) {
	for _, tc := range []struct {
		name          string
		status        int
		failures      int
		method        string
		opts          []clientlib.Option
		wantStatus    int
		wantRequests  int
		header        http.Header
		idempotencyKy bool
	}{
		{name: "GET 503 twice then OK", status: 503, failures: 2, method: "GET", wantStatus: 200, wantRequests: 3},
		{name: "PUT 502 with a body", status: 502, failures: 1, method: "PUT", wantStatus: 200, wantRequests: 2},
		{name: "GET 504 beyond the count", status: 504, failures: 9, method: "GET", wantStatus: 504, wantRequests: 4},
		{name: "POST 503 is not repeated", status: 503, failures: 1, method: "POST", wantStatus: 503, wantRequests: 1},
		{name: "POST with an Idempotency-Key is", status: 503, failures: 1, method: "POST", wantStatus: 200, wantRequests: 2, idempotencyKy: true},
		{name: "500 is not transient", status: 500, failures: 1, method: "GET", wantStatus: 500, wantRequests: 1},
		{name: "WithRetries(0) turns retries off", status: 503, failures: 1, method: "GET", wantStatus: 503, wantRequests: 1, opts: []clientlib.Option{clientlib.WithRetries(0)}},
		{name: "WithRetries(1)", status: 503, failures: 5, method: "GET", wantStatus: 503, wantRequests: 2, opts: []clientlib.Option{clientlib.WithRetries(1)}},
		{name: "Retry-After beyond a minute ends retries", status: 503, failures: 1, method: "GET", wantStatus: 503, wantRequests: 1, header: http.Header{"Retry-After": {"3600"}}},
		{name: "Retry-After 0 is honoured", status: 503, failures: 1, method: "GET", wantStatus: 200, wantRequests: 2, header: http.Header{"Retry-After": {"0"}}},
		{name: "GET 429 with Retry-After is repeated", status: 429, failures: 2, method: "GET", wantStatus: 200, wantRequests: 3, header: http.Header{"Retry-After": {"0"}}},
		{name: "PUT 429 with a Retry-After date", status: 429, failures: 1, method: "PUT", wantStatus: 200, wantRequests: 2, header: http.Header{"Retry-After": {"Mon, 02 Jan 2006 15:04:05 GMT"}}},
		{name: "GET 429 without Retry-After is not", status: 429, failures: 1, method: "GET", wantStatus: 429, wantRequests: 1},
		{name: "GET 429 with a garbled Retry-After is not", status: 429, failures: 1, method: "GET", wantStatus: 429, wantRequests: 1, header: http.Header{"Retry-After": {"soon"}}},
		{name: "POST 429 with Retry-After is not", status: 429, failures: 1, method: "POST", wantStatus: 429, wantRequests: 1, header: http.Header{"Retry-After": {"0"}}},
		{name: "GET 429 with Retry-After beyond a minute is not", status: 429, failures: 1, method: "GET", wantStatus: 429, wantRequests: 1, header: http.Header{"Retry-After": {"61"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &flaky{n: map[string]int{}, failures: tc.failures, status: tc.status, headers: tc.header}
			api := httptest.NewServer(f)
			defer api.Close()
			hc := directClient(t, tc.opts...)
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, api.URL, strings.NewReader("payload"))
			if tc.idempotencyKy {
				req.Header.Set("Idempotency-Key", "k1")
			}
			resp, err := hc.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus || f.count(tc.method) != tc.wantRequests {
				t.Fatalf("status %d after %d requests, want %d after %d", resp.StatusCode, f.count(tc.method), tc.wantStatus, tc.wantRequests)
			}
			if tc.wantStatus == 200 && string(body) != "ok:payload" {
				t.Errorf("body %q: the retry did not replay the request body", body)
			}
		})
	}
}

// Retry-After is waited for, and a wait that would outlast the request's
// deadline is not begun: the caller gets the answer at once.
func TestRetryAfterWait(t *testing.T) {
	f := &flaky{n: map[string]int{}, failures: 1, status: http.StatusTooManyRequests, headers: http.Header{"Retry-After": {"1"}}}
	api := httptest.NewServer(f)
	defer api.Close()
	hc := directClient(t)
	start := time.Now()
	if code, body := getBody(t, hc.Client(), api.URL); code != 200 || body != "ok:" {
		t.Fatalf("GET = %d %q, want the retry's 200", code, body)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Errorf("the retry came after %s, before the server's Retry-After of 1s", waited)
	}

	f = &flaky{n: map[string]int{}, failures: 1, status: http.StatusServiceUnavailable, headers: http.Header{"Retry-After": {"30"}}}
	api2 := httptest.NewServer(f)
	defer api2.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api2.URL, nil)
	start = time.Now()
	resp, err := hc.Client().Do(req)
	if err != nil {
		t.Fatalf("GET with a 5s deadline and Retry-After: 30 = %v, want the 503", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || f.count("GET") != 1 || time.Since(start) > 2*time.Second {
		t.Errorf("status %d after %d requests and %s, want the 503 at once", resp.StatusCode, f.count("GET"), time.Since(start))
	}
}

func TestRetryConnectionReset(t *testing.T) {
	var mu sync.Mutex
	resets := 0
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		first := resets == 0
		resets++
		mu.Unlock()
		if first { // close the connection without a response
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		io.WriteString(w, "ok")
	}))
	defer api.Close()
	hc := directClient(t)
	if code, body := getBody(t, hc.Client(), api.URL); code != 200 || body != "ok" {
		t.Fatalf("GET = %d %q, want the retry's 200", code, body)
	}
	// A POST that may have reached the server is not repeated.
	mu.Lock()
	resets = 0
	mu.Unlock()
	if _, err := hc.Client().Post(api.URL, "text/plain", strings.NewReader("x")); err == nil {
		t.Error("POST after a closed connection succeeded: it was repeated")
	}
}

func TestDeprecationWarnedOncePerEndpoint(t *testing.T) {
	var logs bytes.Buffer
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old" {
			w.Header().Set("Sunset", "Sat, 31 Dec 2033 23:59:59 GMT")
		}
		if r.URL.Path == "/kognic" {
			w.Header().Set("Sunset-Date", "2033-12-31T23:59:59Z")
		}
		if r.URL.Path == "/echo" { // a server that puts the token in the header
			w.Header().Set("Deprecation", r.Header.Get("Authorization"))
		}
	}))
	defer api.Close()
	hc := directClient(t, clientlib.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	for _, p := range []string{"/old?a=1", "/old?a=2", "/new", "/kognic", "/kognic", "/echo"} {
		getBody(t, hc.Client(), api.URL+p)
	}
	out := logs.String()
	tok, err := hc.Source().Token()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, tok.AccessToken[:12]) || !strings.Contains(out, `deprecation="[not a date]"`) {
		t.Errorf("a header value that is not a date is logged:\n%s", out)
	}
	if strings.Count(out, "deprecated") != 3 || !strings.Contains(out, `endpoint="GET `+api.URL+`/old"`) ||
		!strings.Contains(out, `sunset="Sat, 31 Dec 2033 23:59:59 GMT"`) || !strings.Contains(out, "sunset-date=2033-12-31T23:59:59Z") {
		t.Errorf("want one warning for /old, /kognic and /echo each, got:\n%s", out)
	}
}

func TestStatusErrors(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		// A server that echoes the request's credentials, and a long body.
		io.WriteString(w, "denied for "+r.Header.Get("Authorization")+" "+strings.Repeat("x", 4096))
	}))
	defer api.Close()
	hc := directClient(t, clientlib.WithStatusErrors())
	tok, err := hc.Source().Token()
	if err != nil {
		t.Fatal(err)
	}
	_, err = hc.Client().Get(api.URL + "/v1/thing?secret=1")
	var se *clientlib.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want a *StatusError", err)
	}
	if se.StatusCode != 403 || se.URL != api.URL+"/v1/thing" || !strings.HasPrefix(se.Body, "denied for Bearer [REDACTED] xxx") || len(se.Body) > 520 {
		t.Errorf("StatusError = %d %s body %q (%d bytes)", se.StatusCode, se.URL, se.Body[:40], len(se.Body))
	}
	if strings.Contains(err.Error(), tok.AccessToken) {
		t.Error("the error contains the access token")
	}
}
