package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

// The mapping of the config file's sections to the domain packages.

// withListen returns a copy of cfg (tenants copied too) whose listeners,
// Listen and Socket.Path, are listen's entries if there are any (the
// --listen flags); the unix_socket settings stay. It needs a listener.
func withListen(cfg *config.Config, listen []string) (*config.Config, error) {
	c := *cfg
	c.Tenants = append([]config.Tenant(nil), cfg.Tenants...)
	if len(listen) > 0 {
		var err error
		if c.Listen, c.Socket.Path, err = config.SplitListen(listen); err != nil {
			return nil, fmt.Errorf("daemon: --listen: %w", err)
		}
	}
	if c.Listen == "" && c.Socket.Path == "" {
		return nil, errors.New("daemon: no listener; set listen to a host:port, a unix:///path or both")
	}
	return &c, nil
}

// needSocket refuses callers identified on a Unix socket (unix_uid,
// unix_gid) when the broker has none: they could never connect.
func needSocket(cfg *config.Config, socket bool) error {
	for i, c := range cfg.Callers {
		if c.UsesSocket() && !socket {
			return cfg.ErrorAt(fmt.Sprintf("callers[%d]", i), fmt.Errorf(
				"caller %q is identified by its uid or gid on a Unix socket, but the broker listens on none; add a unix:///path entry to listen, e.g. listen: [%s, unix:///run/tokenbroker/broker.sock]", c.Name, config.DefaultListen))
		}
	}
	return nil
}

// newPolicy builds the access policy of cfg's callers; its errors carry
// the config file's line.
func newPolicy(cfg *config.Config) (*policy.Policy, error) {
	callers := make([]policy.Caller, len(cfg.Callers))
	for i, c := range cfg.Callers {
		callers[i] = policy.Caller(c) // the same fields
	}
	pol, err := policy.New(callers)
	if fe, ok := errors.AsType[*policy.FieldError](err); ok {
		return nil, cfg.ErrorAt(fe.Field, fe.Err)
	}
	if err != nil {
		return nil, fmt.Errorf("config: callers: %w", err)
	}
	return pol, nil
}

// upstreams builds each tenant's upstream client, wrapped to count and
// time its requests (instrumentedFetcher), and keeps it across reloads
// while the tenant's upstream settings stay the same: the broker treats a
// new Fetcher as a reconfigured tenant and would drop its tokens.
type upstreams struct {
	metrics   *metrics
	userAgent string
	log       *slog.Logger
	// pools shares one connection pool per token endpoint host and CA set
	// among the tenants (the broker bounds the requests to each host).
	pools *upstream.Pools

	mu      sync.RWMutex
	current map[string]fetcherOf // the broker's tenants once committed
}

// fetcherOf is a tenant's Fetcher and the settings it was built from.
type fetcherOf struct {
	spec config.Tenant
	f    broker.Fetcher
}

func newUpstreams(m *metrics, userAgent string, log *slog.Logger, wrap func(http.RoundTripper) http.RoundTripper) *upstreams {
	// Pools maps transport errors innermost, so that tracing (otelhttp
	// puts err.Error() in the span status) never sees transport text that
	// quotes the IdP's bytes.
	return &upstreams{metrics: m, userAgent: userAgent, log: log, current: map[string]fetcherOf{},
		pools: upstream.NewPools(upstream.PoolsConfig{Wrap: wrap})}
}

// tenants maps the config's tenants to the core's; the config parser has
// already read each ca_file into RootCAs. Call commit with next once the
// broker took them. Calls are serialised (New, reload).
func (u *upstreams) tenants(ts []config.Tenant) (_ []broker.Tenant, next map[string]fetcherOf, _ error) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	out := make([]broker.Tenant, 0, len(ts))
	next = make(map[string]fetcherOf, len(ts))
	for _, t := range ts {
		fallbacks := t.Fallbacks
		built, ok := u.current[t.Name]
		if !ok || !sameUpstream(built.spec, t) {
			hc, err := u.pools.Client(t.TokenURL, t.RootCAs)
			if err != nil {
				return nil, nil, fmt.Errorf("daemon: tenant %q: %w", t.Name, err)
			}
			// upstream logs only about fallback credentials; a logger of
			// its own (With preformats its attributes: ~200 bytes) only
			// for a tenant that has them.
			log := u.log
			if len(fallbacks) > 0 {
				log = u.log.With("tenant", t.Name)
			}
			c, err := upstream.New(upstream.Config{
				TokenURL: t.TokenURL, ClientID: t.ClientID, ClientSecret: t.ClientSecret,
				ClientKey: t.ClientKey, KeyID: t.KeyID, AssertionAudience: t.AssertionAudience,
				AuthStyle: t.AuthStyle.OAuth2(), HTTPClient: hc, UserAgent: u.userAgent,
				Fallbacks: fallbacks, Logger: log,
			})
			if err != nil {
				return nil, nil, fmt.Errorf("daemon: tenant %q: %w", t.Name, err)
			}
			built.f = &instrumentedFetcher{next: c, stats: u.metrics.idp.stats(t.Name)}
		}
		next[t.Name] = fetcherOf{spec: t, f: built.f}
		out = append(out, broker.Tenant{
			Name: t.Name, TokenURL: t.TokenURL, ClientID: t.ClientID,
			ClientSecret: t.ClientSecret, ClientKey: t.ClientKey, KeyID: t.KeyID, AssertionAudience: t.AssertionAudience,
			Scopes: t.Scopes, AuthStyle: t.AuthStyle.OAuth2(), RootCAs: t.RootCAs,
			Fallbacks: fallbacks, Fetcher: built.f,
		})
	}
	return out, next, nil
}

