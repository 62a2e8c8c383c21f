package config

import (
	"errors"
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/credentials"
	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/internal/hygiene"
)

// noCredentialsError replaces credentials.ErrNoCredentials's message with
// one that also names the broker's other options, and still unwraps to it.
type noCredentialsError struct{ err error }

func (e noCredentialsError) Error() string {
	return "config: no --config given and no credentials in the environment: " +
		"set KOGNIC_CREDENTIALS to a credentials file, or KOGNIC_CLIENT_ID and KOGNIC_CLIENT_SECRET, " +
		"or pass --config broker.yaml, or run with --dev for a local demo identity provider"
}

func (e noCredentialsError) Unwrap() error { return e.err }

// FromEnv builds a configuration for running without a config file: one
// tenant named DefaultTenant with the credentials credentials.FromEnv finds,
// the token URL KOGNIC_AUTH_SERVER (default DefaultAuthServer) plus
// TokenPath, and DefaultListen. lookup is os.LookupEnv in production.
//
// With no credentials in the environment the error wraps
// credentials.ErrNoCredentials and tells the user about --config and --dev.
func FromEnv(lookup func(string) (string, bool), now time.Time) (*Config, error) {
	return FromEnvWith(lookup, Options{Now: now})
}

// FromEnvWith is FromEnv with options. KOGNIC_AUTH_SERVER must be https
// unless its host is loopback, and a KOGNIC_CREDENTIALS file that group or
// others can read is warned about on o.Logger.
func FromEnvWith(lookup func(string) (string, bool), o Options) (*Config, error) {
	c, err := credentials.FromEnv(lookup, credentials.WithClock(o.now))
	if errors.Is(err, credentials.ErrNoCredentials) {
		return nil, noCredentialsError{err}
	}
	if err != nil {
		return nil, err
	}
	server := DefaultAuthServer
	if v, _ := lookup(EnvAuthServer); v != "" {
		if err := checkURL(v, true); err != nil {
			return nil, &Error{File: EnvAuthServer, Err: fmt.Errorf("%v; use e.g. %s", err, DefaultAuthServer)}
		}
		if err := hygiene.CheckUpstreamURL(v, false); err != nil {
			return nil, &Error{File: EnvAuthServer, Err: fmt.Errorf("%w %s: http sends the client secret in clear text; use https (http is accepted only for localhost and loopback addresses), or a config file whose tenant sets allow_insecure_http: true",
				hygiene.ErrInsecureURL, v)}
		}
		server = v
	}
	if path, ok := lookup(credentials.EnvCredentials); ok && path != "" {
		path, _ = credentials.ExpandHome(path) // FromEnv above has loaded it expanded
		if err := hygiene.CheckSecretFiles(o.logger(), false, path); err != nil {
			return nil, &Error{File: credentials.EnvCredentials, Err: err}
		}
	}
	scopes, err := names.NormalizeScopes(c.Scopes)
	if err != nil {
		return nil, &Error{File: c.Source, Field: "scopes", Err: fmt.Errorf("%w", err)}
	}
	return &Config{
		Listen: DefaultListen,
		Tenants: []Tenant{{
			Name:              DefaultTenant,
			TokenURL:          trimSlash(server) + TokenPath,
			ClientID:          c.ID,
			ClientSecret:      c.Secret,
			Scopes:            scopes,
			AuthStyle:         AuthStyleBody,
			CredentialsSource: c.Source,
		}},
	}, nil
}
