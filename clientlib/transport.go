package clientlib

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// Invalidator is implemented by token sources that can replace a token a
// resource server rejected, as *Source does: Invalidate reports tok as
// rejected and returns the token to use instead, waiting at most for ctx.
type Invalidator interface {
	Invalidate(ctx context.Context, tok *oauth2.Token) (*oauth2.Token, error)
}

// contextTokenSource is a token source whose wait a context can bound.
type contextTokenSource interface {
	TokenContext(ctx context.Context) (*oauth2.Token, error)
}

// tokenFrom returns a token of src, bounded by ctx if src allows it.
func tokenFrom(ctx context.Context, src oauth2.TokenSource) (*oauth2.Token, error) {
	var tok *oauth2.Token
	var err error
	if cs, ok := src.(contextTokenSource); ok {
		tok, err = cs.TokenContext(ctx)
	} else {
		tok, err = src.Token()
	}
	if err == nil && (tok == nil || tok.AccessToken == "") {
		err = errors.New("the token source returned no access token")
	}
	return tok, err
}

// Transport is an http.RoundTripper that authorises each request with a
// token from any oauth2.TokenSource (waiting at most for the request's
// context if the source has TokenContext). The token goes only to the
// origin (scheme, host, port) of the request the caller made, and over
// plain http only to loopback unless WithInsecureHTTP. On a 401, an
// Invalidator source replaces the token and the request is sent once more
// if its body can be replayed. Responses carry the request without the
// token. It is safe for concurrent use if its source is.
type Transport struct {
	src oauth2.TokenSource
	cfg transportConfig
}

// NewTransport returns a Transport that authorises requests with tokens
// of src, carried by http.DefaultTransport unless WithBaseTransport says
// otherwise.
func NewTransport(src oauth2.TokenSource, opts ...TransportOption) *Transport {
	t := &Transport{src: src}
	for _, o := range opts {
		o.configureTransport(&t.cfg)
	}
	return t
}

// maxDrain bounds the body read so that a connection can be reused.
const maxDrain = 4 << 10

// sent is a token as Transport sends it; a *Source's has its header value
// precomputed, so that the common path does not allocate.
type sent struct {
	authz []string
	fast  *token        // from a *Source
	tok   *oauth2.Token // from any other source
}

// access is the access token; "" for none.
func (s sent) access() string {
	switch {
	case s.fast != nil:
		return s.fast.oauth.AccessToken
	case s.tok != nil:
		return s.tok.AccessToken
	}
	return ""
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !forEntryOrigin(req) {
		resp, err := t.base().RoundTrip(withoutAuthorization(req))
		return t.finish(req, resp, err, sent{}, sent{})
	}
	bodyOwned := req.Body != nil
	defer func() {
		if bodyOwned {
			req.Body.Close()
		}
	}()
	if err := t.checkURL(req.URL); err != nil {
		return nil, err
	}
	if t.src == nil {
		return nil, errors.New("clientlib: the Transport has no token source; create it with NewTransport")
	}
	tok, err := t.token(req.Context())
	if err != nil {
		return nil, fmt.Errorf("clientlib: no token for %s %s: %w", req.Method, upstream.RedactURL(req.URL.String()), err)
	}
	bodyOwned = false // the base transport closes it from here on
	resp, err := t.base().RoundTrip(authorized(req, tok.authz, req.Body))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return t.finish(req, resp, err, tok, sent{})
	}
	// Report the token even if the request cannot be retried.
	fresh, ok := t.replacement(req.Context(), tok)
	if !ok || !replayable(req) {
		return t.finish(req, resp, nil, tok, sent{}) // the caller gets the 401
	}
	again, err := replay(req)
	if err != nil {
		return t.finish(req, resp, nil, tok, sent{})
	}
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	resp.Body.Close()
	resp, err = t.base().RoundTrip(authorized(req, fresh.authz, again.Body))
	return t.finish(req, resp, err, tok, fresh)
}

// finish hands resp back with the request as the caller made it, without
// the token (entryURL follows the chain back); with WithStatusErrors a
// failure becomes a *StatusError redacted of the tokens sent.
func (t *Transport) finish(req *http.Request, resp *http.Response, err error, first, retry sent) (*http.Response, error) {
	if err != nil || resp == nil {
		return resp, err
	}
	resp.Request = req
	if t.cfg.statusErrors && failed(resp) {
		return nil, newStatusError(req, resp, first.access(), retry.access())
	}
	return resp, nil
}

// token returns the token to send.
func (t *Transport) token(ctx context.Context) (sent, error) {
	if s, ok := t.src.(*Source); ok {
		tok, err := s.current(ctx)
		if err != nil {
			return sent{}, err
		}
		return sent{authz: tok.authz, fast: tok}, nil
	}
	tok, err := tokenFrom(ctx, t.src)
	if err != nil {
		return sent{}, err
	}
	return sent{authz: []string{tok.Type() + " " + tok.AccessToken}, tok: tok}, nil
}

// replacement reports old, rejected with a 401, to the source and returns
// the token to retry with; ok is false when there is no different one
// (the caller gets the 401).
func (t *Transport) replacement(ctx context.Context, old sent) (_ sent, ok bool) {
	if s, isSource := t.src.(*Source); isSource {
		fresh, err := s.invalidate(ctx, old.fast.sha256)
		if err != nil || fresh.sha256 == old.fast.sha256 {
			return sent{}, false
		}
		return sent{authz: fresh.authz, fast: fresh}, true
	}
	inv, isInvalidator := t.src.(Invalidator)
	if !isInvalidator {
		return sent{}, false
	}
	fresh, err := inv.Invalidate(ctx, old.tok)
	if err != nil || fresh == nil || fresh.AccessToken == "" || fresh.AccessToken == old.tok.AccessToken {
		return sent{}, false
	}
	return sent{authz: []string{fresh.Type() + " " + fresh.AccessToken}, tok: fresh}, true
}

func (t *Transport) base() http.RoundTripper { return cmp.Or(t.cfg.base, http.DefaultTransport) }

func (t *Transport) checkURL(u *url.URL) error {
	switch {
	case u.Scheme == "https", t.cfg.allowInsecureHTTP:
		return nil
	case u.Scheme == "http" && upstream.IsLoopbackHost(u.Hostname()):
		return nil
	}
	return fmt.Errorf("%w to %s://%s; use https, or allow plain http on a trusted network with WithInsecureHTTP",
		ErrInsecureTransport, u.Scheme, u.Host)
}

// authorized returns a shallow copy of req with authz and body.
func authorized(req *http.Request, authz []string, body io.ReadCloser) *http.Request {
	r := new(http.Request)
	*r = *req
	r.Header = req.Header.Clone()
	if r.Header == nil {
		r.Header = make(http.Header, 1)
	}
	r.Header["Authorization"] = authz // appending to it would copy: cap 1
	r.Body = body
	return r
}

// withoutAuthorization returns req without an Authorization header (in any
// case of the key).
func withoutAuthorization(req *http.Request) *http.Request {
	h := req.Header.Clone()
	for k := range h {
		if strings.EqualFold(k, "Authorization") {
			delete(h, k)
		}
	}
	if len(h) == len(req.Header) {
		return req
	}
	r := *req
	r.Header = h
	return &r
}

func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}
