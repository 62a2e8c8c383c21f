package creds

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// EnvXDGConfigHome is the XDG Base Directory variable that moves
// ~/.config, as it does for kognic-auth.
const EnvXDGConfigHome = "XDG_CONFIG_HOME"

// configDir is the directory of Kognic's configuration files:
// $XDG_CONFIG_HOME/kognic, else "~/.config/kognic" ("~" unexpanded, for
// messages; the readers here expand it). As the XDG spec says, an empty or
// relative XDG_CONFIG_HOME is ignored. lookup reads the environment
// (os.LookupEnv in production).
func configDir(lookup func(string) (string, bool)) string {
	if v, _ := lookup(EnvXDGConfigHome); filepath.IsAbs(v) {
		return filepath.Join(v, "kognic")
	}
	return "~/.config/kognic"
}

// DefaultEnvironmentsPath is where kognic-auth, kog and this project look
// for named environments: $XDG_CONFIG_HOME/kognic/environments.json, else
// ~/.config/kognic/environments.json.
func DefaultEnvironmentsPath(lookup func(string) (string, bool)) string {
	return filepath.Join(configDir(lookup), "environments.json")
}

// ErrUnsupportedScheme is wrapped by the error for an environment whose
// "credentials" is a URI such as "keyring://production": only file paths
// (and no value, meaning the environment variables) are supported.
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
	// Path is the file the environments were loaded from, expanded.
	Path string
	// Default is "default_environment"; empty when absent. It names an
	// entry of Envs. ForHost does not fall back to it.
	Default string
	// Envs are the environments by name.
	Envs map[string]Environment
}

// Environment is one named environment.
type Environment struct {
	Name string
	// Host is the API host name that selects this environment for a
	// request URL, e.g. "app.kognic.com" (it also matches subdomains).
	Host string
	// AuthServer is the auth server's base URL; tokens come from its
	// /v1/auth/oauth/token.
	AuthServer string
	// Credentials is the path of a credentials file, "~" expanded; empty
	// means the environment variables (KOGNIC_CREDENTIALS, else
	// KOGNIC_CLIENT_ID and KOGNIC_CLIENT_SECRET). A relative path is
	// relative to the current directory, as in kognic-auth.
	Credentials string
	// Scopes, when not empty, override the credentials file's scopes.
	Scopes []string
}

// LoadEnvironments reads and parses the environments file at path ("~"
// expanded). A missing file is an error wrapping fs.ErrNotExist, so that a
// caller reading the default path can treat it as "no environments".
func LoadEnvironments(path string) (*Environments, error) {
	path, data, err := readHome(path)
	if err != nil {
		return nil, err
	}
	return ParseEnvironments(data, path)
}

// ParseEnvironments parses the contents of an environments file; name is
// used in errors. Unknown keys are ignored, as kognic-auth does. Each
// environment needs "host" and "auth_server"; "default_environment", when
// set, must name one of them.
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

// ForHost returns the environment for requests to host: the one whose host
// equals host, else the one with the longest host that host is a
// subdomain of. ok is false when none matches. Unlike kog,
// default_environment is no fallback: no environment's token goes to a
// host that no environment names.
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

// envErr is a problem in an environments file: a *FileError wrapping
// ErrMalformed, whose Key is the field at fault.
func envErr(file, field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if field != "" {
		msg = field + ": " + msg
	}
	return &FileError{Path: file, Key: field, Err: ErrMalformed, msg: msg}
}
