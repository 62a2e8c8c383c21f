package clientlib

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/local"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/config"
	brokercreds "github.com/tokenbroker/tokenbroker/broker/credentials"
	"github.com/tokenbroker/tokenbroker/broker/names"
)

// Environment variables read by NewHTTPClient, besides the KOGNIC_* ones of
// package credentials and KOGNIC_AUTH_SERVER.
const (
	// EnvBrokerAddr is the broker's address; when set, tokens come from the
	// broker.
	EnvBrokerAddr = "TOKENBROKER_ADDR"
	// EnvBrokerTenant is the tenant to ask the broker for; default
	// "default".
	EnvBrokerTenant = "TOKENBROKER_TENANT"
)

// DefaultTenant is the tenant asked for when none is named.
const DefaultTenant = "default"

// ErrNotConfigured is returned by NewHTTPClient when neither options nor the
// environment say where tokens come from.
var ErrNotConfigured = errors.New("clientlib: no token source configured: set " + EnvBrokerAddr +
	" (and optionally " + EnvBrokerTenant + ") to use a token broker, or " + brokercreds.EnvCredentials +
	" to a Kognic credentials file, or " + brokercreds.EnvClientID + " and " + brokercreds.EnvClientSecret +
	"; or pass WithBroker, WithCredentialsFile or WithClientCredentials")

// brokerServiceConfig spreads calls over every address of the broker name.
const brokerServiceConfig = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// brokerKeepalive detects a vanished broker replica on an idle watch stream.
// The broker server permits pings every 20s (internal/server).
var brokerKeepalive = keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}

// HTTPClient is an *http.Client whose requests carry a tenant's token, with
// the Source behind it. It must be closed to release the broker connection
// (broker mode) or stop refreshing (direct mode).
type HTTPClient struct {
	*http.Client

	src       *Source
	mode      string
	closers   []func() error
	closeOnce sync.Once
	closeErr  error
}

// NewHTTPClient returns an HTTP client that authorises every request with a
// token, refreshed ahead of expiry, replaced and retried once on 401 (see
// Transport): the Go counterpart of kognic-auth's AuthSession. It blocks
// until the first token arrives or ctx ends; ctx bounds only that.
//
// Where tokens come from, first match wins:
//
//  1. an option: WithBroker, WithCredentialsFile or WithClientCredentials
//     (more than one is an error);
//  2. TOKENBROKER_ADDR: broker mode, for tenant TOKENBROKER_TENANT (default
//     "default");
//  3. KOGNIC_CREDENTIALS (a credentials file), else KOGNIC_CLIENT_ID and
//     KOGNIC_CLIENT_SECRET: direct mode, the client-credentials grant
//     against KOGNIC_AUTH_SERVER (default https://auth.app.kognic.com, or
//     WithAuthServer) at /v1/auth/oauth/token, with the broker's own token
//     lifecycle running in process.
//
// With none of these it returns an error wrapping ErrNotConfigured.
//
// Broker mode dials "dns:///<addr>" with round_robin over every address and
// keepalive, so that calls spread over replicas and the watch stream fails
// over; a loopback or unix-socket broker is dialled without TLS, any other
// with TLS unless WithTransportCredentials says otherwise.
func NewHTTPClient(ctx context.Context, opts ...Option) (*HTTPClient, error) {
	cfg := &clientConfig{source: defaultSourceConfig(), lookup: os.LookupEnv}
	for _, o := range opts {
		o.applyClient(cfg)
	}
	p, err := resolve(cfg, time.Now())
	if err != nil {
		return nil, err
	}
	c := &HTTPClient{mode: p.describe()}
	fail := func(err error) (*HTTPClient, error) {
		_ = c.Close()
		return nil, err
	}
	base := cfg.base
	if base == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		base = tr
		c.closers = append(c.closers, func() error { tr.CloseIdleConnections(); return nil })
	}
	switch p.mode {
	case modeBroker:
		conn, err := dialBroker(p.addr, cfg)
		if err != nil {
			return fail(err)
		}
		c.closers = append(c.closers, conn.Close)
		src, err := NewSource(ctx, conn, p.tenant, withSourceConfig(cfg.source))
		if err != nil {
			return fail(fmt.Errorf("%w (broker %s, from %s)", err, p.addr, p.from))
		}
		c.src = src
	case modeDirect:
		d, err := newDirect(p.direct, cfg)
		if err != nil {
			return fail(fmt.Errorf("clientlib: direct mode (%s): %w", p.from, err))
		}
		c.closers = append(c.closers, d.Close)
		be := &directBackend{b: d.b, tenant: directTenant}
		src, err := startSource(ctx, be, directTenant, nil, cfg.source)
		if err != nil {
			return fail(fmt.Errorf("%w (direct mode, %s)", err, p.from))
		}
		c.src = src
	}
	c.closers = append(c.closers, c.src.Close)
	c.Client = &http.Client{Transport: &Transport{Source: c.src, Base: base, AllowInsecureHTTP: cfg.insecureHTTP}}
	return c, nil
}

