package clientlib

import (
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc"
)

// Options, in go-spiffe's style: each constructor takes an interface with
// an unexported method. An option that several constructors accept
// implements each of their interfaces, so a misplaced option does not
// compile.

// Option configures NewHTTPClient. Every SourceOption and TransportOption
// is also an Option.
type Option interface {
	configureClient(*clientConfig)
}

// SourceOption configures NewSource, and each Source that NewHTTPClient
// starts.
type SourceOption interface {
	Option
	configureSource(*sourceConfig)
}

// TransportOption configures NewTransport, and the Transport of
// NewHTTPClient.
type TransportOption interface {
	Option
	configureTransport(*transportConfig)
}

// PerRPCOption configures PerRPCCredentials.
type PerRPCOption interface {
	configurePerRPC(*perRPC)
}

// Defaults.
const (
	// DefaultMinValid is the remaining validity below which Token asks the
	// broker for a fresher token instead of answering from its cache.
	DefaultMinValid = time.Minute
	// DefaultRPCTimeout bounds one shared GetToken or InvalidateToken call.
	DefaultRPCTimeout = 30 * time.Second
	// DefaultRetries is how many times NewHTTPClient's client retries a
	// request after a transient failure (kognic-auth's count).
	DefaultRetries = 3

	defaultBackoffInitial = 500 * time.Millisecond
	defaultBackoffMax     = 30 * time.Second
	defaultRetryInitial   = 500 * time.Millisecond
	defaultRetryMax       = 8 * time.Second
)

type sourceConfig struct {
	scopes         []string
	scopesSet      bool
	failFast       bool // WithFailFast
	minValid       time.Duration
	rpcTimeout     time.Duration
	backoffInitial time.Duration
	backoffMax     time.Duration
	logger         *slog.Logger
	loggerSet      bool // WithLogger was given
}

func defaultSourceConfig() sourceConfig {
	return sourceConfig{
		minValid:       DefaultMinValid,
		rpcTimeout:     DefaultRPCTimeout,
		backoffInitial: defaultBackoffInitial,
		backoffMax:     defaultBackoffMax,
		logger:         slog.New(slog.DiscardHandler),
	}
}

type transportConfig struct {
	base              http.RoundTripper
	allowInsecureHTTP bool
	statusErrors      bool
}

// clientConfig is what NewHTTPClient's options set.
type clientConfig struct {
	source    sourceConfig
	transport transportConfig
	lookup    func(string) (string, bool)
	// choices are the options that choose where tokens come from; more
	// than one is an error.
	choices                []choice
	authServer             string
	envFile                string // WithEnvironmentsFile; "" means creds.DefaultEnvironmentsPath
	dialOpts               []grpc.DialOption
	retries                int
	retryInitial, retryMax time.Duration
	now                    func() time.Time // nil: time.Now; set by tests
}

func defaultClientConfig(lookup func(string) (string, bool)) *clientConfig {
	return &clientConfig{source: defaultSourceConfig(), lookup: lookup,
		retries: DefaultRetries, retryInitial: defaultRetryInitial, retryMax: defaultRetryMax}
}

// clock returns the current time, e.g. for credentials files' expiry.
func (c *clientConfig) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// lookup1 returns the value of an environment variable, or "".
func (c *clientConfig) lookup1(key string) string {
	v, _ := c.lookup(key)
	return v
}

// choice is one option choosing where tokens come from.
type choice struct {
	option           string // the option's name, for errors
	addr, tenant     string // WithBroker
	file             string // WithCredentialsFile
	clientID, secret string // WithClientCredentials
	env              string // WithEnvironment
}

type clientOption func(*clientConfig)

// choose is an option that chooses where tokens come from.
func choose(ch choice) Option {
	return clientOption(func(c *clientConfig) { c.choices = append(c.choices, ch) })
}

func (o clientOption) configureClient(c *clientConfig) { o(c) }

type sourceOption func(*sourceConfig)

func (o sourceOption) configureSource(c *sourceConfig) { o(c) }
func (o sourceOption) configureClient(c *clientConfig) { o(&c.source) }

type transportOption func(*transportConfig)

func (o transportOption) configureTransport(c *transportConfig) { o(c) }
func (o transportOption) configureClient(c *clientConfig)       { o(&c.transport) }

type perRPCOption func(*perRPC)

func (o perRPCOption) configurePerRPC(p *perRPC) { o(p) }

