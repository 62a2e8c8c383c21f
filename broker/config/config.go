package config

import (
	"cmp"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// DefaultListen is the address the broker listens on when none is set.
const DefaultListen = "127.0.0.1:50051"

// Defaults and bounds of the admin and shutdown sections (see Shutdown);
// the maxima fit in a Kubernetes terminationGracePeriodSeconds.
const (
	DefaultAdminListen     = "127.0.0.1:9464" // loopback only
	DefaultShutdownDrain   = 5 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
	MaxShutdownDrain       = 5 * time.Minute
	MaxShutdownTimeout     = 5 * time.Minute
	MinShutdownTimeout     = 100 * time.Millisecond
)

// AuthStyle is how the client authenticates to the token endpoint.
type AuthStyle string

const (
	AuthStyleBody          AuthStyle = "body"            // client_secret_post, the default
	AuthStyleBasic         AuthStyle = "basic"           // client_secret_basic
	AuthStylePrivateKeyJWT AuthStyle = "private_key_jwt" // a signed assertion, no secret (RFC 7523)
)

// OAuth2 maps an auth_style to golang.org/x/oauth2's (private_key_jwt's
// assertion goes in the body).
func (s AuthStyle) OAuth2() oauth2.AuthStyle {
	if s == AuthStyleBasic {
		return oauth2.AuthStyleInHeader
	}
	return oauth2.AuthStyleInParams
}

// Config is a loaded and validated broker configuration.
type Config struct {
	Listen string // host:port; "" when listen names only a Unix socket
	// Socket holds the unix_socket settings even without a socket in
	// listen (Path ""), for --listen.
	Socket  Socket
	Tenants []Tenant // at least one; names are unique
	// StrictFilePermissions makes a group- or other-readable secret file
	// an error rather than a warning.
	StrictFilePermissions bool
	TLS                   *TLS // nil: plaintext
	// Callers is the access policy; empty: loopback clients only, without
	// authentication.
	Callers []Caller
	Audit   Audit
	Limits  limits.Limits // zero fields mean the defaults
	// InsecurePlaintext accepts callers over a plaintext non-loopback
	// listener (API keys in clear), e.g. behind a proxy.
	InsecurePlaintext bool
	Watch             Watch
	// Files are the resolved files to watch, in the order named: the
	// config file (LoadWith only), tls files, TenantsDir and its files,
	// credential files and ca_files; not the audit file.
	Files      []string
	TenantsDir string // resolved; "" if not set
	// Admin, OAuth and Shutdown: Parse and FromEnv apply the defaults; in a
	// Config built in code a zero Admin or OAuth is off, a zero Drain none
	// and a zero Timeout DefaultShutdownTimeout.
	Admin    Admin
	OAuth    OAuth
	Shutdown Shutdown

	name    string     // the file name given to LoadWith or ParseWith
	callers *yaml.Node // the callers section's nodes, for ErrorAt
}

// TLS configures the listener's TLS. Paths are resolved.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile enables mutual TLS; certificate-identified callers need it.
	ClientCAFile string `yaml:"client_ca_file"`
	// RequireClientCert refuses TLS clients without a certificate (and so
	// API keys).
	RequireClientCert bool          `yaml:"require_client_cert"`
	ReloadInterval    time.Duration `yaml:"reload_interval" eg:"30s or 5m"` // zero: the listener's default
}

// Caller is one entry of callers, as the access policy's caller; exactly
// one of SPIFFEID, DNSName, CommonName, APIKeySHA256, UnixUID, UnixGID is set.
type Caller struct {
	Name         string `yaml:"name"`
	SPIFFEID     string `yaml:"spiffe_id"`
	DNSName      string `yaml:"dns_name"`
	CommonName   string `yaml:"common_name"`
	APIKeySHA256 string `yaml:"api_key_sha256"`
	// UnixUID and UnixGID: a Unix socket peer's uid or primary gid.
	UnixUID *uint32  `yaml:"unix_uid" want:"a user id, a whole number" eg:"1000"`
	UnixGID *uint32  `yaml:"unix_gid" want:"a group id, a whole number" eg:"1000"`
	Tenants []string `yaml:"tenants" want:"a list of globs" eg:"[acme, \"team-*\"]"`
	// Scopes, if not empty, are globs every requested scope must match.
	Scopes []string `yaml:"scopes" want:"a list of globs" eg:"[\"read:*\"]"`
}

// UsesCertificate reports whether a client certificate identifies the caller.
func (c Caller) UsesCertificate() bool { return c.APIKeySHA256 == "" && !c.UsesSocket() }

// UsesSocket reports whether its uid or gid on the Unix socket identifies
// the caller.
func (c Caller) UsesSocket() bool { return c.UnixUID != nil || c.UnixGID != nil }

// Watch configures how the running broker notices changed files; the zero
// value watches at the daemon's default interval.
type Watch struct {
	Disabled bool          // enabled: false; only SIGHUP reloads
	Interval time.Duration // how often contents are compared, for missed events
}

