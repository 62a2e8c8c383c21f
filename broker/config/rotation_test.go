package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/config"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const kognicFile = `{"clientId": "%s", "clientSecret": "%s", "email": "a@example.com", "userId": 7, "issuer": "https://auth.app.kognic.com", "scopes": ["read"]}`

func TestRotationLists(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"new.secret": "secret-new\n", "old.secret": "secret-old\n",
		"new.json": strings.Replace(strings.Replace(kognicFile, "%s", "client-new", 1), "%s", "secret-cnew", 1),
		"old.json": strings.Replace(strings.Replace(kognicFile, "%s", "client-old", 1), "%s", "secret-cold", 1),
	})
	yaml := `tenants:
  - name: generic
    token_url: https://idp.example.com/token
    client_id: gen
    client_secret_files: [new.secret, old.secret]
  - name: kognic
    credentials_files: [new.json, old.json]
`
	cfg, err := config.ParseWith([]byte(yaml), "broker.yaml", dir, config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	g, k := cfg.Tenants[0], cfg.Tenants[1]
	if g.ClientID != "gen" || g.ClientSecret.Reveal() != "secret-new" || len(g.Fallbacks) != 1 ||
		g.Fallbacks[0].ClientID != "gen" || g.Fallbacks[0].ClientSecret.Reveal() != "secret-old" ||
		g.Fallbacks[0].Name != "client_secret_files "+filepath.Join(dir, "old.secret") {
		t.Errorf("generic tenant = %+v", g)
	}
	if k.ClientID != "client-new" || k.ClientSecret.Reveal() != "secret-cnew" || len(k.Fallbacks) != 1 ||
		k.Fallbacks[0].ClientID != "client-old" || k.Fallbacks[0].ClientSecret.Reveal() != "secret-cold" ||
		len(k.Scopes) != 1 {
		t.Errorf("kognic tenant = %+v", k)
	}
}

func TestRotationListErrors(t *testing.T) {
	dir := writeFiles(t, map[string]string{"a": "x\n", "b": "y\n", "c": "z\n", "d": "w\n"})
	for _, tc := range []struct{ tenant, want string }{
		{"client_id: i\n    client_secret_file: a\n    client_secret_files: [b]",
			"client_secret_file and client_secret_files are mutually exclusive; during a rotation list both files under client_secret_files, newest first"},
		{"client_id: i\n    client_secret_files: []",
			"tenants[0].client_secret_files: must be a list of 1 to 3 files, newest first, got 0 entries"},
		{"client_id: i\n    client_secret_files: [a, b, c, d]",
			"must be a list of 1 to 3 files, newest first, got 4 entries"},
		{"client_id: i\n    client_secret_files: a",
			"must be a list of 1 to 3 files, newest first, got a string"},
		{"client_id: i\n    client_secret_files: [a, ./a]",
			"tenants[0].client_secret_files[1]: " + filepath.Join(dir, "a") + " is listed twice (also tenants[0].client_secret_files[0])"},
		{"client_secret_files: [a]", "client_secret_files is set but client_id is missing"},
		{"credentials_files: [a]\n    client_id: i", "credentials_files and client_id are mutually exclusive"},
		{"client_id: i\n    client_secret_files: [a, missing]", "tenants[0].client_secret_files[1]: tenant \"t\": credentials: " + filepath.Join(dir, "missing")},
	} {
		yaml := "tenants:\n  - name: t\n    token_url: https://idp.example.com/token\n    " + tc.tenant + "\n"
		_, err := config.ParseWith([]byte(yaml), "broker.yaml", dir, config.Options{Now: now})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %q", tc.tenant, err, tc.want)
		}
	}
}

func TestLoadRefusesHugeFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "broker.yaml")
	huge := "# " + strings.Repeat("x", config.MaxFileSize) + "\ntenants: []\n"
	if err := os.WriteFile(path, []byte(huge), 0o600); err != nil {
		t.Fatal(err)
	}
	want := "config: " + path + ": file is larger than 1048576 bytes (1 MiB)"
	if _, err := config.LoadWith(path, config.Options{Now: now}); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load(2 MiB file) = %v, want prefix %q", err, want)
	}
	if _, err := config.ParseWith([]byte(huge), "b.yaml", dir, config.Options{Now: now}); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Parse(2 MiB) = %v", err)
	}
}
