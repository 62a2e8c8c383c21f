package config

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/credentials"
)

const (
	// DefaultAuthServer is the Kognic authentication server.
	DefaultAuthServer = "https://auth.app.kognic.com"
	// TokenPath is appended to an auth server URL to form its token URL.
	TokenPath = "/v1/auth/oauth/token"
	// DefaultListen is the address the broker listens on when none is set.
	DefaultListen = "127.0.0.1:50051"
	// DefaultTenant is the name of the tenant FromEnv builds.
	DefaultTenant = "default"
	// EnvAuthServer overrides DefaultAuthServer in FromEnv.
	EnvAuthServer = "KOGNIC_AUTH_SERVER"
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
)

// Config is a loaded and validated broker configuration.
type Config struct {
	// Listen is the host:port to listen on.
	Listen string
	// Tenants has at least one entry; names are unique.
	Tenants []Tenant
}

// Tenant is one OAuth2 client the broker obtains tokens for, fully resolved:
// defaults applied, files read, scopes normalized.
type Tenant struct {
	Name string
	// TokenURL is token_url, else auth_server (trailing slashes trimmed),
	// else DefaultAuthServer, followed by TokenPath.
	TokenURL     string
	ClientID     string
	ClientSecret credentials.Secret
	// Scopes are the default scopes, sorted and de-duplicated: the tenant's
	// scopes if set and non-empty, else the credentials file's; may be nil.
	Scopes    []string
	AuthStyle AuthStyle
	// CredentialsSource says where the credentials came from, for humans,
	// e.g. "credentials file /etc/tokenbroker/acme.json".
	CredentialsSource string
}

// LogValue implements slog.LogValuer; the secret is redacted.
func (t Tenant) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", t.Name),
		slog.String("token_url", t.TokenURL),
		slog.String("client_id", t.ClientID),
		slog.Any("client_secret", t.ClientSecret),
		slog.Any("scopes", t.Scopes),
		slog.String("auth_style", string(t.AuthStyle)),
		slog.String("credentials_source", t.CredentialsSource),
	)
}

// Error is a problem with a configuration.
type Error struct {
	// File is the config file name given to Load or Parse, or the
	// environment variable at fault.
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
	var b strings.Builder
	b.WriteString("config: ")
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Load reads the config file at path and parses it with Parse; relative
// paths in it resolve against the file's directory. now is used to reject
// expired credentials.
func Load(path string, now time.Time) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: cannot read config file: %w", err)
	}
	return Parse(data, path, filepath.Dir(path), now)
}
