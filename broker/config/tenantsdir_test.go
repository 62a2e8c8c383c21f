package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// tenantsDir writes the config file broker.yaml and the files of a
// tenants directory "tenants" next to it; it returns the config's path.
func tenantsDir(t *testing.T, yaml string, files map[string]string) string {
	t.Helper()
	dir := writeFiles(t, map[string]string{"broker.yaml": yaml, "g.secret": "FAKE-g-secret-not-real\n"})
	if err := os.Mkdir(filepath.Join(dir, "tenants"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(dir, "tenants", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "broker.yaml")
}

const dirTenant = "token_url: https://idp.example.com/token\nclient_id: c\nclient_secret_file: ../g.secret\n"

// TestTenantsDir: tenants_dir (relative to the config file) adds one
// tenant per .yaml, .yml or .json file, after the tenants list, in file
// name order; the name is the file's name key, else the file name
// without extension; relative paths in a tenant file resolve against
// the tenants directory; dot-files, other extensions and directories are
// skipped, and a Kubernetes volume's symlinks are followed. The
// directory and every tenant file are in Files, for watching.
func TestTenantsDir(t *testing.T) {
	abs, err := filepath.Abs("testdata/acme.json")
	if err != nil {
		t.Fatal(err)
	}
	path := tenantsDir(t, "tenants:\n  - name: first\n    credentials_file: "+abs+"\ntenants_dir: tenants\n", map[string]string{
		"globex.yaml":               dirTenant,
		"b.json":                    `{"name": "initech", "credentials_file": "` + abs + `", "scopes": ["z", "a"]}`,
		"k.yml":                     dirTenant,
		".hidden.yaml":              "not: a tenant\n",
		"README.md":                 "not a tenant\n",
		"sub.yaml/x.yaml":           dirTenant,
		"..2026_01_01/volume.yaml":  dirTenant,
		"..2026_01_01/ignored.yaml": dirTenant,
	})
	dir := filepath.Join(filepath.Dir(path), "tenants")
	if err := os.Symlink("..2026_01_01", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "volume.yaml"), filepath.Join(dir, "volume.yaml")); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadWith(path, config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tn := range cfg.Tenants {
		got = append(got, tn.Name+" "+filepath.Base(tn.File))
	}
	if want := []string{"first .", "initech b.json", "globex globex.yaml", "k k.yml", "volume volume.yaml"}; !slices.Equal(got, want) {
		t.Errorf("tenants %q, want %q", got, want)
	}
	g := cfg.Tenants[2]
	if g.ClientSecret.Reveal() != "FAKE-g-secret-not-real" || g.CredentialsSource != "client_secret_file "+filepath.Join(filepath.Dir(path), "g.secret") {
		t.Errorf("globex = %+v, want its secret read from ../g.secret relative to the tenants directory", g)
	}
	if s := cfg.Tenants[1].Scopes; !slices.Equal(s, []string{"a", "z"}) {
		t.Errorf("initech scopes %q", s)
	}
	if cfg.TenantsDir != dir {
		t.Errorf("TenantsDir = %q, want %q", cfg.TenantsDir, dir)
	}
	for _, f := range []string{path, dir, filepath.Join(dir, "b.json"), filepath.Join(dir, "volume.yaml")} {
		if !slices.Contains(cfg.Files, f) {
			t.Errorf("Files %q lacks %s", cfg.Files, f)
		}
	}
	if slices.Contains(cfg.Files, filepath.Join(dir, ".hidden.yaml")) {
		t.Errorf("Files %q has a dot-file", cfg.Files)
	}

	// Only a tenants_dir: tenants may be absent.
	path = tenantsDir(t, "tenants_dir: tenants\n", map[string]string{"solo.yaml": dirTenant})
	if cfg, err := config.LoadWith(path, config.Options{Now: now}); err != nil || len(cfg.Tenants) != 1 || cfg.Tenants[0].Name != "solo" {
		t.Errorf("tenants_dir alone: %v, %+v", err, cfg)
	}
}

func TestTenantsDirErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		files      map[string]string
		want       string // DIR is the config's directory
	}{
		{
			name: "no tenant files",
			yaml: "tenants_dir: tenants\n", files: map[string]string{"x.txt": dirTenant},
			want: "config: DIR/broker.yaml: tenants: at least one tenant is required; add an entry with a name and a credentials_file, or a tenant file to tenants_dir DIR/tenants (one of .yaml, .yml, .json)",
		},
		{
			name: "missing directory",
			yaml: "tenants_dir: nope\n",
			want: "config: DIR/broker.yaml:1: tenants_dir: cannot read DIR/nope: no such file or directory; create it, or fix the path (relative to the config file's directory)",
		},
		{
			name: "duplicate across files", yaml: "tenants_dir: tenants\n",
			files: map[string]string{"a.yaml": "name: x\n" + dirTenant, "b.yaml": dirTenant + "name: x\n"},
			want:  `config: DIR/tenants/b.yaml:4: name: duplicate tenant name "x" (first in DIR/tenants/a.yaml:1); tenant names must be unique`,
		},
		{
			name: "duplicate of the tenants list", yaml: "tenants:\n  - name: x\n    credentials_file: " + mustAbs(t, "testdata/acme.json") + "\ntenants_dir: tenants\n",
			files: map[string]string{"x.yaml": dirTenant},
			want:  `config: DIR/tenants/x.yaml: name: duplicate tenant name "x" (first in DIR/broker.yaml:2); tenant names must be unique`,
		},
		{
			name: "unknown key", yaml: "tenants_dir: tenants\n", files: map[string]string{"t.yaml": dirTenant + "colour: blue\n"},
			want: `config: DIR/tenants/t.yaml:4: unknown key "colour"; allowed keys: name, auth_server, token_url, credentials_file, credentials_files, client_id, client_secret_file, client_secret_files, client_assertion_key_file, client_assertion_key_files, key_id, assertion_audience, scopes, auth_style, allow_insecure_http, ca_file`,
		},
		{
			name: "wrong type", yaml: "tenants_dir: tenants\n", files: map[string]string{"t.json": `{"client_id": "c", "scopes": "read"}`},
			want: `config: DIR/tenants/t.json:1: scopes: must be a list of scopes, got a string; write e.g. [read:inputs, write:inputs]`,
		},
		{
			name: "file name is not a tenant name", yaml: "tenants_dir: tenants\n", files: map[string]string{"Bad_Name.yaml": dirTenant},
			want: `config: DIR/tenants/Bad_Name.yaml: tenant name "Bad_Name": must match [a-z0-9][a-z0-9-]{0,62} (lower-case letters, digits, hyphens); it is the file name without extension: rename the file or set name`,
		},
		{
			name: "empty file", yaml: "tenants_dir: tenants\n", files: map[string]string{"t.yaml": "# nothing\n"},
			want: `config: DIR/tenants/t.yaml: file is empty; write the tenant's keys, as in an entry of tenants`,
		},
		{
			name: "missing secret", yaml: "tenants_dir: tenants\n", files: map[string]string{"t.yaml": strings.Replace(dirTenant, "../g.secret", "none.secret", 1)},
			want: `config: DIR/tenants/t.yaml:3: client_secret_file: tenant "t": credentials: DIR/tenants/none.secret: cannot open file: no such file or directory`,
		},
		{
			name: "too large", yaml: "tenants_dir: tenants\n", files: map[string]string{"t.yaml": dirTenant + "# " + strings.Repeat("x", config.MaxFileSize)},
			want: `config: DIR/tenants/t.yaml: cannot read tenant file: read DIR/tenants/t.yaml: file is larger than 1048576 bytes`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tenantsDir(t, tc.yaml, tc.files)
			_, err := config.LoadWith(path, config.Options{Now: now})
			want := strings.ReplaceAll(tc.want, "DIR", filepath.Dir(path))
			if err == nil || err.Error() != want {
				t.Fatalf("error:\n got %v\nwant %s", err, want)
			}
			if _, ok := errors.AsType[*config.Error](err); !ok {
				t.Errorf("error is %T, want *config.Error", err)
			}
			if strings.Contains(err.Error(), "not-real") {
				t.Errorf("error leaks the secret: %s", err)
			}
		})
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// TestTenantsDirKeepsBrokenFiles: with KeepTenantsOnFileError, a tenant
// file that does not decode, or names a broken file, comes back as that
// tenant with a LoadErr and File (the name from the file if it decoded,
// else the file name); the others load. A duplicate name is still
// refused as a whole.
func TestTenantsDirKeepsBrokenFiles(t *testing.T) {
	path := tenantsDir(t, "tenants_dir: tenants\n", map[string]string{
		"good.yaml":   dirTenant,
		"syntax.yaml": "name: [\n",
		"named.yaml":  "name: acme\n" + strings.Replace(dirTenant, "../g.secret", "missing.secret", 1),
		"fifo.yaml":   "",
	})
	dir := filepath.Join(filepath.Dir(path), "tenants")
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := os.Remove(fifo); err != nil {
		t.Fatal(err)
	}
	if err := mkfifo(fifo); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	if _, err := config.LoadWith(path, config.Options{Now: now}); err == nil {
		t.Fatal("broken tenant files accepted without KeepTenantsOnFileError")
	}
	cfg, err := config.LoadWith(path, config.Options{Now: now, KeepTenantsOnFileError: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"fifo": "named pipe", "good": "", "acme": "missing.secret", "syntax": "invalid YAML"}
	if len(cfg.Tenants) != len(want) {
		t.Fatalf("tenants %+v", cfg.Tenants)
	}
	for _, tn := range cfg.Tenants {
		w, ok := want[tn.Name]
		switch {
		case !ok:
			t.Errorf("unexpected tenant %q", tn.Name)
		case w == "" && tn.LoadErr != nil:
			t.Errorf("%s: %v", tn.Name, tn.LoadErr)
		case w != "" && (tn.LoadErr == nil || !strings.Contains(tn.LoadErr.Error(), w) || !strings.Contains(tn.LoadErr.Error(), tn.File)):
			t.Errorf("%s: LoadErr %v, want one naming %s and %s", tn.Name, tn.LoadErr, tn.File, w)
		}
		if tn.File == "" {
			t.Errorf("%s: no File", tn.Name)
		}
	}
	if tn := cfg.Tenants[0]; !errors.Is(tn.LoadErr, creds.ErrNotRegular) {
		t.Errorf("fifo: %v does not wrap creds.ErrNotRegular", tn.LoadErr)
	}

	if err := os.WriteFile(filepath.Join(dir, "dup.yaml"), []byte("name: good\n"+dirTenant), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.LoadWith(path, config.Options{Now: now, KeepTenantsOnFileError: true}); err == nil || !strings.Contains(err.Error(), "duplicate tenant name") {
		t.Errorf("duplicate with KeepTenantsOnFileError: %v, want refused", err)
	}
}
