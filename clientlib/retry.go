package clientlib

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The HTTP client's handling of transient failures and deprecated
// endpoints, after kognic-auth's base clients (urllib3's Retry): a few
// retries of 502, 503, 504, 429 with Retry-After, and broken connections
// with exponential backoff, and a warning per endpoint that announces its
// sunset.

const (
	// maxRetryAfter is the longest Retry-After honoured; a server asking
	// for a longer wait gets its response passed to the caller instead.
	maxRetryAfter = time.Minute
	// maxWarned bounds the endpoints remembered as already warned about.
	maxWarned = 1024
)

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
	t := &apiTransport{base: base, retries: cfg.retries, initial: cfg.retryInitial,
		maxWait: max(cfg.retryMax, cfg.retryInitial), log: cfg.source.logger, warned: make(map[string]bool)}
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
		if beyondDeadline(ctx, wait) {
			// The caller would not see the end of the wait: this answer
			// now beats a timeout later.
			return resp, err
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
	case http.StatusTooManyRequests:
		// Only when the server says when: a blind retry adds to the load
		// it is shedding. urllib3, under kognic-auth, does the same.
		_, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now())
		return ok && idempotent(req)
	}
	return false
}

// beyondDeadline reports whether ctx ends before wait has passed.
func beyondDeadline(ctx context.Context, wait time.Duration) bool {
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < wait
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

// deprecationValue is what those headers hold: an HTTP date, "@" and a
// Unix time, an ISO date or "true"; anything else is not logged.
var deprecationValue = regexp.MustCompile(`^[A-Za-z0-9 ,:@+\-]{1,40}$`)

// warnDeprecated logs, once per endpoint, a response's deprecation
// headers.
func (t *apiTransport) warnDeprecated(req *http.Request, resp *http.Response) {
	var attrs []any
	for _, h := range deprecationHeaders {
		if v := resp.Header.Get(h); v != "" {
			if !deprecationValue.MatchString(v) {
				v = "[not a date]" // the server's bytes are not logged
			}
			attrs = append(attrs, strings.ToLower(h), v)
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
