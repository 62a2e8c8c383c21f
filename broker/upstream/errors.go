package upstream

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Error is a failed token request. Its message is safe to log and to show
// to callers: it holds no client secret and never the response body, only
// the HTTP status, a registered OAuth2 error code, a scrubbed and bounded
// error_description, or a summary (status, content type, length).
type Error struct {
	// TokenURL is the endpoint that failed.
	TokenURL string
	// StatusCode is the HTTP status, zero when no response arrived.
	StatusCode int
	// Code is RFC 6749's error, kept only when it is a registered code
	// (see RegisteredCodes); otherwise empty.
	Code string
	// Description is error_description with every form of the tenant's
	// secrets removed, control and non-ASCII characters replaced, and
	// capped at MaxDescription characters. Empty unless Code is set.
	Description string
	// RedirectHost is the host of the Location of a 3xx answer ("" if it
	// had none); set only for redirects, which are never followed.
	RedirectHost string
	// RetryAfter is the server's Retry-After, zero when absent.
	RetryAfter time.Duration
	// Permanent reports that retrying with the same credentials will fail
	// the same way (invalid_client, unauthorized_client, invalid_scope).
	// Everything else, redirects included, is transient.
	Permanent bool
	// Tried is the number of credentials tried when every one of several
	// (a rotation) was rejected; zero otherwise.
	Tried int
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
		if host == "" {
			host = "(no valid Location)"
		} else {
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

func (e *Error) isRedirect() bool { return e.StatusCode >= 300 && e.StatusCode < 400 }

// RegisteredCodes are the OAuth2 error codes a token endpoint may return
// that are kept in errors: RFC 6749 §5.2 (token endpoint), server_error and
// temporarily_unavailable (RFC 6749 §4.1.2.1, which token endpoints use for
// outages), RFC 6750 §3.1 (bearer token use), RFC 8628 §3.5 (device grant)
// and RFC 8707 invalid_target. Any other code is dropped, with its
// description, since it is free text an IdP chose.
var RegisteredCodes = map[string]bool{
	"invalid_request":         true,
	"invalid_client":          true,
	"invalid_grant":           true,
	"unauthorized_client":     true,
	"unsupported_grant_type":  true,
	"invalid_scope":           true,
	"server_error":            true,
	"temporarily_unavailable": true,
	"access_denied":           true,
	"invalid_token":           true,
	"insufficient_scope":      true,
	"authorization_pending":   true,
	"slow_down":               true,
	"expired_token":           true,
	"invalid_target":          true,
}

// permanentCodes are RFC 6749 errors that no retry with the same client
// credentials and scopes can fix.
var permanentCodes = map[string]bool{
	"invalid_client":      true,
	"unauthorized_client": true,
	"invalid_scope":       true,
}

// MaxDescription bounds how many characters of an IdP's
// error_description are kept.
const MaxDescription = 200

func (c *Client) classify(ctx context.Context, err error, seen *response) *Error {
	e := &Error{TokenURL: c.tokenURL}
	if re, ok := errors.AsType[*oauth2.RetrieveError](err); ok && re.Response != nil {
		e.StatusCode = re.Response.StatusCode
		e.RetryAfter = parseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now())
		if e.isRedirect() {
			e.RedirectHost = locationHost(re.Response, c.tokenURL)
			return e
		}
		if RegisteredCodes[re.ErrorCode] {
			e.Code = re.ErrorCode
			e.Description = c.scrub.description(re.ErrorDescription)
			e.Permanent = permanentCodes[re.ErrorCode]
			return e
		}
		what := "not an OAuth2 error response"
		if re.ErrorCode != "" {
			what = "an unregistered OAuth2 error code"
		}
		e.Err = &summaryError{
			what: what, status: e.StatusCode,
			contentType: re.Response.Header.Get("Content-Type"), length: int64(len(re.Body)),
		}
		return e
	}
	if ctx.Err() != nil {
		e.Err = ctx.Err()
		return e
	}
	// A 2xx that x/oauth2 could not use: its messages ("cannot parse
	// json: …", "cannot parse response: …") may quote the body, so they
	// are replaced by a summary.
	if status, ct, n := seen.summary(); status != 0 {
		e.StatusCode = status
		what := "not a valid OAuth2 token response"
		switch msg := err.Error(); {
		case strings.Contains(msg, "missing access_token"):
			what = "a token response without access_token"
		case strings.Contains(msg, "cannot fetch token"):
			what = "a response whose body could not be read"
		}
		e.Err = &summaryError{what: what, status: status, contentType: ct, length: n}
		return e
	}
	// No response: a transport error (url.Error carries the method and the
	// token URL; redirects are never followed, so no other URL). Scrubbed
	// anyway: some net/http errors quote bytes the server sent.
	e.Err = errors.New(c.scrub.text(err.Error(), 300))
	return e
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
		http.StatusText(s.status), s.what, mediaType(s.contentType), s.length)
}

// mediaType returns the media type of a Content-Type header, quoted, or a
// placeholder: parameters and anything malformed are dropped.
func mediaType(ct string) string {
	if ct == "" {
		return "none"
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || len(mt) > 64 {
		return "unparsable"
	}
	return fmt.Sprintf("%q", mt)
}

// locationHost returns the host (with port) of a redirect's Location,
// resolved against the token URL, or "" if it has none. Path, query and
// user info are never returned.
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
