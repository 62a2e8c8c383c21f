package config

import (
	"errors"
	"strings"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/kognic"
	"github.com/tokenbroker/tokenbroker/broker/names"
)

// noCredentialsError is creds.ErrNoCredentials with the broker's options.
type noCredentialsError struct{ err error }

func (e noCredentialsError) Error() string {
	return "config: no --config given and no credentials in the environment: " +
		"set KOGNIC_CREDENTIALS to a credentials file, or KOGNIC_CLIENT_ID and KOGNIC_CLIENT_SECRET, " +
		"or pass --config broker.yaml, or run with --dev for a local demo identity provider"
}

func (e noCredentialsError) Unwrap() error { return e.err }

// FromEnvWith builds a configuration without a config file: tenant
// names.DefaultTenant with kognic.FromEnv's client (lookup is os.LookupEnv
// in production), and the defaults. With no credentials the error wraps
// creds.ErrNoCredentials and names --config and --dev.
func FromEnvWith(lookup func(string) (string, bool), o Options) (*Config, error) {
	c, err := kognic.FromEnv(lookup, kognic.Options{Now: o.now(), Logger: o.logger()})
	if errors.Is(err, creds.ErrNoCredentials) {
		return nil, noCredentialsError{err}
	}
	if ke, ok := errors.AsType[*kognic.Error](err); ok {
		return nil, &Error{File: ke.Source, Field: ke.Field, Err: ke.Err}
	}
	if err != nil {
		return nil, err
	}
	var files []string
	if path, _ := lookup(creds.EnvCredentials); strings.TrimSpace(path) != "" {
		path, _ = creds.ExpandHome(path) // as creds.FromEnv loaded it
		files = []string{path}
	}
	return withDefaults(&Config{
		Files: files,
		Tenants: []Tenant{{
			Name:              names.DefaultTenant,
			TokenURL:          c.TokenURL,
			ClientID:          c.Credentials.ID,
			ClientSecret:      c.Credentials.Secret,
			Scopes:            c.Credentials.Scopes,
			AuthStyle:         AuthStyleBody,
			CredentialsSource: c.Credentials.Source,
		}},
	}), nil
}
