package config

import (
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// DefaultListen is the address the broker listens on when none is set.
// The auth server and the environment's tenant are named in package
// kognic (DefaultAuthServer, TokenPath) and names (DefaultTenant).
const DefaultListen = "127.0.0.1:50051"

// Defaults of the admin and shutdown sections, applied by Parse and
// FromEnv when a key is absent.
const (
	// DefaultAdminListen is admin.listen: the plain-HTTP admin listener
	// (/healthz, /readyz, /metrics, status page), loopback only.
	DefaultAdminListen = "127.0.0.1:9464"
	// DefaultShutdownDrain is shutdown.drain: how long the broker keeps
	// serving after SIGTERM with its health NOT_SERVING, so that load
	// balancers remove it before connections close.
	DefaultShutdownDrain = 5 * time.Second
	// DefaultShutdownTimeout is shutdown.timeout: how long in-flight calls
	// may take after the drain before they end UNAVAILABLE.
	DefaultShutdownTimeout = 10 * time.Second
	// MaxShutdownDrain and MaxShutdownTimeout bound the two, which must
	// fit in a Kubernetes terminationGracePeriodSeconds.
	MaxShutdownDrain   = 5 * time.Minute
	MaxShutdownTimeout = 5 * time.Minute
	// MinShutdownTimeout is the shortest shutdown.timeout.
	MinShutdownTimeout = 100 * time.Millisecond
)

// AuthStyle is how the client authenticates to the token endpoint.
type AuthStyle string

const (
	// AuthStyleBody sends client_id and client_secret in the form body
	// (client_secret_post). It is the default.
	AuthStyleBody AuthStyle = "body"
	// AuthStyleBasic sends them in an HTTP Basic Authorization header
	// (client_secret_basic).
	AuthStyleBasic AuthStyle = "basic"
	// AuthStylePrivateKeyJWT sends client_id and a client assertion signed
	// with the tenant's private key in the body (private_key_jwt, RFC
	// 7523); no secret.
	AuthStylePrivateKeyJWT AuthStyle = "private_key_jwt"
)

// OAuth2 is the one mapping of an auth_style to golang.org/x/oauth2's:
// AuthStyleBasic is AuthStyleInHeader, anything else AuthStyleInParams
// (private_key_jwt's assertion goes in the body too).
func (s AuthStyle) OAuth2() oauth2.AuthStyle {
	if s == AuthStyleBasic {
		return oauth2.AuthStyleInHeader
	}
	return oauth2.AuthStyleInParams
}

// Config is a loaded and validated broker configuration.
type Config struct {
	// Listen is the host:port of the gRPC listener; "" when listen names
	// only a Unix socket.
	Listen string
	// Socket is the gRPC listener on a Unix socket (Socket.Path "" for
	// none) with the unix_socket settings, which hold even without a
	// socket in listen, for --listen.
	Socket Socket
	// Tenants has at least one entry; names are unique.
	Tenants []Tenant
	// StrictFilePermissions makes a secret file that group or others can
	// read an error rather than a warning.
	StrictFilePermissions bool
	// TLS configures the gRPC listener's TLS; nil means plaintext.
	TLS *TLS
	// Callers is the access policy; empty means none configured, so that
	// the broker serves loopback clients only, without authentication.
	Callers []Caller
	Audit   Audit
	// Limits are the limits section; zero fields mean the defaults.
	Limits limits.Limits
	// InsecurePlaintext accepts callers over a plaintext listener on a
	// non-loopback address (API keys in clear), e.g. behind a proxy.
	InsecurePlaintext bool
	Watch             Watch
	// Files are the files this configuration was read from, for watching:
	// the config file itself (Load and LoadWith only), the tls files, the
	// TenantsDir and its tenant files, and every credentials and client
	// secret file and ca_file, as resolved paths in the order the files
	// name them. The audit file is not one.
	Files []string
	// TenantsDir is tenants_dir, resolved; "" if not set.
	TenantsDir string
	// Admin configures the admin HTTP listener. Parse and FromEnv default
	// it to DefaultAdminListen; a zero Admin (a Config built in code)
	// disables it.
	Admin Admin
	// OAuth configures the OAuth2 token endpoint; off unless OAuth.Listen
	// is set.
	OAuth OAuth
	// Shutdown configures the drain on SIGTERM. Parse and FromEnv apply
	// the defaults; in a Config built in code, zero Drain means none and
	// zero Timeout DefaultShutdownTimeout.
	Shutdown Shutdown

	name    string     // the file name given to LoadWith or ParseWith
	callers *yaml.Node // the callers section's nodes, for ErrorAt
}

// TLS configures the listener's TLS. Paths are resolved.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, if set, enables mutual TLS: client certificates are
	// verified against it. Required for certificate-identified callers.
	ClientCAFile string `yaml:"client_ca_file"`
	// RequireClientCert refuses TLS clients without a certificate (and so
	// API keys). Needs ClientCAFile.
	RequireClientCert bool `yaml:"require_client_cert"`
	// ReloadInterval is how often the files are re-read; zero means the
	// listener's default.
	ReloadInterval time.Duration `yaml:"reload_interval" eg:"30s or 5m"`
}