// Audit configures the audit trail.
type Audit struct {
	Path string // appended to (mode 0600); "" or "-": standard output
	// Fsync is audit.fsync: 0 (never; a process crash loses nothing),
	// AuditFsyncEachBatch, or the most a power loss may lose.
	Fsync time.Duration
}

// AuditFsyncEachBatch is audit.fsync: always (before acknowledging a batch).
const AuditFsyncEachBatch time.Duration = -1

// Admin configures the admin HTTP listener.
type Admin struct {
	// Listen is the plain-HTTP host:port; "" disables it. Off loopback it
	// shows tenant names and states to anyone who can connect.
	Listen string `yaml:"listen"`
	Pprof  bool   `yaml:"pprof"` // serve /debug/pprof/; a CPU profile costs CPU
	// Hosts are the lower-cased Host names answered besides IP literals and
	// localhost; any other gets 421, against DNS rebinding.
	Hosts []string `yaml:"hosts" want:"a list of host names" eg:"[tokenbroker.monitoring.svc, tokenbroker.example.com]"`
}

// OAuth configures the OAuth2 token endpoint (client credentials over
// HTTP). Listen "" disables it; it follows listen's TLS and plaintext rules.
type OAuth struct {
	Listen string `yaml:"listen"`
}

// Shutdown configures SIGTERM: health turns NOT_SERVING, calls are served
// for Drain, then in-flight calls get Timeout before they end UNAVAILABLE.
type Shutdown struct {
	Drain   time.Duration `yaml:"drain"`
	Timeout time.Duration `yaml:"timeout"`
}

// ErrorAt returns a *Error for a problem a later stage (the access policy)
// found in field, e.g. "callers[1].tenants[0]", at its or its parent's line.
func (c *Config) ErrorAt(field string, err error) error {
	e := &Error{File: c.name, Field: field, Err: err}
	p := &parser{root: c.callers}
	for f := field; f != "" && c.callers != nil; f = f[:max(strings.LastIndexAny(f, ".["), 0)] {
		if k, v := p.at(f); v != nil {
			e.Line = cmp.Or(k, v).Line
			break
		}
	}
	return e
}

// Tenant is one OAuth2 client, resolved: defaults applied, files read,
// scopes normalized.
type Tenant struct {
	Name string
	// TokenURL is token_url, else auth_server (or kognic.DefaultAuthServer)
	// followed by kognic.TokenPath.
	TokenURL     string
	ClientID     string
	ClientSecret creds.Secret
	// ClientKey replaces ClientSecret for private_key_jwt; KeyID "" means
	// the key's RFC 7638 thumbprint, AssertionAudience "" the token URL.
	ClientKey         creds.PrivateKey
	KeyID             string
	AssertionAudience string
	// Scopes are the tenant's scopes, else the credentials file's; sorted,
	// unique, may be nil.
	Scopes            []string
	AuthStyle         AuthStyle
	CredentialsSource string // for humans, e.g. "credentials file /etc/x.json"
	AllowInsecureHTTP bool   // http to a non-loopback token URL
	CAFile            string // extra PEM CAs trusted for the token endpoint
	// RootCAs are the system roots plus CAFile's, read at parse time; nil
	// without CAFile.
	RootCAs *x509.CertPool
	// Fallbacks are a rotation's older credentials, tried in order when
	// the IdP answers invalid_client.
	Fallbacks []upstream.Credential // Name says where each came from
	File      string                // the tenants_dir file; "" for an entry of tenants
	// LoadErr (Options.KeepTenantsOnFileError only) says, naming the file,
	// why the tenant's files failed; all but Name (then maybe a guess) and
	// File are zero, and the tenant must not be served as is.
	LoadErr error
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
	File  string // the config or tenants_dir file, or the environment variable
	Line  int    // 1-based; 0 if unknown
	Field string // e.g. "tenants[1].name"; "" for the whole file
	Err   error  // the problem and its fix
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
	Now    time.Time    // rejects expired credentials; zero: time.Now()
	Logger *slog.Logger // warnings (e.g. a readable secret file); nil discards
	// KeepTenantsOnFileError confines a failure of a tenant's own files to
	// its Tenant.LoadErr, so that a reload is not held up by one tenant; a
	// program must not start from a tenant with a LoadErr.
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

// MaxFileSize bounds a config file; real ones are a few kilobytes.
const MaxFileSize = creds.MaxFileSize

// LoadWith reads the config file at path and parses it with ParseWith;
// relative paths in it resolve against the file's directory.
func LoadWith(path string, o Options) (*Config, error) {
	f, err := creds.OpenFile(path) // a FIFO or device is an error, not a read that blocks
	if err != nil {
		return nil, fmt.Errorf("config: cannot read config file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1)) // ParseWith refuses more
	if err != nil {
		return nil, fmt.Errorf("config: cannot read config file: %w", err)
	}
	cfg, err := ParseWith(data, path, filepath.Dir(path), o)
	if err != nil {
		return nil, err
	}
	cfg.Files = append([]string{path}, cfg.Files...)
	return cfg, nil
}
