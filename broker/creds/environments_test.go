package creds_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

const envFile = `{
  "default_environment": "production",
  "environments": {
    "production": {"host": "app.kognic.com", "auth_server": "https://auth.app.kognic.com",
                   "credentials": "~/.config/kognic/credentials-prod.json"},
    "example": {"host": "example.kognic.com", "auth_server": "https://auth.example.kognic.com",
                "credentials": "/etc/kognic/example.json", "scopes": ["api:read", "api:write"], "future_key": 1},
    "bare": {"host": "bare.test", "auth_server": "http://127.0.0.1:1"}
  }
}`

func TestParseEnvironments(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	e, err := creds.ParseEnvironments([]byte(envFile), "environments.json")
	if err != nil {
		t.Fatal(err)
	}
	if e.Default != "production" || !slices.Equal(e.Names(), []string{"bare", "example", "production"}) {
		t.Fatalf("default %q, names %q", e.Default, e.Names())
	}
	prod, _ := e.Lookup("production")
	if want := filepath.Join(home, ".config/kognic/credentials-prod.json"); prod.Credentials != want {
		t.Errorf("production credentials %q, want ~ expanded to %q", prod.Credentials, want)
	}
	ex, _ := e.Lookup("example")
	if ex.AuthServer != "https://auth.example.kognic.com" || !slices.Equal(ex.Scopes, []string{"api:read", "api:write"}) {
		t.Errorf("example = %+v", ex)
	}
	if bare, _ := e.Lookup("bare"); bare.Credentials != "" || bare.Scopes != nil {
		t.Errorf("bare = %+v, want no credentials (the environment variables) and no scopes", bare)
	}
	if _, err := e.Lookup("staging"); err == nil || err.Error() != `credentials: environment "staging" is not in environments.json; known environments: bare, example, production` {
		t.Errorf("Lookup(staging) error = %v", err)
	}

	for host, want := range map[string]string{
		"app.kognic.com":         "production",
		"APP.kognic.com.":        "production",
		"example.kognic.com":     "example",
		"api.example.kognic.com": "example", // subdomain of example, not of app
		"api.app.kognic.com":     "production",
	} {
		if got, ok := e.ForHost(host); !ok || got.Name != want {
			t.Errorf("ForHost(%q) = %q, %v; want %q", host, got.Name, ok, want)
		}
	}
	// default_environment is no fallback: a host no environment names gets
	// none, nor does one that merely ends like one.
	for _, host := range []string{"elsewhere.test", "evilapp.kognic.com", "kognic.com", ""} {
		if got, ok := e.ForHost(host); ok {
			t.Errorf("ForHost(%q) = %q, want no environment", host, got.Name)
		}
	}
}

func TestParseEnvironmentsErrors(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"keyring", `{"environments":{"prod":{"host":"a","auth_server":"https://b","credentials":"keyring://prod"}}}`,
			"credentials: f.json: environments.prod.credentials: the keyring:// scheme is not supported; put the path of a credentials file there, or remove the key to use KOGNIC_CREDENTIALS or KOGNIC_CLIENT_ID and KOGNIC_CLIENT_SECRET"},
		{"no host", `{"environments":{"prod":{"auth_server":"https://b"}}}`,
			"credentials: f.json: environments.prod.host: missing; set it to the API host name, e.g. app.kognic.com"},
		{"no auth server", `{"environments":{"prod":{"host":"a"}}}`,
			"credentials: f.json: environments.prod.auth_server: missing; set it to the auth server, e.g. https://auth.app.kognic.com"},
		{"bad default", `{"default_environment":"qa","environments":{"prod":{"host":"a","auth_server":"https://b"}}}`,
			`credentials: f.json: default_environment: "qa" is not one of the environments (prod); name one of them or remove the key`},
		{"empty scope", `{"environments":{"prod":{"host":"a","auth_server":"https://b","scopes":[""]}}}`,
			"credentials: f.json: environments.prod.scopes: must be a list of non-empty strings"},
		{"not JSON", `nope`, `credentials: f.json: not a JSON object with "environments": invalid JSON syntax at byte offset 2`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := creds.ParseEnvironments([]byte(tc.data), "f.json")
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error = %v\nwant    %s", err, tc.want)
			}
			if tc.name == "keyring" && !errors.Is(err, creds.ErrUnsupportedScheme) {
				t.Error("the keyring error does not wrap ErrUnsupportedScheme")
			}
		})
	}
}

