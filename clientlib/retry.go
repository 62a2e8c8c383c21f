package clientlib

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The HTTP client's handling of transient failures and deprecated
// endpoints, after kognic-auth's base clients: a few retries of 502, 503,
// 504 and broken connections with exponential backoff, and a warning per
// endpoint that announces its sunset.

// DefaultRetries is how many times a request is retried after a transient
// failure unless WithRetries says otherwise (kognic-auth's count).
const DefaultRetries = 3

const (
	defaultRetryInitial = 500 * time.Millisecond
	defaultRetryMax     = 8 * time.Second
	// maxRetryAfter is the longest Retry-After honoured; a server asking
	// for a longer wait gets its response passed to the caller instead.
	maxRetryAfter = time.Minute
	// maxWarned bounds the endpoints remembered as already warned about.
	maxWarned = 1024
)

type retryConfig struct {
	set              bool
	max              int
	initial, maxWait time.Duration
}

// WithRetries sets how many times a request is retried after a transient
// failure (default DefaultRetries; 0 turns retrying off). Retried are:
// 502, 503 and 504 responses and connections reset or closed before any
// response, for idempotent requests (GET, HEAD, OPTIONS, TRACE, PUT,
// DELETE, or any with an Idempotency-Key header); and a connection that
// could not be made at all, for any request. The body must be replayable
// (none, or Request.GetBody set, as http.NewRequest does for in-memory
// bodies). Waits grow exponentially from 500ms to 8s with ±50 % jitter,
// or follow Retry-After when the server sends it (up to a minute; a
// longer one ends the retries), and end with the request's context.
func WithRetries(n int) Option {
	return clientOption(func(c *clientConfig) {
		c.retry.set, c.retry.max = true, max(n, 0)
	})
}

// WithRetryBackoff sets the first and the longest wait between retries
// (defaults 500ms and 8s). Non-positive values keep the defaults.
func WithRetryBackoff(initial, max time.Duration) Option {
	return clientOption(func(c *clientConfig) {
		if initial > 0 {
			c.retry.initial = initial
		}
		if max > 0 {
			c.retry.maxWait = max
		}
	})
}

// apiTransport retries transient failures and warns about deprecated
// endpoints; it carries requests that already have their token.
type apiTransport struct {
	base             http.RoundTripper
	retries          int
	initial, maxWait time.Duration
	log              *slog.Logger

	mu     sync.Mutex
	warned map[string]bool // endpoints warned about
}

func newAPITransport(base http.RoundTripper, cfg *clientConfig) *apiTransport {
	t := &apiTransport{base: base, retries: DefaultRetries, initial: defaultRetryInitial, maxWait: defaultRetryMax,
		log: cfg.source.logger, warned: make(map[string]bool)}
	if cfg.retry.set {
		t.retries = cfg.retry.max
	}
	if cfg.retry.initial > 0 {
		t.initial = cfg.retry.initial
	}
	if cfg.retry.maxWait > 0 {
		t.maxWait = max(cfg.retry.maxWait, t.initial)
	}
	if !cfg.source.loggerSet {
		// Deprecation warnings are for people: without a logger of the
		// caller's they go to the process's default logger.
		t.log = slog.Default()
	}
	return t
}

// RoundTrip implements http.RoundTripper.
func (t *apiTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	r := req
	for attempt := 0; ; attempt++ {
		resp, err := t.base.RoundTrip(r)
		if attempt >= t.retries || !retryable(req, resp, err) || ctx.Err() != nil {
			if err == nil {
				t.warnDeprecated(req, resp)
			}
			return resp, err
		}
		wait := t.backoff(attempt)
		if resp != nil {
			if ra, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
				if ra > maxRetryAfter {
					return resp, nil
				}
				wait = ra
			}
		}
		// Get the next body before giving up this response, so that a
		// failure leaves the caller with the response.
		next := r
		if req.Body != nil && req.Body != http.NoBody {
			body, gerr := req.GetBody()
			if gerr != nil {
				return resp, err
			}
			c := *req
			c.Body = body
			next = &c
		}
		if resp != nil {
			_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
			resp.Body.Close()
		}
		if !sleep(ctx, wait) {
			if next != r && next.Body != nil {
				next.Body.Close()
			}
			return nil, ctx.Err()
		}
		r = next
	}
}

func (t *apiTransport) backoff(attempt int) time.Duration {
	d := t.initial << min(attempt, 20)
	if d <= 0 || d > t.maxWait {
		d = t.maxWait
	}
	return time.Duration(float64(d) * (0.5 + rand.Float64())) // ±50 %
}

// retryable reports whether a request that got resp or err may be sent
// again.
func retryable(req *http.Request, resp *http.Response, err error) bool {
	if !replayable(req) {
		return false
	}
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return false
		}
		if notConnected(err) {
			return true // nothing reached the server
		}
		return idempotent(req) && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF))
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return idempotent(req)
	}
	return false
}

// notConnected reports whether err says no connection could be made.
func notConnected(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// idempotent is net/http's rule for requests safe to repeat.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

// retryAfter parses a Retry-After value: seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(max(n, 0)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// deprecationHeaders announce an endpoint's end: RFC 8594 Sunset, the
// Deprecation header, and Kognic's Sunset-Date.
var deprecationHeaders = []string{"Sunset", "Sunset-Date", "Deprecation"}

// warnDeprecated logs, once per endpoint, a response's deprecation
// headers.
func (t *apiTransport) warnDeprecated(req *http.Request, resp *http.Response) {
	var attrs []any
	for _, h := range deprecationHeaders {
		if v := resp.Header.Get(h); v != "" {
			attrs = append(attrs, strings.ToLower(h), printable(v, 100))
		}
	}
	if attrs == nil {
		return
	}
	endpoint := req.Method + " " + req.URL.Scheme + "://" + req.URL.Host + req.URL.EscapedPath()
	t.mu.Lock()
	seen := t.warned[endpoint] || len(t.warned) >= maxWarned
	t.warned[endpoint] = true
	t.mu.Unlock()
	if !seen {
		t.log.Warn("clientlib: the API endpoint is deprecated and will be removed; update the client", append([]any{"endpoint", endpoint}, attrs...)...)
	}
}

// printable returns s cut to at most n bytes of valid UTF-8, with control
// characters replaced, for logs and errors.
func printable(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) > n {
		cut := n
		for cut > 0 && !utf8RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
