package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/oauth2"
)

// Error is a failed token request. Its message is safe to log and to show
// to callers: never a secret or the response body, only the status, a
// registered error code, a description by allowlist, or a summary.
type Error struct {
	TokenURL   string // as RedactURL shows it
	StatusCode int    // zero when no response arrived
	Code       string // RFC 6749's error if one of RegisteredCodes, else ""
	// Description, only with Code, is error_description if short plain
	// text echoing no secret, else "description withheld".
	Description string
	// RedirectHost is a 3xx answer's Location host, unless it echoes a
	// credential or does not look like a host name.
	RedirectHost string
	RetryAfter   time.Duration // zero when absent
	Permanent    bool          // the same credentials fail the same way (permanentCodes)
	Tried        int           // how many credentials of a rotation were all rejected
	hostWithheld bool          // the Location had a host that is not shown
	// Err is the transport error, a summary of an unusable response, or
	// the context's error; nil for OAuth2 error responses and redirects.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("upstream: token request to ")
	b.WriteString(e.TokenURL)
	b.WriteString(" failed")
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
	}
	if e.isRedirect() {
		host := e.RedirectHost
		switch {
		case e.hostWithheld:
			host = "(withheld: it may encode the client credentials)"
		case host == "":
			host = "(no valid Location)"
		default:
			host = fmt.Sprintf("%q", host)
		}
		fmt.Fprintf(&b, ": redirect to host %s refused; the broker never follows redirects, which would re-send the client secret; set the tenant's token URL to the final endpoint", host)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, ": %s", e.Code)
		if e.Description != "" {
			fmt.Fprintf(&b, " (%s)", e.Description)
		}
	}
	if e.Tried > 1 {
		fmt.Fprintf(&b, " (all %d configured credentials were rejected)", e.Tried)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, "; retry after %s", e.RetryAfter)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Transient reports whether the failure may pass by itself: an answer 408,