// Caller is one entry of callers: who may get which tenants' tokens. It
// mirrors the access policy's caller; exactly one of SPIFFEID, DNSName,
// CommonName, APIKeySHA256, UnixUID and UnixGID is set.
type Caller struct {
	Name         string `yaml:"name"`
	SPIFFEID     string `yaml:"spiffe_id"`
	DNSName      string `yaml:"dns_name"`
	CommonName   string `yaml:"common_name"`
	APIKeySHA256 string `yaml:"api_key_sha256"`
	// UnixUID and UnixGID name a peer on the Unix socket by its uid or
	// (primary) gid, as the kernel reports it.
	UnixUID *uint32 `yaml:"unix_uid" want:"a user id, a whole number" eg:"1000"`
	UnixGID *uint32 `yaml:"unix_gid" want:"a group id, a whole number" eg:"1000"`
	// Tenants are globs of the tenants the caller may use; not empty.
	Tenants []string `yaml:"tenants" want:"a list of globs" eg:"[acme, \"team-*\"]"`
	// Scopes, if not empty, are globs every requested scope must match.
	Scopes []string `yaml:"scopes" want:"a list of globs" eg:"[\"read:*\"]"`
}

// UsesCertificate reports whether the caller is identified by a client
// certificate rather than an API key or a Unix socket peer's uid or gid.
func (c Caller) UsesCertificate() bool { return c.APIKeySHA256 == "" && !c.UsesSocket() }

// UsesSocket reports whether the caller is identified by its uid or gid
// on the Unix socket.
func (c Caller) UsesSocket() bool { return c.UnixUID != nil || c.UnixGID != nil }

// Watch configures how the running broker notices changed files (the
// config file and the files it names). The zero value means watching with
// the daemon's default interval.
type Watch struct {
	// Disabled (enabled: false) turns watching off: only SIGHUP reloads.
	Disabled bool
	// Interval is how often the files' contents are compared, as a
	// fallback for missed file system events; zero means the default.
	Interval time.Duration
}

// Audit configures the audit trail.
type Audit struct {
	// Path is the file audit lines are appended to (mode 0600); "" or "-"
	// means standard output.
	Path string
	// Fsync is audit.fsync: 0 (never: an acknowledged line is in the
	// kernel, which a process crash does not lose), AuditFsyncEachBatch
	// (before acknowledging each batch: a power loss loses no
	// acknowledged line), or a positive interval (a power loss loses at
	// most that long).
	Fsync time.Duration
}

// AuditFsyncEachBatch is Audit.Fsync for audit.fsync: always.
const AuditFsyncEachBatch time.Duration = -1

// Admin configures the admin HTTP listener.
type Admin struct {
	// Listen is the host:port of the plain-HTTP admin listener; "" disables
	// it. Off loopback it shows tenant names and states to anyone who
	// can connect.
	Listen string `yaml:"listen"`
	// Pprof serves net/http/pprof under /debug/pprof/ on the admin
	// listener. Off by default: profiles show no secrets, but a CPU
	// profile costs the broker CPU for its duration.
	Pprof bool `yaml:"pprof"`
	// Hosts are the host names, lower-cased and without port, the admin
	// listener answers to besides IP literals and localhost (admin.hosts);
	// any other Host header gets 421, so that a web page cannot read it
	// through DNS rebinding.
	Hosts []string `yaml:"hosts" want:"a list of host names" eg:"[tokenbroker.monitoring.svc, tokenbroker.example.com]"`
}

