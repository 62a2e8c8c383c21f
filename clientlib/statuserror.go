package clientlib

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
)

// StatusError is the error of a request answered with a status other than
// 2xx, when WithStatusErrors asks for it. It carries a bounded excerpt of
// the body, never a request header.
type StatusError struct {
	Method string
	// URL is the request URL without user info or query.
	URL string
	// StatusCode and Status are the response's, e.g. 404 and "404 Not Found".
	StatusCode int
	Status     string
	// Body is the start of the response body (at most 512 bytes), with
	// control characters replaced and bearer tokens redacted.
	Body string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("clientlib: %s %s: %s", e.Method, e.URL, e.Status)
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// maxExcerpt bounds StatusError.Body.
const maxExcerpt = 512

// WithStatusErrors makes responses with a status other than 2xx errors:
// the client returns a *StatusError (wrapped in a *url.Error by
// http.Client) and closes the body. 401 is handled (token replaced,
// request retried) before that.
func WithStatusErrors() Option {
	return clientOption(func(c *clientConfig) { c.statusErrors = true })
}

// statusErrors turns non-2xx responses into *StatusError.
type statusErrors struct{ next http.RoundTripper }

func (s statusErrors) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.next.RoundTrip(req)
	if err != nil || resp.StatusCode/100 == 2 {
		return resp, err
	}
	return nil, newStatusError(req, resp)
}

// bearer matches credentials a server might echo back.
var bearer = regexp.MustCompile(`(?i)(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*`)

func newStatusError(req *http.Request, resp *http.Response) *StatusError {
	defer resp.Body.Close()
	buf, _ := io.ReadAll(io.LimitReader(resp.Body, maxExcerpt+1))
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	body := bearer.ReplaceAllString(string(buf), "$1 [REDACTED]")
	return &StatusError{Method: req.Method, URL: redactURL(req.URL), StatusCode: resp.StatusCode, Status: resp.Status,
		Body: printable(body, maxExcerpt)}
}
