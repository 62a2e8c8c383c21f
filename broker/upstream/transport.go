package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
)

// MapTransportErrors wraps rt (nil: http.DefaultTransport) so that every
// error of RoundTrip or a body read is a *TransportError (errors.Is still
// finds the context's), never net/http's text, which quotes the server's
// bytes. Put it innermost, so that tracing and metrics see only those.
func MapTransportErrors(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	if m, ok := rt.(mappingTransport); ok {
		return m
	}
	return mappingTransport{base: rt}
}

type mappingTransport struct{ base http.RoundTripper }

func (t mappingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		return nil, mapTransportError(err)
	}
	if resp != nil && resp.Body != nil && resp.Body != http.NoBody {
		resp.Body = &mappingBody{ReadCloser: resp.Body}
	}
	return resp, nil
}

// mappingBody maps the errors of reading a response body; io.EOF passes.
type mappingBody struct{ io.ReadCloser }

func (b *mappingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = mapTransportError(err)
	}
	return n, err
}

func (b *mappingBody) Close() error {
	if err := b.ReadCloser.Close(); err != nil {
		return mapTransportError(err)
	}
	return nil
}

// mapTransportError returns err as a *TransportError.
func mapTransportError(err error) error {
	if te, ok := errors.AsType[*TransportError](err); ok {
		return te
	}
	te := &TransportError{Kind: transportKind(err)}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		te.cause = context.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		te.cause = context.Canceled
	}
	return te
}

func (t mappingTransport) CloseIdleConnections() { closeIdle(t.base) }

// sentURLKey is the context key of the URL a redactingTransport hid.
type sentURLKey struct{}

// redactingTransport hands base the request with its URL redacted, for
// tracing; restoringTransport, beneath, puts it back before it is sent.
type redactingTransport struct{ base http.RoundTripper }

func (t redactingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	u := r.URL
	if u.User == nil && u.RawQuery == "" && !u.ForceQuery && u.Fragment == "" && u.Opaque == "" {
		return t.base.RoundTrip(r)
	}
	r = r.Clone(context.WithValue(r.Context(), sentURLKey{}, u))
	r.URL = shownURL(u)
	return t.base.RoundTrip(r)
}

func (t redactingTransport) CloseIdleConnections() { closeIdle(t.base) }

type restoringTransport struct{ base http.RoundTripper }

func (t restoringTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if u, ok := r.Context().Value(sentURLKey{}).(*url.URL); ok {
		r = r.WithContext(r.Context()) // a shallow copy whose URL is replaced
		sent := *u
		r.URL = &sent
	}
	return t.base.RoundTrip(r)
}

func (t restoringTransport) CloseIdleConnections() { closeIdle(t.base) }

func closeIdle(rt http.RoundTripper) {
	if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// responseKey is the context key of the *response a fetch records.
type responseKey struct{}

// response is what observingTransport saw, to summarise an unshown body.
type response struct {
	mu          sync.Mutex
	status      int
	contentType string
	body        *countingBody
}

func (r *response) summary() (status int, contentType string, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.body != nil {
		n = r.body.n.Load()
	}
	return r.status, r.contentType, n
}

// observingTransport sets the User-Agent and records a response's status,
// content type and length.
type observingTransport struct {
	base http.RoundTripper
	ua   string
}

func (t observingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.ua != "" {
		r = r.Clone(r.Context())
		r.Header.Set("User-Agent", t.ua)
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil || resp == nil {
		return resp, err
	}
	if seen, ok := r.Context().Value(responseKey{}).(*response); ok {
		body := &countingBody{ReadCloser: resp.Body}
		resp.Body = body
		seen.mu.Lock()
		seen.status, seen.contentType, seen.body = resp.StatusCode, resp.Header.Get("Content-Type"), body
		seen.mu.Unlock()
	}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