// OAuth configures the OAuth2 token endpoint (the oauth section): the
// client-credentials grant over HTTP in front of the token cache.
type OAuth struct {
	// Listen is the host:port of its HTTP listener; "" (the default)
	// disables it. It follows listen's rules: TLS from the tls section
	// (client certificates included), and with callers a plaintext
	// non-loopback address only with insecure_plaintext.
	Listen string `yaml:"listen"`
}

// Shutdown configures what happens on SIGTERM: health turns NOT_SERVING
// at once, calls are served for Drain, then watches end UNAVAILABLE and
// in-flight calls get Timeout before they end UNAVAILABLE too.
type Shutdown struct {
	Drain   time.Duration `yaml:"drain"`
	Timeout time.Duration `yaml:"timeout"`
}

// ErrorAt returns a *Error for a problem that a later stage (such as the
// access policy) found in field, e.g. "callers[1].tenants[0]", with the
// line of that field, or of the closest enclosing field, in the file.
func (c *Config) ErrorAt(field string, err error) error {
	e := &Error{File: c.name, Field: field, Err: err}
	p := &parser{root: c.callers}
	for f := field; f != "" && c.callers != nil; f = parentField(f) {
		if k, v := p.at(f); k != nil {
			e.Line = k.Line
			break
		} else if v != nil {
			e.Line = v.Line
			break
		}
	}
	return e
}

// Tenant is one OAuth2 client the broker obtains tokens for, fully resolved:
// defaults applied, files read, scopes normalized.
type Tenant struct {
	Name string
	// TokenURL is token_url, else auth_server (trailing slashes trimmed),
	// else kognic.DefaultAuthServer, followed by kognic.TokenPath.
	TokenURL     string
	ClientID     string
	ClientSecret creds.Secret
	// ClientKey, with AuthStyle private_key_jwt instead of ClientSecret, is
	// client_assertion_key_file's key (the first of
	// client_assertion_key_files); KeyID is key_id ("": the key's RFC 7638
	// thumbprint) and AssertionAudience assertion_audience ("": the token
	// URL).
	ClientKey         creds.PrivateKey
	KeyID             string
	AssertionAudience string
	// Scopes are the default scopes, sorted and de-duplicated: the tenant's
	// scopes if set and non-empty, else the credentials file's; may be nil.
	Scopes    []string
	AuthStyle AuthStyle
	// CredentialsSource says where the credentials came from, for humans,
	// e.g. "credentials file /etc/tokenbroker/acme.json".
	CredentialsSource string
	// AllowInsecureHTTP permits an http TokenURL on a non-loopback host.
	AllowInsecureHTTP bool
	// CAFile, if set, is a PEM bundle of extra CAs (a private CA) trusted
	// for the token endpoint, in addition to the system roots.
	CAFile string
	// RootCAs are the system roots plus CAFile's certificates, read once
	// when the config is parsed (upstream.RootCAs); nil without CAFile.
	RootCAs *x509.CertPool
	// Fallbacks are the older credentials of a rotation
	// (credentials_files, client_secret_files or client_assertion_key_files
	// after the first entry), tried in order when the IdP answers
	// invalid_client.
	Fallbacks []Credential
	// File is the tenants_dir file the tenant was read from; "" for an
	// entry of tenants.
	File string
	// LoadErr, set only with Options.KeepTenantsOnFileError, is why the
	// tenant's own files (or its tenants_dir file) could not be loaded; it
	// names the file. All other fields but Name and File are then zero:
	// such a tenant must not be served as is (keep its running
	// configuration, or leave it out). Name is a guess if File could not
	// be decoded.
	LoadErr error
}