// WithBroker gets tokens of tenant (empty means "default") from the token
// broker at addr: a host:port, resolved through DNS and balanced round-robin
// over every address, or a gRPC target with a scheme such as
// "dns:///broker.example:50051" or "unix:///run/tokenbroker.sock". It
// overrides TOKENBROKER_ADDR and TOKENBROKER_TENANT.
func WithBroker(addr, tenant string) Option {
	return choose(choice{option: "WithBroker", addr: addr, tenant: tenant})
}

// WithCredentialsFile fetches tokens directly from the auth server with the
// client credentials in a Kognic credentials file. It overrides the
// environment variables, and combines with WithEnvironment.
func WithCredentialsFile(path string) Option {
	return choose(choice{option: "WithCredentialsFile", file: path})
}

// WithClientCredentials fetches tokens directly from the auth server with
// the given client ID and secret. It overrides the environment.
func WithClientCredentials(clientID, clientSecret string) Option {
	return choose(choice{option: "WithClientCredentials", clientID: clientID, secret: clientSecret})
}

// WithEnvironment fetches tokens directly from the auth server of the
// named environment of the environments file (WithEnvironmentsFile,
// default $XDG_CONFIG_HOME/kognic/environments.json, else
// ~/.config/kognic/environments.json), with its credentials file,
// or the KOGNIC_* environment variables when it names none. WithAuthServer
// overrides its auth_server, WithScopes its scopes; its scopes override
// the credentials file's. It combines with WithCredentialsFile, which then
// gives the credentials, when the environment names none (kognic-auth's
// --env with --credentials); when it does, that is an error.
func WithEnvironment(name string) Option {
	return choose(choice{option: "WithEnvironment", env: name})
}

// WithEnvironmentByHost picks each request's environment by its URL's host,
// as kog does: the environment whose host is the host or a parent domain;
// for app.kognic.com and its subdomains, else, the KOGNIC_* variables.
// Unlike kog, any other host gets no token: the request fails with
// ErrUnknownHost. A redirect keeps the environment of the request that
// entered the client. Each environment's token source starts with its
// first request and ends with Close; HTTPClient.Source is nil here.
func WithEnvironmentByHost() Option {
	return choose(choice{option: "WithEnvironmentByHost"})
}

// WithAuthServer sets the auth server of direct mode, e.g.
// "https://auth.app.kognic.com" (the default); the token endpoint is its
// /v1/auth/oauth/token. It overrides KOGNIC_AUTH_SERVER. In broker mode it
// is an error: the broker holds each tenant's token URL.
func WithAuthServer(url string) Option {
	return clientOption(func(c *clientConfig) { c.authServer = url })
}

// WithEnvironmentsFile sets the environments file read by WithEnvironment
// and WithEnvironmentByHost; a leading "~" is expanded. Unlike the default
// path, a file given here must exist.
func WithEnvironmentsFile(path string) Option {
	return clientOption(func(c *clientConfig) { c.envFile = path })
}

// WithEnv replaces os.LookupEnv as the source of TOKENBROKER_* and KOGNIC_*
// variables, e.g. for tests. A nil lookup means an empty environment.
func WithEnv(lookup func(key string) (string, bool)) Option {
	return clientOption(func(c *clientConfig) {
		if lookup == nil {
			lookup = func(string) (string, bool) { return "", false }
		}
		c.lookup = lookup
	})
}

// WithGRPCDialOptions adds dial options for the connection to the broker,
// applied after the defaults, so they can override them: round_robin,
// keepalive, and transport credentials (a loopback or unix-socket broker
// without TLS, with grpc's local credentials, which refuse any other peer;
// any other with TLS and the system roots; replace them with
// grpc.WithTransportCredentials).
func WithGRPCDialOptions(opts ...grpc.DialOption) Option {
	return clientOption(func(c *clientConfig) { c.dialOpts = append(c.dialOpts, opts...) })
}

// WithFailFast makes NewHTTPClient, in direct mode, give up on the first
// token as soon as the auth server's answer shows that waiting will not
// help (upstream.Error.Transient is false): nothing listens at its
// address, its name does not resolve, TLS fails, it redirects, it answers
// with a status other than 408, 429, 500, 502, 503 and 504 (404, 501…),
// or with a 2xx that is no token response. Those six, timeouts and
// dropped connections are still retried until ctx ends. It is for command-line tools; a service that may
// start before its auth server leaves it off. After the first token it
// changes nothing.
func WithFailFast() Option {
	return clientOption(func(c *clientConfig) { c.source.failFast = true })
}

