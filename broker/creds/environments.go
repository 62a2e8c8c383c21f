package creds

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// EnvXDGConfigHome moves ~/.config, as for kognic-auth.
const EnvXDGConfigHome = "XDG_CONFIG_HOME"

// DefaultEnvironmentsPath is where kognic-auth, kog and this project look
// for named environments: $XDG_CONFIG_HOME/kognic/environments.json (a
// relative XDG_CONFIG_HOME ignored, as the XDG spec says), else under
// ~/.config ("~" unexpanded: the readers expand it).
func DefaultEnvironmentsPath(lookup func(string) (string, bool)) string {
	if v, _ := lookup(EnvXDGConfigHome); filepath.IsAbs(v) {
		return filepath.Join(v, "kognic", "environments.json")
	}
	return "~/.config/kognic/environments.json"
}

// ErrUnsupportedScheme is wrapped by the error for an environment whose
// "credentials" is a URI such as "keyring://production", not a path.
var ErrUnsupportedScheme = errors.New("credentials: unsupported credentials scheme")

// Environments is a parsed kognic-auth environments file:
//
//	{
//	  "default_environment": "production",
//	  "environments": {
//	    "production": {
//	      "host": "app.kognic.com",
//	      "auth_server": "https://auth.app.kognic.com",
//	      "credentials": "~/.config/kognic/credentials-prod.json",
//	      "scopes": ["api:read"]
//	    }
//	  }
//	}
type Environments struct {
	Path    string                 // the file, "~" expanded
	Default string                 // "default_environment", if any
	Envs    map[string]Environment // by name
}

// Environment is one named environment.
type Environment struct {
	Name string
	// Host is the API host that selects this environment for a request,
	// e.g. "app.kognic.com", subdomains included.
	Host       string
	AuthServer string // base URL; tokens come from its /v1/auth/oauth/token
	// Credentials is a credentials file, "~" expanded; "" means the
	// KOGNIC_* environment variables.
	Credentials string
	Scopes      []string // if any, they override the credentials file's
}

// LoadEnvironments reads the environments file at path ("~" expanded). A
// missing file is an error wrapping fs.ErrNotExist.
func LoadEnvironments(path string) (*Environments, error) {
	path, data, err := readHome(path)
	if err != nil {
		return nil, err
	}
	return ParseEnvironments(data, path)
}

// ParseEnvironments parses an environments file; name is used in errors.
// Unknown keys are ignored, as by kognic-auth; each environment needs
// "host" and "auth_server".
func ParseEnvironments(data []byte, name string) (*Environments, error) {
	var raw struct {
		Default      *string                    `json:"default_environment"`
		Environments map[string]json.RawMessage `json:"environments"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, envErr(name, "", "not a JSON object with \"environments\": %s", describeJSONError(err))
	}
	e := &Environments{Path: name, Envs: make(map[string]Environment, len(raw.Environments))}
	for envName, body := range raw.Environments {
		env, err := parseEnvironment(name, envName, body)
		if err != nil {
			return nil, err
		}
		e.Envs[envName] = env
	}
	if raw.Default != nil && *raw.Default != "" {
		if _, ok := e.Envs[*raw.Default]; !ok {
			return nil, envErr(name, "default_environment", "%q is not one of the environments (%s); name one of them or remove the key",
				*raw.Default, strings.Join(e.Names(), ", "))
		}
		e.Default = *raw.Default
	}
	return e, nil
}

func parseEnvironment(file, name string, body json.RawMessage) (Environment, error) {
	field := "environments." + name
	var raw struct {
		Host        *string   `json:"host"`
		AuthServer  *string   `json:"auth_server"`
		Credentials *string   `json:"credentials"`
		Scopes      *[]string `json:"scopes"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return Environment{}, envErr(file, field, "must be an object with string keys host, auth_server, credentials and a list of strings scopes")
	}
	env := Environment{Name: name}
	if raw.Host == nil || strings.TrimSpace(*raw.Host) == "" {
		return Environment{}, envErr(file, field+".host", "missing; set it to the API host name, e.g. app.kognic.com")
	}
	env.Host = strings.ToLower(strings.TrimSpace(*raw.Host))
	if raw.AuthServer == nil || strings.TrimSpace(*raw.AuthServer) == "" {
		return Environment{}, envErr(file, field+".auth_server", "missing; set it to the auth server, e.g. https://auth.app.kognic.com")
	}
	env.AuthServer = strings.TrimSpace(*raw.AuthServer)
	if raw.Credentials != nil && *raw.Credentials != "" {
		c := *raw.Credentials
		if scheme, _, ok := strings.Cut(c, "://"); ok {
			return Environment{}, &FileError{Path: file, Key: field + ".credentials", Err: ErrUnsupportedScheme,
				msg: fmt.Sprintf("%s.credentials: the %s:// scheme is not supported; put the path of a credentials file there, or remove the key to use KOGNIC_CREDENTIALS or KOGNIC_CLIENT_ID and KOGNIC_CLIENT_SECRET", field, scheme)}
		}
		p, err := ExpandHome(c)
		if err != nil {
			return Environment{}, envErr(file, field+".credentials", "%v", err)
		}
		env.Credentials = p
	}
	if raw.Scopes != nil {
		if slices.ContainsFunc(*raw.Scopes, func(s string) bool { return strings.TrimSpace(s) == "" }) {
			return Environment{}, envErr(file, field+".scopes", "must be a list of non-empty strings")
		}
		env.Scopes = slices.Clone(*raw.Scopes)
	}
	return env, nil
}

// Names returns the environments' names, sorted.
func (e *Environments) Names() []string {
	names := make([]string, 0, len(e.Envs))
	for n := range e.Envs {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Lookup returns the environment called name, or an error listing the
// ones there are.
func (e *Environments) Lookup(name string) (Environment, error) {
	if env, ok := e.Envs[name]; ok {
		return env, nil
	}
	if len(e.Envs) == 0 {
		return Environment{}, fmt.Errorf("credentials: environment %q: %s defines no environments; add it there", name, e.Path)
	}
	return Environment{}, fmt.Errorf("credentials: environment %q is not in %s; known environments: %s", name, e.Path, strings.Join(e.Names(), ", "))
}

// ForHost returns the environment with the longest host that host is, or
// is a subdomain of. Unlike kog's, default_environment is no fallback: no
// token goes to a host that no environment names.
func (e *Environments) ForHost(host string) (env Environment, ok bool) {
	var best Environment
	for _, n := range e.Names() { // sorted: the same answer every time
		c := e.Envs[n]
		if HostMatches(host, c.Host) && len(c.Host) > len(best.Host) {
			best = c
		}
	}
	return best, best.Name != ""
}

// HostMatches reports whether host, a request URL's host name, is envHost
// or a subdomain of it; case and a trailing dot do not matter.
func HostMatches(host, envHost string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	envHost = strings.ToLower(strings.TrimSuffix(envHost, "."))
	return envHost != "" && (host == envHost || strings.HasSuffix(host, "."+envHost))
}

// envErr is a problem at field of an environments file.
func envErr(file, field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if field != "" {
		msg = field + ": " + msg
	}
	return &FileError{Path: file, Key: field, Err: ErrMalformed, msg: msg}
}