// Credential is a fallback client credential of a tenant: a secret, or
// for private_key_jwt a key (whose kid is the key's thumbprint).
type Credential struct {
	ClientID     string
	ClientSecret creds.Secret
	Key          creds.PrivateKey
	// Source names the file, e.g. "client_secret_files /etc/x/old.secret".
	Source string
}

// LogValue implements slog.LogValuer; the secret and key are redacted.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("client_id", c.ClientID), slog.Any("client_secret", c.ClientSecret),
		slog.Any("key", c.Key), slog.String("source", c.Source))
}

// Upstream is c as the IdP client's credential (the kid of a key is its
// thumbprint).
func (c Credential) Upstream() upstream.Credential {
	return upstream.Credential{Name: c.Source, ClientID: c.ClientID, ClientSecret: c.ClientSecret, Key: c.Key}
}

// LogValue implements slog.LogValuer; the secret is redacted.
func (t Tenant) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", t.Name),
		slog.String("token_url", upstream.RedactURL(t.TokenURL)),
		slog.String("client_id", t.ClientID),
		slog.Any("client_secret", t.ClientSecret),
		slog.Any("client_key", t.ClientKey),
		slog.String("key_id", t.KeyID),
		slog.String("assertion_audience", t.AssertionAudience),
		slog.Any("scopes", t.Scopes),
		slog.String("auth_style", string(t.AuthStyle)),
		slog.String("credentials_source", t.CredentialsSource),
		slog.Bool("allow_insecure_http", t.AllowInsecureHTTP),
		slog.String("ca_file", t.CAFile),
		slog.Any("fallbacks", t.Fallbacks),
	)
}

// Error is a problem with a configuration.
type Error struct {
	// File is the config file name given to Load or Parse, a tenants_dir
	// file, or the environment variable at fault.
	File string
	// Line is the 1-based line of the offending YAML node; 0 if unknown.
	Line int
	// Field is the path of the offending field, e.g. "tenants[1].name";
	// empty for the whole file.
	Field string
	// Err describes the problem and its fix; it may wrap errors from the
	// credentials and names packages.
	Err error
}

func (e *Error) Error() string {
	where, field := e.File, ""
	if e.Line > 0 {
		where += ":" + strconv.Itoa(e.Line)
	}
	if e.Field != "" {
		field = e.Field + ": "
	}
	return "config: " + where + ": " + field + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Options tune LoadWith, ParseWith and FromEnvWith. Zero values mean
// defaults.
type Options struct {
	// Now rejects expired credentials; zero means time.Now().
	Now time.Time
	// Logger receives warnings, such as a secret file that group or others
	// can read; nil discards them.
	Logger *slog.Logger
	// KeepTenantsOnFileError makes a tenant whose own files (credentials,
	// client secret, ca_file or tenants_dir file) cannot be loaded not fail
	// the whole configuration: the tenant is returned with only Name, File
	// and LoadErr set, and its files stay in Config.Files. Every other
	// error (a duplicate tenant name too) still fails.
	// For re-reading a running configuration, where one tenant's broken
	// file must not hold up the others' changes (see Tenant.LoadErr); a
	// program must refuse to start from a tenant with a LoadErr.
	KeepTenantsOnFileError bool
}

func (o Options) now() time.Time {
	if o.Now.IsZero() {
		return time.Now()
	}
	return o.Now
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// MaxFileSize bounds a config file; a larger one is refused unread, as
// for credentials files. Real configurations are a few kilobytes.
const MaxFileSize = creds.MaxFileSize

// LoadWith reads the config file at path and parses it with ParseWith;
// relative paths in it resolve against the file's directory.
func LoadWith(path string, o Options) (*Config, error) {
	f, err := creds.OpenFile(path) // a FIFO or device is an error, not a read that blocks
	if err != nil {
		return nil, fmt.Errorf("config: cannot read config file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: cannot read config file: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, &Error{File: path, Err: fmt.Errorf("file is larger than %d bytes (1 MiB); point --config at the broker's YAML configuration itself", MaxFileSize)}
	}
	cfg, err := ParseWith(data, path, filepath.Dir(path), o)
	if err != nil {
		return nil, err
	}
	cfg.Files = append([]string{path}, cfg.Files...)
	return cfg, nil
}