// WithRetries sets how many times a request is retried after a transient
// failure (default DefaultRetries; 0 turns retrying off). Retried are:
// 502, 503 and 504 responses, 429 responses with a Retry-After, and
// connections reset or closed before any response, for idempotent requests
// (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or any with an Idempotency-Key
// header); and a connection that could not be made at all, for any
// request. The body must be replayable (none, or Request.GetBody set, as
// http.NewRequest does for in-memory bodies). Waits grow exponentially
// from 500ms to 8s with ±50 % jitter, or follow Retry-After when the
// server sends it (up to a minute; a longer one ends the retries). A wait
// that would outlast the request's deadline is not begun: the last
// response or error is returned instead.
func WithRetries(n int) Option {
	return clientOption(func(c *clientConfig) { c.retries = max(n, 0) })
}

// WithRetryBackoff sets the first and the longest wait between retries
// (defaults 500ms and 8s). Non-positive values keep the defaults.
func WithRetryBackoff(initial, max time.Duration) Option {
	return clientOption(func(c *clientConfig) {
		if initial > 0 {
			c.retryInitial = initial
		}
		if max > 0 {
			c.retryMax = max
		}
	})
}

// WithScopes sets the scopes to request. Without it the tenant's default
// scopes are used. Order and duplicates do not matter.
func WithScopes(scopes ...string) SourceOption {
	return sourceOption(func(c *sourceConfig) {
		c.scopes = append([]string(nil), scopes...)
		c.scopesSet = true
	})
}

// WithMinValid sets the minimum remaining validity of the tokens Token
// returns (default DefaultMinValid). While the cached token has at least
// this much validity left (or half its lifetime, for tokens shorter than
// twice d), Token answers from the cache without touching the network.
// Non-positive values are ignored.
func WithMinValid(d time.Duration) SourceOption {
	return sourceOption(func(c *sourceConfig) {
		if d > 0 {
			c.minValid = d
		}
	})
}

// WithRPCTimeout bounds each GetToken and InvalidateToken call that the
// Source makes on its own behalf (default DefaultRPCTimeout). Callers wait
// for such a call only as long as their own context allows. Non-positive
// values are ignored.
func WithRPCTimeout(d time.Duration) SourceOption {
	return sourceOption(func(c *sourceConfig) {
		if d > 0 {
			c.rpcTimeout = d
		}
	})
}

// WithReconnectBackoff sets the exponential backoff, with jitter, between
// attempts to re-open the watch stream: it starts at initial and grows to
// max (defaults 500ms and 30s), and starts over after every message
// received. Non-positive values keep the defaults.
func WithReconnectBackoff(initial, max time.Duration) SourceOption {
	return sourceOption(func(c *sourceConfig) {
		if initial > 0 {
			c.backoffInitial = initial
		}
		if max > 0 {
			c.backoffMax = max
		}
		if c.backoffMax < c.backoffInitial {
			c.backoffMax = c.backoffInitial
		}
	})
}

// WithLogger sets the logger for reconnects and failures (default:
// discard; NewHTTPClient's deprecation warnings go to slog.Default()).
// Tokens never reach it; a token is named by a fingerprint prefix.
func WithLogger(l *slog.Logger) SourceOption {
	return sourceOption(func(c *sourceConfig) {
		if l != nil {
			c.logger, c.loggerSet = l, true
		}
	})
}

// WithBaseTransport sets the transport that carries the authorised
// requests. It is never closed. NewTransport's default is
// http.DefaultTransport; NewHTTPClient's, a clone of it that the
// HTTPClient owns and closes.
func WithBaseTransport(rt http.RoundTripper) TransportOption {
	return transportOption(func(c *transportConfig) { c.base = rt })
}

// WithInsecureHTTP allows sending tokens over plain http to any host, not
// only to loopback. Use it only on a network you trust. It does not apply
// to direct mode's auth server, which receives the client secret and must
// be https unless it is loopback.
func WithInsecureHTTP() TransportOption {
	return transportOption(func(c *transportConfig) { c.allowInsecureHTTP = true })
}

// WithStatusErrors makes responses with a status other than 2xx errors:
// the request returns a *StatusError (wrapped in a *url.Error by
// http.Client) and the body is closed. 401 is handled (token replaced,
// request retried) before that, and redirects that http.Client follows
// (301, 302, 303, 307, 308 with a Location) are followed.
func WithStatusErrors() TransportOption {
	return transportOption(func(c *transportConfig) { c.statusErrors = true })
}

// WithInsecureLoopback lets PerRPCCredentials send tokens over connections
// without transport security, but only to loopback addresses (a loopback
// IP address or "localhost"): for local development and tests.
func WithInsecureLoopback() PerRPCOption {
	return perRPCOption(func(p *perRPC) { p.allowLoopback = true })
}
