package clientlib

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// directTenant is the name of direct mode's only tenant.
const directTenant = DefaultTenant

// idpTimeout bounds one request to the auth server in direct mode.
const idpTimeout = 30 * time.Second

// startDirect starts direct mode: the broker's own token core in process,
// with a transport of its own, and a Source on it; closeFn closes all three.
func startDirect(ctx context.Context, p *plan, cfg *clientConfig) (_ *Source, closeFn func() error, _ error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	b, err := broker.New(broker.Config{
		Tenants:    []broker.Tenant{p.direct}, // named directTenant
		Logger:     cfg.source.logger,
		HTTPClient: &http.Client{Transport: tr, Timeout: idpTimeout},
		UserAgent:  userAgent,
	})
	if err != nil {
		tr.CloseIdleConnections()
		return nil, nil, fmt.Errorf("clientlib: direct mode (%s): %w", p.from, err)
	}
	closeBroker := func() {
		b.Close() // waits for the broker's goroutines
		tr.CloseIdleConnections()
	}
	src, err := startSource(ctx, &directBackend{b: b, tenant: directTenant}, directTenant, nil, cfg.source)
	if ue, ok := errors.AsType[*upstream.Error](err); ok && cfg.source.failFast && !ue.Transient() {
		closeBroker() // WithFailFast: what the auth server said, and what set it
		from := "its URL from " + p.serverFrom + ", the credentials from " + p.from
		if p.serverFrom == p.from {
			from = "its URL and the credentials from " + p.from
		}
		return nil, nil, withKind(brokerKind(ue), fmt.Errorf("clientlib: no token from the auth server (%s): %w", from, ue))
	}
	if err != nil {
		closeBroker()
		return nil, nil, fmt.Errorf("%w (direct mode, %s)", err, p.from)
	}
	return src, func() error { err := src.Close(); closeBroker(); return err }, nil
}

// directBackend is a Source's view of the in-process broker.
type directBackend struct {
	b      *broker.Broker
	tenant string
	scopes []string
}

func (d *directBackend) getToken(ctx context.Context, minValid time.Duration) (rawToken, error) {
	return brokerToken(d.b.Token(ctx, d.tenant, d.scopes, minValid))
}

func (d *directBackend) invalidate(ctx context.Context, sha string) (rawToken, error) {
	return brokerToken(d.b.Invalidate(ctx, d.tenant, d.scopes, sha))
}

func brokerToken(t *broker.Token, err error) (rawToken, error) {
	if err != nil {
		return rawToken{}, err
	}
	return fromBroker(t), nil
}

func (d *directBackend) watch(ctx context.Context) (stream, error) {
	w, err := d.b.Watch(d.tenant, d.scopes)
	if err != nil {
		return nil, err
	}
	return &directStream{ctx: ctx, w: w}, nil
}

func (d *directBackend) kind(err error) error { return brokerKind(err) }

type directStream struct {
	ctx context.Context
	w   *broker.Watch
}

func (s *directStream) recv() (update, error) {
	for {
		select {
		case <-s.w.Ready():
		case <-s.ctx.Done():
			return update{}, s.ctx.Err()
		}
		u, ok, ended := s.w.Next()
		if ended {
			if err := s.w.Err(); err != nil {
				return update{}, err
			}
			return update{}, broker.ErrClosed
		}
		if !ok {
			continue
		}
		out := update{state: u.Status.State.String(), failing: u.Status.State == broker.StateFailing}
		if u.Status.LastError != nil {
			out.lastErr = u.Status.LastError.Error()
		}
		if u.Token != nil {
			t := fromBroker(u.Token)
			out.tok = &t
		}
		return out, nil
	}
}

func (s *directStream) close() { s.w.Close() }

func fromBroker(t *broker.Token) rawToken {
	return rawToken{access: t.AccessToken, typ: t.TokenType, issued: t.IssuedAt, expiry: t.Expiry}
}
