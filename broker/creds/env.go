package creds

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Environment variables read by FromEnv, as in the Kognic SDKs.
const (
	EnvCredentials  = "KOGNIC_CREDENTIALS"
	EnvClientID     = "KOGNIC_CLIENT_ID"
	EnvClientSecret = "KOGNIC_CLIENT_SECRET"
)

// Client is an OAuth2 client identity: what the token endpoint needs.
type Client struct {
	ID     string
	Secret Secret
	// Scopes are the default scopes from a credentials file; nil otherwise.
	Scopes []string
	// Source says where they came from, e.g. "credentials file /etc/x.json".
	Source string
}

// String describes c without its secret.
func (c Client) String() string {
	return fmt.Sprintf("client %s from %s", c.ID, c.Source)
}

// LogValue implements slog.LogValuer; the secret is redacted.
func (c Client) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("id", c.ID),
		slog.Any("secret", c.Secret),
		slog.Any("scopes", c.Scopes),
		slog.String("source", c.Source),
	)
}

// FromEnv reads client credentials through lookup (os.LookupEnv):
// KOGNIC_CREDENTIALS, a credentials file, wins; else KOGNIC_CLIENT_ID and
// KOGNIC_CLIENT_SECRET must both be set (blank counts as unset). With
// nothing set it returns ErrNoCredentials. opts are passed to LoadFile.
func FromEnv(lookup func(string) (string, bool), opts ...Option) (Client, error) {
	get := func(key string) string {
		v, _ := lookup(key)
		if strings.TrimSpace(v) == "" {
			return ""
		}
		return v
	}
	if path := get(EnvCredentials); path != "" {
		f, err := LoadFile(path, opts...)
		if err != nil {
			if fe, ok := errors.AsType[*FileError](err); ok {
				fe.env = EnvCredentials
			}
			return Client{}, err
		}
		return f.Client(), nil
	}
	id, secret := get(EnvClientID), get(EnvClientSecret)
	switch {
	case id == "" && secret == "":
		return Client{}, ErrNoCredentials
	case secret == "":
		return Client{}, fmt.Errorf("credentials: %s is set but %s is not; set both, or set %s to a credentials file",
			EnvClientID, EnvClientSecret, EnvCredentials)
	case id == "":
		return Client{}, fmt.Errorf("credentials: %s is set but %s is not; set both, or set %s to a credentials file",
			EnvClientSecret, EnvClientID, EnvCredentials)
	case secretProblem(secret) != "":
		return Client{}, fmt.Errorf("credentials: %s %s; set it to the client secret", EnvClientSecret, secretProblem(secret))
	}
	return Client{ID: id, Secret: Secret(secret), Source: EnvClientID + "/" + EnvClientSecret}, nil
}

// LoadSecretFile reads a file holding only a client secret, surrounding
// whitespace removed. A file that is empty, has more than one line, or is
// not text without control characters is an error wrapping ErrMalformed;
// a path that is not a regular file, one wrapping ErrNotRegular.
func LoadSecretFile(path string) (Secret, error) {
	path, data, err := readHome(path)
	if err != nil {
		return "", err
	}
	data = bytes.TrimSpace(data)
	switch {
	case len(data) == 0:
		return "", fileErr(path, "", ErrMalformed, "secret file is empty; write the client secret into it")
	case bytes.ContainsAny(data, "\r\n"):
		return "", fileErr(path, "", ErrMalformed, "secret file has more than one line; it must hold only the client secret")
	}
	if p := secretProblem(string(data)); p != "" {
		return "", fileErr(path, "", ErrMalformed, "secret file %s; it must hold only the client secret, as text", p)
	}
	return Secret(data), nil
}
