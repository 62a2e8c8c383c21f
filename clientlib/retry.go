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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

const (
	// maxRetryAfter is the longest Retry-After honoured; a longer one
	// returns the response.
	maxRetryAfter = time.Minute
	maxWarned     = 1024 // endpoints remembered as warned about
)

// apiTransport retries transient failures (WithRetries) and warns about
// deprecated endpoints, after kognic-auth's base clients; it carries
// requests that already have their token.
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
		t.log = slog.Default() // deprecation warnings are for people
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
		wait, ok := t.wait(attempt, resp)
		if !ok || beyondDeadline(ctx, wait) {
			return resp, err // this answer now beats a timeout later
		}
		// The next body first, so that a failure leaves the response.
		next, gerr := replay(req)
		if gerr != nil {
			return resp, err
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

// wait is the wait before the retry of attempt: the server's Retry-After,
// else the backoff; ok is false for a Retry-After over maxRetryAfter.
func (t *apiTransport) wait(attempt int, resp *http.Response) (_ time.Duration, ok bool) {
	if resp != nil {
		if ra, ok := upstream.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return ra, ra <= maxRetryAfter
		}
	}
	return t.backoff(attempt), true
}

// replay returns req with a new body (GetBody) for another attempt.
func replay(req *http.Request) (*http.Request, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	c := *req
	c.Body = body
	return &c, nil
}

func (t *apiTransport) backoff(attempt int) time.Duration {
	d := t.initial << min(attempt, 20)
	if d <= 0 || d > t.maxWait {
		d = t.maxWait
	}
	return time.Duration(float64(d) * (0.5 + rand.Float64())) // ±50 %
}

// retryable reports whether a request that got resp or err may be resent.
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
		// Only when the server says when: a blind retry adds to its load.
		_, ok := upstream.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
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

// deprecationHeaders announce an endpoint's end (RFC 8594, Kognic's).
var deprecationHeaders = []string{"Sunset", "Sunset-Date", "Deprecation"}

// deprecationValue is a date or "true"; anything else is not logged.
var deprecationValue = regexp.MustCompile(`^[A-Za-z0-9 ,:@+\-]{1,40}$`)

// warnDeprecated logs a response's deprecation headers once per endpoint.
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
	if !seen {
		t.warned[endpoint] = true
	}
	t.mu.Unlock()
	if !seen {
		t.log.Warn("clientlib: the API endpoint is deprecated and will be removed; update the client", append([]any{"endpoint", endpoint}, attrs...)...)
	}
}
