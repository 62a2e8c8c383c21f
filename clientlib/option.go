package clientlib

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
)

// Option configures NewHTTPClient. Every SourceOption and TransportOption
// is also an Option.
type Option interface {
	configureClient(*clientConfig)
}

// SourceOption configures NewSource and NewHTTPClient's Sources.
type SourceOption interface {
	Option
	configureSource(*sourceConfig)
}

// TransportOption configures NewTransport and NewHTTPClient's Transport.
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
	// DefaultMinValid is the remaining validity below which Token asks
	// for a fresher token.
	DefaultMinValid = time.Minute
	// DefaultRPCTimeout bounds one shared GetToken or InvalidateToken call.
	DefaultRPCTimeout = 30 * time.Second
	// DefaultRetries is how many times NewHTTPClient's client retries a
	// transient failure (kognic-auth's count).
	DefaultRetries = 3

	defaultBackoffInitial = 500 * time.Millisecond
	defaultBackoffMax     = 30 * time.Second
	defaultRetryInitial   = 500 * time.Millisecond
	defaultRetryMax       = 8 * time.Second
)

type sourceConfig struct {
	scopes                     []string
	scopesSet                  bool
	failFast                   bool // WithFailFast
	minValid, rpcTimeout       time.Duration
	backoffInitial, backoffMax time.Duration
	logger                     *slog.Logger
	loggerSet                  bool // WithLogger was given
}

func defaultSourceConfig() sourceConfig {
	return sourceConfig{minValid: DefaultMinValid, rpcTimeout: DefaultRPCTimeout,
		backoffInitial: defaultBackoffInitial, backoffMax: defaultBackoffMax, logger: slog.New(slog.DiscardHandler)}
}

type transportConfig struct {
	base              http.RoundTripper
	allowInsecureHTTP bool
	statusErrors      bool
}

// clientConfig is what NewHTTPClient's options set.
type clientConfig struct {
	source                 sourceConfig
	transport              transportConfig
	lookup                 func(string) (string, bool)
	choices                []choice // where tokens come from; see resolve
	authServer             string
	envFile                string // WithEnvironmentsFile; "" means creds.DefaultEnvironmentsPath
	dialOpts               []grpc.DialOption
	retries                int
	retryInitial, retryMax time.Duration
	now                    func() time.Time // nil: time.Now; set by tests
}

// env returns an environment variable's value, trimmed; "" when unset.
func (c *clientConfig) env(key string) string {
	v, _ := c.lookup(key)
	return strings.TrimSpace(v)
}

// choice is one option choosing where tokens come from.
type choice struct {
	option           string // the option's name, for errors
	addr, tenant     string // WithBroker
	file             string // WithCredentialsFile
	clientID, secret string // WithClientCredentials
	env              string // WithEnvironment
}