// 429, 500, 502, 503 or 504, or no answer but not Unreachable.
func (e *Error) Transient() bool {
	switch e.StatusCode {
	case 0:
		te, ok := errors.AsType[*TransportError](e.Err)
		return !ok || !te.Unreachable()
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

func (e *Error) isRedirect() bool { return e.StatusCode >= 300 && e.StatusCode < 400 }

// RegisteredCodes are the OAuth2 error codes kept in errors (RFC 6749 §5.2
// and §4.1.2.1, RFC 6750 §3.1, RFC 8628 §3.5, RFC 8707). Any other code is
// dropped with its description: it is free text an IdP chose.
var RegisteredCodes = map[string]bool{
	"invalid_request": true, "invalid_client": true, "invalid_grant": true, "unauthorized_client": true,
	"unsupported_grant_type": true, "invalid_scope": true, "server_error": true, "temporarily_unavailable": true,
	"access_denied": true, "invalid_token": true, "insufficient_scope": true, "authorization_pending": true,
	"slow_down": true, "expired_token": true, "invalid_target": true,
}

// permanentCodes are errors no retry with the same credentials can fix.
var permanentCodes = map[string]bool{"invalid_client": true, "unauthorized_client": true, "invalid_scope": true}

// classify maps a failed request to an *Error; no text shown may echo
// secrets.
func (c *Client) classify(ctx context.Context, err error, seen *response, secrets []Credential) *Error {
	e := &Error{TokenURL: RedactURL(c.tokenURL)}
	if re, ok := errors.AsType[*oauth2.RetrieveError](err); ok && re.Response != nil {
		e.StatusCode = re.Response.StatusCode
		e.RetryAfter, _ = ParseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now())
		if e.isRedirect() {
			if h := locationHost(re.Response, c.tokenURL); h != "" {
				e.RedirectHost = shownHost(secrets, h)
				e.hostWithheld = e.RedirectHost == ""
			}
			return e
		}
		if RegisteredCodes[re.ErrorCode] {
			e.Code = re.ErrorCode
			e.Description = describe(secrets, re.ErrorDescription)
			e.Permanent = permanentCodes[re.ErrorCode]
			return e
		}
		what := "not an OAuth2 error response"
		if re.ErrorCode != "" {
			what = "an unregistered OAuth2 error code"
		}
		e.Err = &summaryError{
			what: what, status: e.StatusCode,
			contentType: contentType(re.Response.Header.Get("Content-Type")), length: int64(len(re.Body)),
		}
		return e
	}
	if ctx.Err() != nil {
		e.Err = ctx.Err()
		return e
	}
	// A 2xx that x/oauth2 could not use: its messages may quote the body.
	if status, ct, n := seen.summary(); status != 0 {
		e.StatusCode = status
		what := "not a valid OAuth2 token response"
		switch msg := err.Error(); {
		case strings.Contains(msg, "missing access_token"):
			what = "a token response without access_token"
		case strings.Contains(msg, "cannot fetch token"):
			what = "a response whose body could not be read"
		}
		e.Err = &summaryError{what: what, status: status, contentType: contentType(ct), length: n}
		return e
	}
	// No response: only the transport error's kind is shown.
	e.Err = &TransportError{Kind: transportKind(err)}
	return e
}

// TransportError kinds that code looks at.
const (
	kindTimeout   = "timeout"
	kindRefused   = "connection refused"
	kindNoRoute   = "network unreachable"
	kindNoHost    = "DNS failure: no such host"
	kindPlainHTTP = "the server answered plain HTTP to an https URL"
	kindTLS       = "TLS: " // the prefix of every TLS failure
)

// TransportError is a token request that got no usable HTTP response; its
// Kind is from a fixed vocabulary (transportKind), never server text.
type TransportError struct {
	Kind  string
	cause error // context.Canceled or DeadlineExceeded if the context ended it
}

// Timeout reports that the request ran out of time (no answer).
func (t *TransportError) Timeout() bool { return t.Kind == kindTimeout }

// Unreachable reports that retrying at once will not find a server: the
// connection was refused, the name does not exist, no route, or TLS failed.
func (t *TransportError) Unreachable() bool {
	switch t.Kind {
	case kindRefused, kindNoRoute, kindNoHost, kindPlainHTTP:
		return true
	}
	return strings.HasPrefix(t.Kind, kindTLS)
}

// Unwrap returns the context error that ended the request, if any.
func (t *TransportError) Unwrap() error { return t.cause }

func (t *TransportError) Error() string {
	return t.Kind + " (details withheld: they may quote the server's bytes)"
}

// errnoKind names a system call error by its number.
func errnoKind(e syscall.Errno) string {
	switch e {
	case syscall.ECONNREFUSED:
		return kindRefused
	case syscall.ECONNRESET:
		return "connection reset by peer"
	case syscall.EPIPE:
		return "broken pipe"
	case syscall.ENETUNREACH, syscall.EHOSTUNREACH:
		return kindNoRoute
	}
	return "network error (errno " + strconv.Itoa(int(e)) + ")"
}

// transportKind maps a transport error to a fixed description by its type,
// or for net/http's untyped errors by the fixed parts of their messages.
func transportKind(err error) string {
	var (
		dnsErr     *net.DNSError
		netErr     net.Error
		maxBytes   *http.MaxBytesError
		syscallErr syscall.Errno
	)
	if te, ok := errors.AsType[*TransportError](err); ok {
		return te.Kind // already mapped (MapTransportErrors)
	}
	if k := tlsKind(err); k != "" {
		return k
	}
	switch {
	case errors.As(err, &dnsErr):
		return dnsKind(dnsErr)
	case errors.As(err, &maxBytes):
		return "response too large"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return kindTimeout
	case errors.Is(err, context.Canceled):
		return "request canceled"
	case errors.As(err, &syscallErr):
		return errnoKind(syscallErr)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the server before a complete response"
	}
	// net/http's own errors are untyped strings that may quote the
	// server's bytes; match their fixed parts only.
	msg := err.Error()
	for _, k := range messageKinds {
		if strings.Contains(msg, k.sub) {
			return k.kind
		}
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return "network error during " + opErr.Op
	}
	return "transport error"
}

// messageKinds name net/http's untyped errors by their fixed parts.
var messageKinds = []struct{ sub, kind string }{
	{"server gave HTTP response to HTTPS client", kindPlainHTTP},
	{"tls:", "TLS: handshake failed"},
	{"x509:", "TLS: certificate verification failed"},
	{"malformed", "malformed HTTP response"},
	{"HTTP/1.x transport connection broken", "malformed HTTP response"},
	{"too large", "response too large"},
	{"too long", "response too large"},
	{"unexpected EOF", "connection closed by the server before a complete response"},
	{"EOF", "connection closed by the server before a complete response"},
}

func dnsKind(e *net.DNSError) string {
	switch {
	case e.IsNotFound:
		return kindNoHost
	case e.IsTimeout:
		return "DNS failure: timeout"
	}
	return "DNS failure"
}

// tlsKind describes a TLS or certificate failure, or returns "".
func tlsKind(err error) string {
	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		rootsErr  x509.SystemRootsError
		recordErr tls.RecordHeaderError
		alert     tls.AlertError
	)
	switch {
	case errors.As(err, &unknownCA):
		return "TLS: certificate signed by unknown authority (set the tenant's ca_file for a private CA)"
	case errors.As(err, &hostErr):
		return "TLS: certificate is not valid for the token URL's host"
	case errors.As(err, &invalid):
		return "TLS: " + certReason(invalid.Reason)
	case errors.As(err, &rootsErr):
		return "TLS: system root certificates unavailable"
	case errors.As(err, &recordErr):
		return "TLS: the server did not answer with TLS"
	case errors.As(err, &alert):
		return "TLS: handshake failed (alert " + strconv.Itoa(int(alert)) + ")"
	}
	return ""
}

