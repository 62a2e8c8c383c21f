package clientlib

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// HTTPClient makes http.Clients whose requests carry a tenant's token, and
// owns what they share (Source, broker connection or in-process broker,
// transport). It must be closed.
type HTTPClient struct {
	rt      http.RoundTripper // every request's way out; never changes
	src     *Source
	mode    string
	closers []func() error // what NewHTTPClient created, in creation order

	closeMu  sync.Mutex // the lifecycle lock
	closed   bool
	closeErr error
}

// NewHTTPClient returns an HTTPClient whose http.Clients authorise every
// request with a token (see Transport), like kognic-auth's AuthSession. It
// blocks until the first token or the end of ctx, which bounds only that.
// Where tokens come from, first match wins:
//
//  1. an option: WithBroker, WithCredentialsFile, WithClientCredentials,
//     WithEnvironment or WithEnvironmentByHost (only WithEnvironment
//     combines, with WithCredentialsFile);
//  2. TOKENBROKER_ADDR: broker mode, tenant TOKENBROKER_TENANT ("default");
//  3. KOGNIC_CREDENTIALS, else KOGNIC_CLIENT_ID and KOGNIC_CLIENT_SECRET:
//     direct mode against KOGNIC_AUTH_SERVER (default
//     https://auth.app.kognic.com, or WithAuthServer).
//
// Else it returns ErrNotConfigured. The client retries transient failures
// (WithRetries) and warns once per endpoint announcing its Sunset.
func NewHTTPClient(ctx context.Context, opts ...Option) (*HTTPClient, error) {
	cfg := &clientConfig{source: defaultSourceConfig(), lookup: os.LookupEnv,
		retries: DefaultRetries, retryInitial: defaultRetryInitial, retryMax: defaultRetryMax}
	for _, o := range opts {
		o.configureClient(cfg)
	}
	p, err := resolve(cfg)
	if err != nil {
		return nil, err
	}
	c := &HTTPClient{mode: p.describe()}
	fail := func(err error) (*HTTPClient, error) {
		_ = c.Close()
		return nil, err
	}
	base := cfg.transport.base
	if base == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		base = tr
		c.closers = append(c.closers, func() error { tr.CloseIdleConnections(); return nil })
	}
	inner := http.RoundTripper(newAPITransport(base, cfg))
	switch p.mode {
	case modeBroker:
		conn, err := dialBroker(p.addr, cfg)
		if err != nil {
			return fail(err)
		}
		c.closers = append(c.closers, conn.Close)
		src, err := newSource(ctx, conn, p.tenant, cfg.source)
		if err != nil {
			return fail(fmt.Errorf("%w (broker %s, from %s)", err, p.addr, p.from))
		}
		c.src = src
		c.closers = append(c.closers, src.Close)
	case modeDirect:
		src, closeFn, err := startDirect(ctx, p, cfg)
		if err != nil {
			return fail(err)
		}
		c.src = src
		c.closers = append(c.closers, closeFn)
	case modeByHost:
		r := &hostRouter{envs: p.envs, cfg: cfg, base: inner, entries: make(map[string]*envEntry)}
		c.closers = append(c.closers, r.Close)
		c.rt = r
	}
	if c.src != nil {
		c.rt = cfg.newTransport(c.src, inner)
	}
	return c, nil
}

// newTransport is the Transport of NewHTTPClient's options over base.
func (cfg *clientConfig) newTransport(src oauth2.TokenSource, base http.RoundTripper) *Transport {
	t := &Transport{src: src, cfg: cfg.transport}
	t.cfg.base = base
	return t
}

// Client returns a new *http.Client whose requests carry the token, so
// that changing it affects no other. Requests after Close fail with
// ErrClosed.
func (c *HTTPClient) Client() *http.Client { return &http.Client{Transport: c.rt} }

// Source returns the Source behind the client (nil with
// WithEnvironmentByHost), e.g. for PerRPCCredentials. Close closes it.
func (c *HTTPClient) Source() *Source { return c.src }

// Echoes reports whether text, e.g. built from what a server sent, spells
// one of the tokens the client holds (upstream.Echoes), so that it is not
// shown.
func (c *HTTPClient) Echoes(text string) bool {
	var srcs []*Source
	if c.src != nil {
		srcs = append(srcs, c.src)
	} else if r, ok := c.rt.(*hostRouter); ok {
		srcs = r.sources()
	}
	for _, src := range srcs {
		if tok, err := src.Token(); err == nil && upstream.Echoes(text, tok.AccessToken) {
			return true
		}
	}
	return false
}

// String describes where the client's tokens come from, without secrets.
func (c *HTTPClient) String() string { return "clientlib.HTTPClient: " + c.mode }

// Close closes what the client created, in reverse order, nothing it was
// given, and waits for the Source's goroutines. It is idempotent; every
// call returns the first's errors.
func (c *HTTPClient) Close() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if !c.closed {
		c.closed = true
		var errs []error
		for i := len(c.closers) - 1; i >= 0; i-- {
			errs = append(errs, c.closers[i]())
		}
		c.closeErr = errors.Join(errs...)
	}
	return c.closeErr
}
