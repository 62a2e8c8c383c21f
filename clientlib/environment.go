package clientlib

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/kognic"
)

// hostRouter is WithEnvironmentByHost's transport: each request goes
// through the Transport of its host's environment, started on first use.
type hostRouter struct {
	envs *creds.Environments
	cfg  *clientConfig
	base http.RoundTripper // below each environment's Transport

	mu      sync.Mutex
	closed  bool
	entries map[string]*envEntry // by environment name; "" is the environment variables
}

// envEntry is one environment's transport, ready once ready is closed.
type envEntry struct {
	ready   chan struct{}
	src     *Source
	tr      *Transport
	closeFn func() error
	err     error
}

// RoundTrip implements http.RoundTripper.
func (r *hostRouter) RoundTrip(req *http.Request) (*http.Response, error) {
	// A redirect stays with the environment of the entry request.
	u := req.URL
	if entry, ok := entryURL(req); ok {
		u = entry
	}
	env, err := r.environment(u.Hostname())
	var tr *Transport
	if err == nil {
		tr, err = r.transport(req.Context(), env)
	}
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return tr.RoundTrip(req)
}

// environment returns the environment for requests to host, or nil (the
// KOGNIC_* variables) for the Kognic platform's host; any other host is an
// error.
func (r *hostRouter) environment(host string) (*creds.Environment, error) {
	if e, ok := r.envs.ForHost(host); ok {
		return &e, nil
	}
	if creds.HostMatches(host, kognic.DefaultAPIHost) {
		return nil, nil
	}
	known := fmt.Sprintf("%s defines no environments", r.envs.Path)
	if names := r.envs.Names(); len(names) > 0 {
		for i, n := range names {
			names[i] = fmt.Sprintf("%s (%s)", n, r.envs.Envs[n].Host)
		}
		known = fmt.Sprintf("the environments of %s are %s", r.envs.Path, strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("%w %q, so no token is sent there: %s, and the KOGNIC_* variables serve only %s; add the host to an environment, or name the environment to use (WithEnvironment; --env in broker call)",
		ErrUnknownHost, host, known, kognic.DefaultAPIHost)
}

// transport returns env's Transport, starting its token source on the
// first request, bounded by its ctx and shared by concurrent ones. A
// failed start is not remembered.
func (r *hostRouter) transport(ctx context.Context, env *creds.Environment) (*Transport, error) {
	name := ""
	if env != nil {
		name = env.Name
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	e := r.entries[name]
	if e != nil {
		r.mu.Unlock()
		select {
		case <-e.ready:
			return e.tr, e.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	e = &envEntry{ready: make(chan struct{})}
	r.entries[name] = e
	r.mu.Unlock()

	src, closeFn, err := r.start(ctx, env)
	r.mu.Lock()
	defer r.mu.Unlock()
	defer close(e.ready)
	switch {
	case err != nil:
		delete(r.entries, name)
		e.err = err
	case r.closed:
		_ = closeFn()
		e.err = ErrClosed
	default:
		e.src, e.tr, e.closeFn = src, r.cfg.newTransport(src, r.base), closeFn
	}
	return e.tr, e.err
}

// sources returns the token sources of the environments started so far.
func (r *hostRouter) sources() []*Source {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*Source
	for _, e := range r.startedLocked() {
		if e.src != nil {
			out = append(out, e.src)
		}
	}
	return out
}

// startedLocked returns the entries whose start has ended.
func (r *hostRouter) startedLocked() []*envEntry {
	var out []*envEntry
	for _, e := range r.entries {
		select {
		case <-e.ready:
			out = append(out, e)
		default:
		}
	}
	return out
}

func (r *hostRouter) start(ctx context.Context, env *creds.Environment) (*Source, func() error, error) {
	what := "the KOGNIC_* environment variables, for " + kognic.DefaultAPIHost
	if env != nil {
		what = fmt.Sprintf("environment %q", env.Name)
	}
	p, err := resolveDirect(r.cfg, choice{}, env)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (%s)", err, what)
	}
	src, closeFn, err := startDirect(ctx, p, r.cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (%s)", err, what)
	}
	return src, closeFn, nil
}

// Close closes every environment's token source; one still starting
// closes itself when its start ends.
func (r *hostRouter) Close() error {
	r.mu.Lock()
	r.closed = true
	started := r.startedLocked()
	r.mu.Unlock()
	var errs []error
	for _, e := range started {
		if e.closeFn != nil {
			errs = append(errs, e.closeFn())
		}
	}
	return errors.Join(errs...)
}