// certReason describes an x509.InvalidReason without the certificate's text.
func certReason(r x509.InvalidReason) string {
	switch r {
	case x509.Expired:
		return "certificate has expired or is not yet valid"
	case x509.NotAuthorizedToSign:
		return "certificate was signed by a certificate that is not a CA"
	case x509.CANotAuthorizedForThisName, x509.CANotAuthorizedForExtKeyUsage:
		return "certificate's CA is not authorized for this name or use"
	case x509.TooManyIntermediates:
		return "certificate chain has too many intermediates"
	case x509.IncompatibleUsage:
		return "certificate is not valid for TLS server authentication"
	case x509.NameMismatch, x509.NameConstraintsWithoutSANs, x509.UnconstrainedName:
		return "certificate names violate the CA's constraints"
	case x509.TooManyConstraints:
		return "certificate has too many name constraints to check"
	}
	return "certificate is invalid (reason " + strconv.Itoa(int(r)) + ")"
}

// shownMediaTypes are the media types an error summary names; any other
// is withheld: the IdP chose it, so it may encode a credential.
var shownMediaTypes = map[string]bool{
	"application/json": true, "application/problem+json": true, "application/jwt": true,
	"application/x-www-form-urlencoded": true, "application/xml": true, "application/xhtml+xml": true,
	"application/octet-stream": true, "application/javascript": true, "multipart/form-data": true,
	"text/html": true, "text/plain": true, "text/xml": true, "text/javascript": true, "text/css": true,
}

// contentType names a Content-Type in a summary: its media type quoted if
// it is one of shownMediaTypes, else "none", "unparsable" or "withheld".
func contentType(ct string) string {
	if ct == "" {
		return "none"
	}
	mt, _, err := mime.ParseMediaType(ct)
	switch {
	case err != nil:
		return "unparsable"
	case shownMediaTypes[mt]:
		return strconv.Quote(mt)
	}
	return "withheld"
}

// summaryError describes a response that is not shown.
type summaryError struct {
	what        string
	status      int
	contentType string
	length      int64
}

func (s *summaryError) Error() string {
	return fmt.Sprintf("%s, %s (content type %s, %d bytes; body not shown)",
		http.StatusText(s.status), s.what, s.contentType, s.length)
}

// locationHost returns the host (with port) of a redirect's Location,
// resolved against the token URL, or "" if it has none or an odd one.
func locationHost(resp *http.Response, tokenURL string) string {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return ""
	}
	base, err := url.Parse(tokenURL)
	if err != nil {
		return ""
	}
	u, err := base.Parse(loc)
	if err != nil || u.Host == "" {
		return ""
	}
	h := u.Host
	if len(h) > 255 || strings.ContainsFunc(h, func(r rune) bool { return r <= 0x20 || r >= 0x7f }) {
		return ""
	}
	return h
}
