// Package kognic maps the environment of the Kognic SDKs to one OAuth2
// client and its token endpoint: KOGNIC_CREDENTIALS (a credentials file),
// else KOGNIC_CLIENT_ID and KOGNIC_CLIENT_SECRET, and KOGNIC_AUTH_SERVER.
//
// Both the broker (running without a config file) and the client library
// (direct mode) read the environment through [FromEnv], so the two agree on
// what it means. The package parses no YAML and starts nothing; its
// functions are safe for concurrent use.
package kognic

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

const (
	// DefaultAuthServer is the Kognic authentication server.
	DefaultAuthServer = "https://auth.app.kognic.com"
	// DefaultAPIHost is the host of the Kognic platform's APIs: the host of
	// kognic-auth's built-in environment, whose credentials are the
	// KOGNIC_* variables.
	DefaultAPIHost = "app.kognic.com"
	// TokenPath is appended to an auth server URL to form its token URL.
	TokenPath = "/v1/auth/oauth/token"
	// EnvAuthServer overrides DefaultAuthServer in FromEnv.
	EnvAuthServer = "KOGNIC_AUTH_SERVER"
)

// Client is the OAuth2 client the environment describes.
type Client struct {
	TokenURL string // KOGNIC_AUTH_SERVER (or DefaultAuthServer) + TokenPath
	// Credentials' scopes are the credentials file's, sorted and unique.
	Credentials creds.Client
}

// Options tune FromEnv. Zero values mean defaults.
type Options struct {
	Now    time.Time    // rejects expired credentials; zero: time.Now()
	Logger *slog.Logger // warned of a group- or other-readable file; nil discards
}

// Error is a problem with an environment variable or the file it names.
type Error struct {
	// Source is the variable at fault, or the credentials source (e.g.
	// "credentials file /etc/x.json"), whose key Field is.
	Source string
	Field  string
	Err    error
}

func (e *Error) Error() string {
	field := ""
	if e.Field != "" {
		field = e.Field + ": "
	}
	return "kognic: " + e.Source + ": " + field + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// FromEnv reads the client through lookup (os.LookupEnv in production), the
// credentials as creds.FromEnv does (none: creds.ErrNoCredentials itself).
// KOGNIC_AUTH_SERVER must pass upstream.CheckURL as a base URL; its
// problems are an *Error.
func FromEnv(lookup func(string) (string, bool), o Options) (Client, error) {
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	c, err := creds.FromEnv(lookup, creds.WithClock(func() time.Time { return now }))
	if err != nil {
		return Client{}, err
	}
	server := DefaultAuthServer
	if v, _ := lookup(EnvAuthServer); v != "" {
		err := upstream.CheckURL(v, upstream.URLRules{Base: true})
		switch {
		case errors.Is(err, upstream.ErrInsecureURL):
			return Client{}, &Error{Source: EnvAuthServer, Err: fmt.Errorf("%w %s: http sends the client secret in clear text; use https (http is accepted only for localhost and loopback addresses), or a config file whose tenant sets allow_insecure_http: true",
				upstream.ErrInsecureURL, v)}
		case err != nil:
			return Client{}, &Error{Source: EnvAuthServer, Err: fmt.Errorf("%v; use e.g. %s", err, DefaultAuthServer)}
		}
		server = v
	}
	if path, ok := lookup(creds.EnvCredentials); ok && path != "" {
		path, _ = creds.ExpandHome(path) // creds.FromEnv above loaded it expanded
		if err := creds.CheckSecretFiles(o.Logger, false, path); err != nil {
			return Client{}, &Error{Source: creds.EnvCredentials, Err: err}
		}
	}
	if c.Scopes, err = names.NormalizeScopes(c.Scopes); err != nil {
		return Client{}, &Error{Source: c.Source, Field: "scopes", Err: err}
	}
	return Client{TokenURL: TokenURL(server), Credentials: c}, nil
}

// TokenURL returns the token endpoint of the auth server at base.
func TokenURL(base string) string {
	return strings.TrimRight(base, "/") + TokenPath
}