// withSourceConfig passes a resolved sourceConfig on as an option.
func withSourceConfig(sc sourceConfig) SourceOption {
	return sourceOption(func(c *sourceConfig) { *c = sc })
}

// Source returns the Source behind the client, e.g. for PerRPCCredentials
// in direct mode. Closing the client closes it.
func (c *HTTPClient) Source() *Source { return c.src }

// String describes where the client's tokens come from, without secrets.
func (c *HTTPClient) String() string { return "clientlib.HTTPClient: " + c.mode }

// TokenSource returns the client's Source as an oauth2.TokenSource.
func (c *HTTPClient) TokenSource() oauth2.TokenSource { return c.src }

// Close stops the token Source, closes the broker connection or the
// in-process broker, and the idle connections of the transport the client
// created. It is idempotent. Requests made afterwards fail with ErrClosed.
func (c *HTTPClient) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		for i := len(c.closers) - 1; i >= 0; i-- {
			errs = append(errs, c.closers[i]())
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

type mode int

const (
	modeBroker mode = iota + 1
	modeDirect
)

// plan is where tokens come from, as resolved from options and environment.
type plan struct {
	mode mode
	from string // the option or environment variables that chose it
	// broker mode
	addr, tenant string
	// direct mode
	direct broker.Tenant
}

func (p *plan) describe() string {
	if p.mode == modeBroker {
		return fmt.Sprintf("broker %s, tenant %q (from %s)", p.addr, p.tenant, p.from)
	}
	return fmt.Sprintf("direct to %s as client %s (from %s)", p.direct.TokenURL, p.direct.ClientID, p.from)
}

// resolve decides where tokens come from. It reads the environment only
// through cfg.lookup and touches no network.
func resolve(cfg *clientConfig, now time.Time) (*plan, error) {
	get := func(key string) string {
		v, _ := cfg.lookup(key)
		return strings.TrimSpace(v)
	}
	var ch choice
	switch len(cfg.choices) {
	case 0:
		switch addr, tenant := get(EnvBrokerAddr), get(EnvBrokerTenant); {
		case addr != "":
			ch = choice{option: EnvBrokerAddr, addr: addr, tenant: tenant}
		case tenant != "":
			return nil, fmt.Errorf("clientlib: %s is set but %s is not; set %s to the broker's address, or unset %s",
				EnvBrokerTenant, EnvBrokerAddr, EnvBrokerAddr, EnvBrokerTenant)
		}
	case 1:
		ch = cfg.choices[0]
	default:
		return nil, fmt.Errorf("clientlib: %s and %s both say where tokens come from; pass only one of WithBroker, WithCredentialsFile and WithClientCredentials",
			cfg.choices[0].option, cfg.choices[1].option)
	}

	if ch.option == "WithBroker" || ch.option == EnvBrokerAddr {
		return resolveBroker(cfg, ch)
	}
	return resolveDirect(cfg, ch, now)
}

func resolveBroker(cfg *clientConfig, ch choice) (*plan, error) {
	p := &plan{mode: modeBroker, from: ch.option, addr: strings.TrimSpace(ch.addr), tenant: ch.tenant}
	if ch.option == EnvBrokerAddr && ch.tenant != "" {
		p.from += " and " + EnvBrokerTenant
	}
	if p.addr == "" {
		return nil, errors.New("clientlib: WithBroker: the broker address is empty; pass host:port")
	}
	if p.tenant == "" {
		p.tenant = DefaultTenant
	}
	if err := names.ValidTenant(p.tenant); err != nil {
		return nil, fmt.Errorf("clientlib: %s: %w", p.from, err)
	}
	if cfg.authServer != "" {
		return nil, fmt.Errorf("clientlib: WithAuthServer applies to direct mode only, but %s selects broker mode, where the broker holds the tenant's token URL", ch.option)
	}
	if _, err := names.NormalizeScopes(cfg.source.scopes); err != nil {
		return nil, fmt.Errorf("clientlib: WithScopes: %w", err)
	}
	return p, nil
}

// resolveDirect builds direct mode's tenant with the broker's own parsing
// of the Kognic environment (config.FromEnv), feeding it the explicit
// options in place of the environment variables they override.
func resolveDirect(cfg *clientConfig, ch choice, now time.Time) (*plan, error) {
	overlay := map[string]string{}
	from := ""
	switch ch.option {
	case "WithClientCredentials":
		if strings.TrimSpace(ch.clientID) == "" || strings.TrimSpace(ch.secret) == "" {
			return nil, errors.New("clientlib: WithClientCredentials: the client ID and the client secret must both be non-empty")
		}
		overlay[brokercreds.EnvCredentials] = ""
		overlay[brokercreds.EnvClientID] = ch.clientID
		overlay[brokercreds.EnvClientSecret] = ch.secret
		from = ch.option
	case "WithCredentialsFile":
		// Loaded here first for an error that names the option, not the
		// environment variable.
		if _, err := brokercreds.LoadFile(ch.file, now); err != nil {
			return nil, fmt.Errorf("clientlib: WithCredentialsFile: %w", err)
		}
		overlay[brokercreds.EnvCredentials] = ch.file
		from = ch.option
	}
	server, serverFrom := strings.TrimSpace(cfg.lookup1(config.EnvAuthServer)), config.EnvAuthServer
	if cfg.authServer != "" {
		if err := checkAuthServer(cfg.authServer); err != nil {
			return nil, fmt.Errorf("clientlib: WithAuthServer: %w", err)
		}
		overlay[config.EnvAuthServer] = cfg.authServer
		server, serverFrom = cfg.authServer, "WithAuthServer"
	}
	// The client secret goes to the auth server: plain http only to
	// loopback, as the broker requires of KOGNIC_AUTH_SERVER.
	if u, err := url.Parse(server); err == nil && u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("%w: the auth server %s://%s (%s) is plain http and would receive the client secret unencrypted; use https (plain http is accepted only for loopback)",
			ErrInsecureTransport, u.Scheme, u.Host, serverFrom)
	}
	lookup := func(key string) (string, bool) {
		if v, ok := overlay[key]; ok {
			return v, true
		}
		return cfg.lookup(key)
	}
	bc, err := config.FromEnv(lookup, now)
	if errors.Is(err, brokercreds.ErrNoCredentials) {
		return nil, ErrNotConfigured
	}
	if err != nil {
		return nil, fmt.Errorf("clientlib: direct mode: %w", err)
	}
	t := bc.Tenants[0]
	if from == "" {
		from = t.CredentialsSource
	}
	spec := broker.Tenant{
		Name: directTenant, TokenURL: t.TokenURL, ClientID: t.ClientID, ClientSecret: t.ClientSecret,
		Scopes: t.Scopes, AuthStyle: oauth2.AuthStyleInParams,
	}
	if t.AuthStyle == config.AuthStyleBasic {
		spec.AuthStyle = oauth2.AuthStyleInHeader
	}
	if cfg.source.scopesSet {
		if spec.Scopes, err = names.NormalizeScopes(cfg.source.scopes); err != nil {
			return nil, fmt.Errorf("clientlib: WithScopes: %w", err)
		}
	}
	return &plan{mode: modeDirect, from: from, direct: spec}, nil
}

