package clientlib

import (
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Defaults of a Source.
const (
	// DefaultMinValid is the remaining validity below which Token asks the
	// broker for a fresher token instead of answering from its cache.
	DefaultMinValid = time.Minute
	// DefaultRPCTimeout bounds one shared GetToken or InvalidateToken call.
	DefaultRPCTimeout = 30 * time.Second

	defaultBackoffInitial = 500 * time.Millisecond
	defaultBackoffMax     = 30 * time.Second
)

// Option configures NewHTTPClient. Every SourceOption is also an Option.
type Option interface {
	applyClient(*clientConfig)
}

// SourceOption configures NewSource, and the Source that NewHTTPClient
// builds.
type SourceOption interface {
	Option
	applySource(*sourceConfig)
}

type sourceConfig struct {
	scopes         []string
	scopesSet      bool
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

type sourceOption func(*sourceConfig)

func (f sourceOption) applySource(c *sourceConfig) { f(c) }
func (f sourceOption) applyClient(c *clientConfig) { f(&c.source) }

type clientOption func(*clientConfig)

func (f clientOption) applyClient(c *clientConfig) { f(c) }

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
// discard). Tokens never reach it; a token is named by a fingerprint
// prefix.
func WithLogger(l *slog.Logger) SourceOption {
	return sourceOption(func(c *sourceConfig) {
		if l != nil {
			c.logger, c.loggerSet = l, true
		}
	})
}

// clientConfig is what NewHTTPClient's options set.
type clientConfig struct {
	source sourceConfig
	lookup func(string) (string, bool)
	// choices are the options that choose where tokens come from; more
	// than one is an error.
	choices        []choice
	authServer     string
	base           http.RoundTripper
	transportCreds credentials.TransportCredentials
	dialOpts       []grpc.DialOption
	insecureHTTP   bool
	envFile        string // WithEnvironmentsFile; "" means DefaultEnvironmentsPath
	retry          retryConfig
	statusErrors   bool
	now            func() time.Time // nil: time.Now; set by tests
}

// clock returns the current time, e.g. for credentials files' expiry.
func (c *clientConfig) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// choice is one option choosing where tokens come from.
type choice struct {
	option           string // the option's name, for errors
	addr, tenant     string // WithBroker
	file             string // WithCredentialsFile
	clientID, secret string // WithClientCredentials
	env              string // WithEnvironment
}

// WithBroker gets tokens of tenant (empty means "default") from the token
// broker at addr: a host:port, resolved through DNS and balanced round-robin
// over every address, or a gRPC target with a scheme such as
// "dns:///broker.example:50051" or "unix:///run/tokenbroker.sock". It
// overrides TOKENBROKER_ADDR and TOKENBROKER_TENANT.
func WithBroker(addr, tenant string) Option {
	return clientOption(func(c *clientConfig) {
		c.choices = append(c.choices, choice{option: "WithBroker", addr: addr, tenant: tenant})
	})
}

// WithCredentialsFile fetches tokens directly from the auth server with the
// client credentials in a Kognic credentials file. It overrides the
// environment.
func WithCredentialsFile(path string) Option {
	return clientOption(func(c *clientConfig) {
		c.choices = append(c.choices, choice{option: "WithCredentialsFile", file: path})
	})
}

// WithClientCredentials fetches tokens directly from the auth server with
// the given client ID and secret. It overrides the environment.
func WithClientCredentials(clientID, clientSecret string) Option {
	return clientOption(func(c *clientConfig) {
		c.choices = append(c.choices, choice{option: "WithClientCredentials", clientID: clientID, secret: clientSecret})
	})
}

// WithAuthServer sets the auth server of direct mode, e.g.
// "https://auth.app.kognic.com" (the default); the token endpoint is its
// /v1/auth/oauth/token. It overrides KOGNIC_AUTH_SERVER. In broker mode it
// is an error: the broker holds each tenant's token URL.
func WithAuthServer(url string) Option {
	return clientOption(func(c *clientConfig) { c.authServer = url })
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

// WithBaseTransport sets the transport that carries the authorised
// requests. The default is a clone of http.DefaultTransport owned, and
// closed, by the HTTPClient; a transport given here is not closed.
func WithBaseTransport(rt http.RoundTripper) Option {
	return clientOption(func(c *clientConfig) { c.base = rt })
}

// WithTransportCredentials sets the credentials of the connection to the
// broker. By default a loopback or unix-socket broker is dialled without
// TLS (grpc local credentials, which refuse any other peer) and every other
// broker with TLS and the system roots.
func WithTransportCredentials(creds credentials.TransportCredentials) Option {
	return clientOption(func(c *clientConfig) { c.transportCreds = creds })
}

// WithGRPCDialOptions adds dial options for the connection to the broker,
// applied after the defaults (round_robin, keepalive, transport
// credentials), so they can override them.
func WithGRPCDialOptions(opts ...grpc.DialOption) Option {
	return clientOption(func(c *clientConfig) { c.dialOpts = append(c.dialOpts, opts...) })
}

// WithInsecureHTTP allows sending tokens over plain http to resource
// servers other than loopback (Transport.AllowInsecureHTTP). Use it only on
// a network you trust. It does not apply to direct mode's auth server,
// which receives the client secret and must be https unless it is
// loopback.
func WithInsecureHTTP() Option {
	return clientOption(func(c *clientConfig) { c.insecureHTTP = true })
}

// WithEnvironment fetches tokens directly from the auth server of the
// named environment of the environments file (WithEnvironmentsFile,
// default ~/.config/kognic/environments.json), with its credentials file,
// or the KOGNIC_* environment variables when it names none. WithAuthServer
// overrides its auth_server, WithScopes its scopes; its scopes override
// the credentials file's.
func WithEnvironment(name string) Option {
	return clientOption(func(c *clientConfig) {
		c.choices = append(c.choices, choice{option: "WithEnvironment", env: name})
	})
}

// WithEnvironmentByHost picks the environment of each request by its URL's
// host, as kog does: the one in the environments file whose host is the
// URL's host or a parent domain of it; for app.kognic.com and its
// subdomains, if no environment names them, the KOGNIC_* environment
// variables (kognic-auth's built-in environment). Unlike kog, a host that
// matches none gets no token, not default_environment's: the request
// fails with an error wrapping ErrUnknownHost that lists the environments.
// A redirect keeps the environment of the request that entered the client
// (and gets no token if it leaves its origin, see Transport). Each
// environment gets its own token source, started by its first request
// (which waits for the first token) and closed by Close. HTTPClient.Source
// is nil in this mode.
func WithEnvironmentByHost() Option {
	return clientOption(func(c *clientConfig) {
		c.choices = append(c.choices, choice{option: "WithEnvironmentByHost"})
	})
}

// WithEnvironmentsFile sets the environments file read by WithEnvironment
// and WithEnvironmentByHost; a leading "~" is expanded. Unlike the default
// path, a file given here must exist.
func WithEnvironmentsFile(path string) Option {
	return clientOption(func(c *clientConfig) { c.envFile = path })
}

// lookup1 returns the value of an environment variable, or "".
func (c *clientConfig) lookup1(key string) string {
	v, _ := c.lookup(key)
	return v
}