// scopes are tenant's default scopes, for the guard.
func (u *upstreams) scopes(tenant string) []string {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return u.current[tenant].spec.Scopes
}

func (u *upstreams) commit(next map[string]fetcherOf) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.current = next
	// A removed tenant's IdP series end with it, like its state gauges.
	u.metrics.idp.retain(func(tenant string) bool { _, ok := next[tenant]; return ok })
}

// sameUpstream reports whether two tenants' upstream clients would be
// built alike (the fields broker.Tenant's own comparison checks, scopes
// aside: a Fetcher gets its scopes per request).
func sameUpstream(a, b config.Tenant) bool {
	return a.Name == b.Name && a.TokenURL == b.TokenURL && a.ClientID == b.ClientID &&
		a.ClientSecret.Equal(b.ClientSecret) && a.ClientKey.Equal(b.ClientKey) && a.KeyID == b.KeyID &&
		a.AssertionAudience == b.AssertionAudience &&
		a.AuthStyle.OAuth2() == b.AuthStyle.OAuth2() && a.RootCAs.Equal(b.RootCAs) &&
		slices.EqualFunc(a.Fallbacks, b.Fallbacks, upstream.Credential.Equal)
}

// warnDeprecatedLimits names the limits a config sets that no longer
// apply: the guard caps calls per caller and, without credentials, per
// peer address, where five stream caps did before.
func warnDeprecatedLimits(l limits.Limits, log *slog.Logger) {
	for _, key := range limits.Keys() {
		use, deprecated := limits.Deprecated(key)
		if v, ok := l.Ptr(key).(*int); ok && deprecated && *v != 0 {
			log.Warn("limits."+key+" is deprecated and ignored; open calls are capped per caller over all its addresses (limits.max_streams_per_caller) and, without credentials, per peer address (limits.max_anonymous_streams_per_ip)",
				"key", "limits."+key, "use", "limits."+use)
		}
	}
}

// openAudit opens the audit trail: the file at a.Path, or out for "" and
// "-", with a.Fsync's policy.
func openAudit(a config.Audit, out io.Writer, log *slog.Logger) (*audit.Logger, error) {
	path := a.Path
	if path == "" || path == "-" {
		return audit.New(out), nil
	}
	l, err := audit.Open(path)
	if err != nil {
		return nil, err
	}
	switch {
	case a.Fsync == config.AuditFsyncEachBatch:
		l.SetSyncInterval(audit.SyncEachBatch)
	case a.Fsync > 0:
		l.SetSyncInterval(a.Fsync)
	}
	if err := creds.CheckFileMode(path); err != nil {
		log.Warn("audit file readable by group or others; it is created 0600, but this one already existed", "file", path, "error", err)
	}
	return l, nil
}

// checkPlaintext is the one rule of a listener (field, at addr) that
// serves callers without TLS: with callers configured, a non-loopback
// address is refused, since API keys would cross the network in clear,
// unless insecure_plaintext accepts it (with a warning).
func checkPlaintext(field, addr string, cfg *config.Config, callers bool, log *slog.Logger) error {
	if !callers || cfg.TLS != nil || isLoopbackAddr(addr) {
		return nil
	}
	if !cfg.InsecurePlaintext {
		return fmt.Errorf("daemon: callers are configured but %s %s is a plaintext listener on a non-loopback address, where API keys would cross the network in clear; add a tls section, listen on a loopback address, or set insecure_plaintext: true to accept this", field, addr)
	}
	log.Warn("INSECURE PLAINTEXT: callers are configured and the listener is plaintext on a non-loopback address (insecure_plaintext: true); client certificates and API keys from other hosts cannot authenticate", field, addr)
	return nil
}

// isLoopbackAddr applies upstream's one loopback rule to a host:port.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && upstream.IsLoopbackHost(host)
}