// checkAuthServer checks an auth server base URL.
func checkAuthServer(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errors.New("not a valid URL")
	case u.User != nil:
		return errors.New("the URL must not contain a user or password")
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.Opaque != "":
		return fmt.Errorf("%q is not an absolute http(s) URL, e.g. %s", s, config.DefaultAuthServer)
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%q must not have a query or fragment", s)
	}
	return nil
}

// dialBroker creates the connection to the broker; it connects lazily.
func dialBroker(addr string, cfg *clientConfig) (*grpc.ClientConn, error) {
	target := brokerTarget(addr)
	creds := cfg.transportCreds
	if creds == nil {
		if isLocalTarget(target) {
			creds = local.NewCredentials()
		} else {
			creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
		}
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(brokerServiceConfig),
		grpc.WithKeepaliveParams(brokerKeepalive),
		grpc.WithUserAgent(userAgent),
	}, cfg.dialOpts...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("clientlib: broker %s: %w", addr, err)
	}
	return conn, nil
}

// brokerTarget turns a host:port into a dns:/// target and keeps a target
// that already names a registered resolver scheme.
func brokerTarget(addr string) string {
	if u, err := url.Parse(addr); err == nil && u.Scheme != "" && resolver.Get(u.Scheme) != nil {
		return addr
	}
	return "dns:///" + addr
}

// isLocalTarget reports whether a target names a unix socket or a loopback
// host.
func isLocalTarget(target string) bool {
	u, err := url.Parse(target)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "unix", "unix-abstract":
		return true
	}
	endpoint := strings.TrimPrefix(u.Path, "/")
	if endpoint == "" {
		endpoint = u.Opaque
	}
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		host = endpoint
	}
	return isLoopbackHost(host)
}

// modulePath is the module this package belongs to.
const modulePath = "github.com/tokenbroker/tokenbroker"

// userAgent is sent to the auth server in direct mode and to the broker.
var userAgent = "tokenbroker-clientlib/" + moduleVersion() + " go/" + runtime.Version()

// moduleVersion returns the version of this module in the running binary,
// or "devel".
func moduleVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if bi.Main.Path == modulePath && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == modulePath && d.Version != "" {
			return d.Version
		}
	}
	return "devel"
}
