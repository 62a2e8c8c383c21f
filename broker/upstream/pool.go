package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Pools shares one *http.Transport among the clients of a scheme, host and
// CA set, so that ten thousand tenants of one IdP keep a few connections.
// A pool lives as long as the Pools. It is safe for concurrent use.
type Pools struct {
	cfg PoolsConfig

	mu sync.Mutex
	by map[poolKey][]*pool // several CA sets may share a host
}

// PoolsConfig configures Pools. Zero values mean defaults.
type PoolsConfig struct {
	// HTTPClient is the pools' template (nil: a 30 s timeout); its
	// Transport must be nil or an *http.Transport for custom roots.
	HTTPClient *http.Client
	// Wrap wraps each pool's transport over MapTransportErrors (tracing);
	// it sees each URL as RedactURL shows it.
	Wrap func(http.RoundTripper) http.RoundTripper
}

type poolKey struct{ scheme, host string }

type pool struct {
	roots  *x509.CertPool
	client *http.Client
}

// NewPools returns Pools configured by cfg.
func NewPools(cfg PoolsConfig) *Pools {
	return &Pools{cfg: cfg, by: map[poolKey][]*pool{}}
}

// Client returns the shared client for tokenURL trusting roots (nil: the
// system roots), compared by content: tenants of one ca_file share a pool.
func (p *Pools) Client(tokenURL string, roots *x509.CertPool) (*http.Client, error) {
	u, err := url.Parse(tokenURL)
	if err != nil {
		return nil, fmt.Errorf("upstream: token URL %q: must be an absolute http(s) URL", RedactURL(tokenURL))
	}
	k := poolKey{scheme: u.Scheme, host: u.Host}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pl := range p.by[k] {
		if pl.roots.Equal(roots) {
			return pl.client, nil
		}
	}
	c, err := p.newClient(roots)
	if err != nil {
		return nil, err
	}
	p.by[k] = append(p.by[k], &pool{roots: roots, client: c})
	return c, nil
}

func (p *Pools) newClient(roots *x509.CertPool) (*http.Client, error) {
	c := http.Client{Timeout: 30 * time.Second}
	if p.cfg.HTTPClient != nil {
		c = *p.cfg.HTTPClient
	}
	var rt http.RoundTripper
	switch t := c.Transport.(type) {
	case nil:
		rt = MapTransportErrors(tune(http.DefaultTransport.(*http.Transport).Clone(), roots))
	case *http.Transport:
		rt = MapTransportErrors(tune(t.Clone(), roots))
	default:
		if roots != nil {
			return nil, fmt.Errorf("upstream: root CAs need the HTTP client's Transport to be an *http.Transport, not %T", t)
		}
		rt = t // the caller's transport, pooled as it pools
	}
	if p.cfg.Wrap != nil {
		rt = redactingTransport{base: p.cfg.Wrap(restoringTransport{base: rt})}
	}
	c.Transport = &poolTransport{base: rt}
	return &c, nil
}

// tune keeps every idle connection of tr (the broker bounds the requests
// per host) and trusts roots if set.
func tune(tr *http.Transport, roots *x509.CertPool) *http.Transport {
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 0, math.MaxInt
	if roots != nil {
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tr.TLSClientConfig.RootCAs = roots
		tr.TLSClientConfig.InsecureSkipVerify = false
	}
	return tr
}

// CloseIdleConnections closes the idle connections of every pool.
func (p *Pools) CloseIdleConnections() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ps := range p.by {
		for _, pl := range ps {
			pl.client.CloseIdleConnections()
		}
	}
}

// poolTransport is a pool's transport (see prepared).
type poolTransport struct {
	base http.RoundTripper

	mu      sync.Mutex
	clients map[preparedKey]*http.Client
}

type preparedKey struct {
	base      *http.Client
	userAgent string
}

// prepared is prepare(base, userAgent) made once, shared by the tenants
// of one host.
func (t *poolTransport) prepared(base *http.Client, userAgent string) *http.Client {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := preparedKey{base, userAgent}
	hc := t.clients[k]
	if hc == nil {
		hc = prepare(base, userAgent)
		if t.clients == nil {
			t.clients = map[preparedKey]*http.Client{}
		}
		t.clients[k] = hc
	}
	return hc
}

func (t *poolTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return t.base.RoundTrip(r)
}

func (t *poolTransport) CloseIdleConnections() { closeIdle(t.base) }