// setPositive sets *dst to d if d > 0: other values keep the default.
func setPositive(dst *time.Duration, d time.Duration) {
	if d > 0 {
		*dst = d
	}
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
// broker at addr: a host:port, balanced round-robin over its addresses, or a
// gRPC target such as "unix:///run/tokenbroker.sock". It overrides
// TOKENBROKER_ADDR and TOKENBROKER_TENANT.
func WithBroker(addr, tenant string) Option {
	return choose(choice{option: "WithBroker", addr: addr, tenant: tenant})
}

// WithCredentialsFile fetches tokens directly from the auth server with a
// Kognic credentials file. It overrides the environment and combines with
// WithEnvironment.
func WithCredentialsFile(path string) Option {
	return choose(choice{option: "WithCredentialsFile", file: path})
}

// WithClientCredentials fetches tokens directly from the auth server with
// the given client ID and secret. It overrides the environment.
func WithClientCredentials(clientID, clientSecret string) Option {
	return choose(choice{option: "WithClientCredentials", clientID: clientID, secret: clientSecret})
}

// WithEnvironment fetches tokens directly from the auth server of the
// named environment of the environments file, with its credentials file,
// else WithCredentialsFile's (not both), else the KOGNIC_* variables.
// WithAuthServer and WithScopes override its auth_server and scopes.
func WithEnvironment(name string) Option {
	return choose(choice{option: "WithEnvironment", env: name})
}

// WithEnvironmentByHost picks each request's environment by its URL's host
// (creds.Environments.ForHost), else for app.kognic.com the KOGNIC_*
// variables; other hosts fail with ErrUnknownHost. HTTPClient.Source is nil.
func WithEnvironmentByHost() Option {
	return choose(choice{option: "WithEnvironmentByHost"})
}

// WithAuthServer sets direct mode's auth server (default
// https://auth.app.kognic.com), overriding KOGNIC_AUTH_SERVER. In broker
// mode it is an error.
func WithAuthServer(url string) Option {
	return clientOption(func(c *clientConfig) { c.authServer = url })
}

// WithEnvironmentsFile sets the environments file (default
// creds.DefaultEnvironmentsPath, which may be missing); this one must exist.
func WithEnvironmentsFile(path string) Option {
	return clientOption(func(c *clientConfig) { c.envFile = path })
}

// WithEnv replaces os.LookupEnv as the source of environment variables,
// e.g. for tests; nil means an empty environment.
func WithEnv(lookup func(key string) (string, bool)) Option {
	return clientOption(func(c *clientConfig) {
		if lookup == nil {
			lookup = func(string) (string, bool) { return "", false }
		}
		c.lookup = lookup
	})
}

// WithGRPCDialOptions adds dial options for the broker connection after
// the defaults (round_robin, keepalive, local credentials for a loopback or
// unix socket broker, else TLS with the system roots), which they override.
func WithGRPCDialOptions(opts ...grpc.DialOption) Option {
	return clientOption(func(c *clientConfig) { c.dialOpts = append(c.dialOpts, opts...) })
}

// WithFailFast makes NewHTTPClient, in direct mode, give up on the first
// token once the auth server's answer shows that waiting will not help
// (upstream.Error.Transient is false), for command-line tools.
func WithFailFast() Option {
	return clientOption(func(c *clientConfig) { c.source.failFast = true })
}

// WithRetries sets how many times a request is retried (default
// DefaultRetries; 0: never) after 502, 503, 504, 429 with Retry-After or a
// reset connection if it is idempotent (or has an Idempotency-Key), and
// after a connection never made. The body must be replayable (GetBody).
// Waits grow from 500ms to 8s with jitter, or follow Retry-After up to a
// minute, within the deadline.
func WithRetries(n int) Option {
	return clientOption(func(c *clientConfig) { c.retries = max(n, 0) })
}

// WithRetryBackoff sets the first and the longest wait between retries
// (defaults 500ms and 8s). Non-positive values keep the defaults.
func WithRetryBackoff(initial, max time.Duration) Option {
	return clientOption(func(c *clientConfig) {
		setPositive(&c.retryInitial, initial)
		setPositive(&c.retryMax, max)
	})
}

// WithScopes sets the scopes to request (default: the tenant's). Order and
// duplicates do not matter.
func WithScopes(scopes ...string) SourceOption {
	return sourceOption(func(c *sourceConfig) {
		c.scopes = append([]string(nil), scopes...)
		c.scopesSet = true
	})
}

// WithMinValid sets the minimum remaining validity of the tokens Token
// returns (default DefaultMinValid; at most half a token's lifetime).
// Non-positive values are ignored.
func WithMinValid(d time.Duration) SourceOption {
	return sourceOption(func(c *sourceConfig) { setPositive(&c.minValid, d) })
}

// WithRPCTimeout bounds each shared GetToken and InvalidateToken call
// (default DefaultRPCTimeout). Non-positive values are ignored.
func WithRPCTimeout(d time.Duration) SourceOption {
	return sourceOption(func(c *sourceConfig) { setPositive(&c.rpcTimeout, d) })
}

// WithReconnectBackoff sets the backoff between attempts to re-open the
// watch stream (defaults 500ms to 30s, jittered; reset by any message).
// Non-positive values keep the defaults.
func WithReconnectBackoff(initial, max time.Duration) SourceOption {
	return sourceOption(func(c *sourceConfig) {
		setPositive(&c.backoffInitial, initial)
		setPositive(&c.backoffMax, max)
		if c.backoffMax < c.backoffInitial {
			c.backoffMax = c.backoffInitial
		}
	})
}

// WithLogger sets the logger for reconnects and failures (default: discard;
// deprecation warnings: slog.Default()). Tokens never reach it.
func WithLogger(l *slog.Logger) SourceOption {
	return sourceOption(func(c *sourceConfig) {
		if l != nil {
			c.logger, c.loggerSet = l, true
		}
	})
}

// WithBaseTransport sets the transport under the authorised requests; it
// is never closed. Default: http.DefaultTransport (NewHTTPClient: a clone
// it owns).
func WithBaseTransport(rt http.RoundTripper) TransportOption {
	return transportOption(func(c *transportConfig) { c.base = rt })
}

// WithInsecureHTTP allows sending tokens over plain http to any host, not
// only to loopback, on a network you trust. Direct mode's auth server must
// be https anyway unless it is loopback.
func WithInsecureHTTP() TransportOption {
	return transportOption(func(c *transportConfig) { c.allowInsecureHTTP = true })
}

// WithStatusErrors turns responses with a status other than 2xx into a
// *StatusError, their body closed; 401 is handled first, and redirects
// that http.Client follows are followed.
func WithStatusErrors() TransportOption {
	return transportOption(func(c *transportConfig) { c.statusErrors = true })
}

// WithInsecureLoopback lets PerRPCCredentials send tokens without
// transport security to loopback addresses only, for development.
func WithInsecureLoopback() PerRPCOption {
	return perRPCOption(func(p *perRPC) { p.allowLoopback = true })
}
