package clientlib

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// ErrInsecureTransport is wrapped by the errors returned instead of sending
// a token, or in direct mode a client secret, over plain http (or an
// insecure gRPC connection) to a host other than loopback.
var ErrInsecureTransport = errors.New("clientlib: refusing to send credentials without TLS")

// Transport is an http.RoundTripper that authorises each request with a
// token from Source: it clones the request and sets "Authorization:
// <token type> <token>". When the server answers 401 Unauthorized, it
// reports the token it sent to the broker (Source.Invalidate), which
// replaces it, and sends the request once more with the new token if the
// body can be replayed: no body, http.NoBody, or Request.GetBody set (as
// http.NewRequest does for bytes and strings readers). Concurrent 401s for
// the same token cause a single InvalidateToken call.
//
// Transport refuses to send a token over plain http to a host other than
// loopback unless AllowInsecureHTTP is set. Otherwise it authorises every
// request it carries, redirects included, whatever the host: use it only
// for hosts that are meant to receive the tenant's token.
//
// A Transport is safe for concurrent use. Its fields must not change once it
// is in use.
type Transport struct {
	// Source supplies the tokens. Required.
	Source *Source
	// Base carries the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// AllowInsecureHTTP allows sending tokens over plain http to any host.
	// Loopback hosts are always allowed.
	AllowInsecureHTTP bool
}

// maxDrain bounds how much of a 401 body is read so that its connection can
// be reused for the retry.
const maxDrain = 4 << 10

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	bodyOwned := req.Body != nil
	defer func() {
		if bodyOwned {
			req.Body.Close()
		}
	}()
	if err := t.checkURL(req.URL); err != nil {
		return nil, err
	}
	if t.Source == nil {
		return nil, errors.New("clientlib: Transport.Source is nil")
	}
	tok, err := t.Source.current(req.Context())
	if err != nil {
		return nil, fmt.Errorf("clientlib: no token for %s %s: %w", req.Method, redactURL(req.URL), err)
	}
	bodyOwned = false // the base transport closes it from here on
	resp, err := t.base().RoundTrip(authorized(req, tok, req.Body))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}

	fresh, ierr := t.Source.invalidate(req.Context(), tok.sha256)
	if ierr != nil || fresh.sha256 == tok.sha256 || !replayable(req) {
		// The caller gets the 401; ierr has been logged by the Source.
		return resp, nil
	}
	body := req.Body
	if req.GetBody != nil && body != nil && body != http.NoBody {
		if body, err = req.GetBody(); err != nil {
			return resp, nil
		}
	}
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	resp.Body.Close()
	return t.base().RoundTrip(authorized(req, fresh, body))
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

func (t *Transport) checkURL(u *url.URL) error {
	switch {
	case u.Scheme == "https", t.AllowInsecureHTTP:
		return nil
	case u.Scheme == "http" && isLoopbackHost(u.Hostname()):
		return nil
	}
	return fmt.Errorf("%w to %s://%s; use https, or allow plain http on a trusted network with Transport.AllowInsecureHTTP (WithInsecureHTTP)",
		ErrInsecureTransport, u.Scheme, u.Host)
}

// authorized returns a shallow copy of req with its own header carrying
// tok, and body.
func authorized(req *http.Request, tok *token, body io.ReadCloser) *http.Request {
	r := new(http.Request)
	*r = *req
	r.Header = req.Header.Clone()
	if r.Header == nil {
		r.Header = make(http.Header, 1)
	}
	r.Header["Authorization"] = tok.authz // appending to it would copy: cap 1
	r.Body = body
	return r
}

func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// isLoopbackHost reports whether host (without port) is a loopback name or
// address.
func isLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// redactURL drops user info and the query, which may carry secrets.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.ForceQuery = false
	return c.String()
}