func TestLoadEnvironmentsTilde(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	noXDG := func(string) (string, bool) { return "", false }
	if _, err := creds.LoadEnvironments(creds.DefaultEnvironmentsPath(noXDG)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing default file: %v, want fs.ErrNotExist", err)
	}
	dir := filepath.Join(home, ".config", "kognic")
	writeEnvFile(t, dir)
	e, err := creds.LoadEnvironments(creds.DefaultEnvironmentsPath(noXDG))
	if err != nil || e.Path != filepath.Join(dir, "environments.json") || len(e.Envs) != 3 {
		t.Fatalf("LoadEnvironments(~/...) = %+v, %v", e, err)
	}
}

// XDG_CONFIG_HOME moves the default file, as in kognic-auth; an empty or
// relative value is ignored, as the XDG Base Directory spec says.
func TestDefaultEnvironmentsPathXDG(t *testing.T) {
	home, xdg := t.TempDir(), t.TempDir()
	t.Setenv("HOME", home)
	writeEnvFile(t, filepath.Join(xdg, "kognic"))
	for _, tc := range []struct {
		name, xdg string
		set       bool
		want      string
	}{
		{"unset", "", false, "~/.config/kognic/environments.json"},
		{"empty", "", true, "~/.config/kognic/environments.json"},
		{"relative", "conf", true, "~/.config/kognic/environments.json"},
		{"absolute", xdg, true, filepath.Join(xdg, "kognic", "environments.json")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) {
				if k == creds.EnvXDGConfigHome {
					return tc.xdg, tc.set
				}
				return "", false
			}
			if got := creds.DefaultEnvironmentsPath(lookup); got != tc.want {
				t.Fatalf("DefaultEnvironmentsPath = %q, want %q", got, tc.want)
			}
		})
	}
	e, err := creds.LoadEnvironments(creds.DefaultEnvironmentsPath(func(string) (string, bool) { return xdg, true }))
	if err != nil || len(e.Envs) != 3 {
		t.Fatalf("LoadEnvironments($XDG_CONFIG_HOME/kognic/environments.json) = %+v, %v", e, err)
	}
}

func writeEnvFile(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "environments.json"), []byte(envFile), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestExpandHome(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	for in, want := range map[string]string{
		"~":          home,
		"~/a/b.json": filepath.Join(home, "a/b.json"),
		"/abs/~/x":   "/abs/~/x",
		"rel/x":      "rel/x",
		"~other/x":   "~other/x",
		"":           "",
	} {
		if got, err := creds.ExpandHome(in); err != nil || got != want {
			t.Errorf("ExpandHome(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	t.Setenv("HOME", "")
	if _, err := creds.ExpandHome("~/x"); err == nil {
		t.Error("ExpandHome without HOME succeeded")
	}
}

func TestLoadFileTilde(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	if err := os.WriteFile(filepath.Join(home, "c.json"), []byte(`{"clientId":"id","clientSecret":"s3cr3t","email":"a@b.c","userId":1,"issuer":"kognic"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := creds.LoadFile("~/c.json")
	if err != nil || f.ClientID != "id" {
		t.Fatalf("LoadFile(~/c.json) = %v, %v", f, err)
	}
	c, err := creds.FromEnv(func(k string) (string, bool) {
		if k == creds.EnvCredentials {
			return "~/c.json", true
		}
		return "", false
	})
	if err != nil || c.ID != "id" {
		t.Fatalf("KOGNIC_CREDENTIALS=~/c.json: %v, %v", c, err)
	}
}
