package daemon_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// watchDeadline bounds every wait for the watcher: events arrive in
// milliseconds and the debounce is 250 ms, so seconds are plenty.
const watchDeadline = 15 * time.Second

// credentialsJSON is a Kognic credentials file for id and secret.
func credentialsJSON(t *testing.T, id, secret string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"clientId": id, "clientSecret": secret, "email": "robot@example.com",
		"userId": 4711, "issuer": "auth.app.kognic.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// secretVolume is a directory laid out as the kubelet lays out a Secret
// volume: each file is a symlink "name" → "..data/name", "..data" is a
// symlink to the current "..<timestamp>" directory, and an update writes
// a new timestamped directory and renames a fresh symlink over "..data"
// (one atomic swap), then removes the old directory.
type secretVolume struct {
	t    *testing.T
	dir  string
	n    int
	prev string
}

func newSecretVolume(t *testing.T, files map[string]string) *secretVolume {
	v := &secretVolume{t: t, dir: t.TempDir()}
	v.update(files)
	return v
}

func (v *secretVolume) path(name string) string { return filepath.Join(v.dir, name) }

func (v *secretVolume) update(files map[string]string) {
	t := v.t
	t.Helper()
	v.n++
	ts := fmt.Sprintf("..2026_01_02_03_04_05.%09d", v.n)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(v.dir, ts, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(v.dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	if v.prev != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, v.prev)); err != nil {
			t.Fatal(err)
		}
	}
	v.prev = ts
}

// watchFixture is a daemon run from a config file with Options.Load set,
// as `broker serve --config` runs it, and a dev IdP.
type watchFixture struct {
	idp  *devidp.Server
	d    *daemon.Daemon
	api  tbv1.TokenBrokerServiceClient
	logs *logtest.Buffer
	path string // the config file
}

// startWatched writes a config file with tenant acme reading
// credentialsPath from the IdP (plus extra top-level YAML) and runs it.
func startWatched(t *testing.T, idp *devidp.Server, credentialsPath, extra string) *watchFixture {
	t.Helper()
	f := &watchFixture{idp: idp, logs: &logtest.Buffer{}, path: filepath.Join(t.TempDir(), "broker.yaml")}
	yaml := fmt.Sprintf("listen: 127.0.0.1:0\ntenants:\n  - name: acme\n    token_url: %s\n    credentials_file: %s\n%s",
		idp.TokenURL(), credentialsPath, extra)
	if err := os.WriteFile(f.path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	log := jsonLogger(f.logs)
	load := func() (*config.Config, error) {
		return config.LoadWith(f.path, config.Options{Logger: log, KeepTenantsOnFileError: true})
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	f.d = brokertest.Run(t, cfg, daemon.Options{Logger: log, Load: load})
	f.api = api(t, f.d)
	return f
}

func startIdP(t *testing.T, clients ...devidp.Client) *devidp.Server {
	t.Helper()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: clients})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	return idp
}

// get returns the access token of tenant acme, or the error.
func (f *watchFixture) get(t *testing.T) (string, error) {
	t.Helper()
	resp, err := f.api.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "acme"})
	return resp.GetToken().GetAccessToken(), err
}

// waitFor polls cond until it holds, failing the test at the deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(watchDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: still waiting for %s", watchDeadline, what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// logLines returns the JSON log records whose msg is msg.
func logLines(logs *logtest.Buffer, msg string) []map[string]any {
	var out []map[string]any
	for line := range strings.Lines(logs.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestWatchRotatedSecretVolume rotates a tenant's secret the Kubernetes
// way: the IdP accepts only the new secret, the Secret volume swaps its
// "..data" symlink, and the broker — with no SIGHUP and an interval far
// too long to matter — reloads from the file system event and serves a
// token fetched with the new secret. The logs name the file and the
// tenant, never a secret.
func TestWatchRotatedSecretVolume(t *testing.T) {
	old := devidp.NewClient()
	idp := startIdP(t, old)
	vol := newSecretVolume(t, map[string]string{"acme.json": credentialsJSON(t, old.ID, old.Secret)})
	f := startWatched(t, idp, vol.path("acme.json"), "watch:\n  interval: 1h\n")

	first, err := f.get(t)
	if err != nil {
		t.Fatal(err)
	}
	issued := idp.IssuedFor(old.ID)

	rotated := devidp.Client{ID: old.ID, Secret: devidp.NewClient().Secret}
	if err := idp.AddClient(rotated); err != nil { // replaces, so the old secret is revoked
		t.Fatal(err)
	}
	vol.update(map[string]string{"acme.json": credentialsJSON(t, rotated.ID, rotated.Secret)})

	var tok string
	waitFor(t, "a token fetched with the new secret", func() bool {
		tok, err = f.get(t)
		return err == nil && tok != first
	})
	if idp.IssuedFor(old.ID) <= issued {
		t.Errorf("the IdP issued no token after the rotation")
	}
	// The re-read is logged when Reload returns, just after the token.
	waitFor(t, "the re-read to be logged", func() bool {
		return len(logLines(f.logs, "configuration re-read")) > 0
	})
	rereads := logLines(f.logs, "configuration re-read")
	r := rereads[len(rereads)-1]
	if got := fmt.Sprint(r["changed_files"]); !strings.Contains(got, vol.path("acme.json")) {
		t.Errorf("changed_files = %s, want %s", got, vol.path("acme.json"))
	}
	if got := fmt.Sprint(r["tenants_changed"]); got != "[acme]" {
		t.Errorf("tenants_changed = %s, want [acme]", got)
	}
	logtest.AssertNone(t, map[string]string{"logs": f.logs.String()},
		map[string]string{"old secret": old.Secret, "new secret": rotated.Secret, "old token": first, "new token": tok})
}

// TestWatchFixesPermanentFailure: a tenant whose secret the IdP rejects
// (invalid_client, a permanent failure retried only after minutes) is
// fixed by rewriting its credentials file in place; the broker fetches a
// token at once, with no caller asking and no SIGHUP.
func TestWatchFixesPermanentFailure(t *testing.T) {
	client := devidp.NewClient()
	idp := startIdP(t, client)
	path := filepath.Join(t.TempDir(), "acme.json")
	wrong := devidp.NewClient().Secret
	if err := os.WriteFile(path, []byte(credentialsJSON(t, client.ID, wrong)), 0o600); err != nil {
		t.Fatal(err)
	}
	f := startWatched(t, idp, path, "watch:\n  interval: 1h\n")

	waitFor(t, "the IdP to reject the wrong secret", func() bool { return idp.RequestsFor(client.ID) > 0 })
	if _, err := f.get(t); err == nil {
		t.Fatal("GetToken succeeded with a secret the IdP rejects")
	}
	if n := idp.IssuedFor(client.ID); n != 0 {
		t.Fatalf("IdP issued %d tokens for a wrong secret", n)
	}

	if err := os.WriteFile(path, []byte(credentialsJSON(t, client.ID, client.Secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	// No GetToken while waiting: the reload alone must fetch.
	waitFor(t, "a token after the fix", func() bool { return idp.IssuedFor(client.ID) > 0 })
	tok, err := f.get(t)
	if err != nil {
		t.Fatalf("GetToken after the fix: %v", err)
	}
	logtest.AssertNone(t, map[string]string{"logs": f.logs.String()},
		map[string]string{"wrong secret": wrong, "secret": client.Secret, "token": tok})
}

// keptMsg is the log of a tenant whose files failed to load on a re-read.
const keptMsg = "tenant's files could not be loaded; the tenant keeps its running configuration, the other tenants' changes apply"

// keptLogged reports whether keptMsg was logged for tenant with an error
// naming file.
func keptLogged(logs *logtest.Buffer, tenant, file string) bool {
	for _, l := range logLines(logs, keptMsg) {
		if l["tenant"] == tenant && strings.Contains(fmt.Sprint(l["error"]), file) {
			return true
		}
	}
	return false
}

// TestWatchBrokenFileKeepsServing: a credentials file replaced by a
// broken one is logged with the tenant and the file's path, and the
// tenant's running configuration keeps serving its token; nothing of the
// broken file's secret is logged. The fixed file is then applied.
func TestWatchBrokenFileKeepsServing(t *testing.T) {
	client := devidp.NewClient()
	idp := startIdP(t, client)
	vol := newSecretVolume(t, map[string]string{"acme.json": credentialsJSON(t, client.ID, client.Secret)})
	f := startWatched(t, idp, vol.path("acme.json"), "watch:\n  interval: 1h\n")
	first, err := f.get(t)
	if err != nil {
		t.Fatal(err)
	}

	rotated := devidp.Client{ID: client.ID, Secret: devidp.NewClient().Secret}
	good := credentialsJSON(t, rotated.ID, rotated.Secret)
	vol.update(map[string]string{"acme.json": good[:len(good)-30]}) // cut inside the secret
	waitFor(t, "the broken file to be logged", func() bool { return keptLogged(f.logs, "acme", vol.path("acme.json")) })
	tok, err := f.get(t)
	if err != nil || tok != first {
		t.Fatalf("after a broken file: GetToken = new token %v, %v; want the running token", tok != first, err)
	}

	if err := idp.AddClient(rotated); err != nil {
		t.Fatal(err)
	}
	vol.update(map[string]string{"acme.json": good})
	waitFor(t, "the fixed file to be applied", func() bool {
		tok, err = f.get(t)
		return err == nil && tok != first
	})
	logtest.AssertNone(t, map[string]string{"logs": f.logs.String()},
		map[string]string{"secret": client.Secret, "new secret": rotated.Secret, "secret prefix": rotated.Secret[:20], "token": tok})
}

// TestWatchBrokenTenantDoesNotBlockOthers (issue 10 D2): two tenants on
// Kubernetes Secret volumes. r2's credentials file is truncated and r1's
// secret rotated: r1's new secret is used at once, while r2 keeps serving
// its running token and the log names r2 and its file. Fixing r2 applies.
// A config file change that adds a tenant whose file is broken adds
// nothing, and says so.
func TestWatchBrokenTenantDoesNotBlockOthers(t *testing.T) {
	c1, c2 := devidp.NewClient(), devidp.NewClient()
	idp := startIdP(t, c1, c2)
	v1 := newSecretVolume(t, map[string]string{"creds.json": credentialsJSON(t, c1.ID, c1.Secret)})
	v2 := newSecretVolume(t, map[string]string{"creds.json": credentialsJSON(t, c2.ID, c2.Secret)})
	logs := &logtest.Buffer{}
	log := jsonLogger(logs)
	path := filepath.Join(t.TempDir(), "broker.yaml")
	tenants := fmt.Sprintf("listen: 127.0.0.1:0\nwatch:\n  interval: 1h\ntenants:\n"+
		"  - name: r1\n    token_url: %[1]s\n    credentials_file: %[2]s\n"+
		"  - name: r2\n    token_url: %[1]s\n    credentials_file: %[3]s\n",
		idp.TokenURL(), v1.path("creds.json"), v2.path("creds.json"))
	if err := os.WriteFile(path, []byte(tenants), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func() (*config.Config, error) {
		return config.LoadWith(path, config.Options{Logger: log, KeepTenantsOnFileError: true})
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	d := brokertest.Run(t, cfg, daemon.Options{Logger: log, Load: load})
	c := api(t, d)
	get := func(tenant string) (string, error) {
		resp, err := c.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: tenant})
		return resp.GetToken().GetAccessToken(), err
	}
	first1, err := get("r1")
	if err != nil {
		t.Fatal(err)
	}
	first2, err := get("r2")
	if err != nil {
		t.Fatal(err)
	}

	// Break r2, then rotate r1 (the IdP accepts only r1's new secret).
	rot2 := devidp.Client{ID: c2.ID, Secret: devidp.NewClient().Secret}
	good2 := credentialsJSON(t, rot2.ID, rot2.Secret)
	v2.update(map[string]string{"creds.json": good2[:len(good2)-30]})
	rot1 := devidp.Client{ID: c1.ID, Secret: devidp.NewClient().Secret}
	if err := idp.AddClient(rot1); err != nil {
		t.Fatal(err)
	}
	v1.update(map[string]string{"creds.json": credentialsJSON(t, rot1.ID, rot1.Secret)})
	var tok1 string
	waitFor(t, "r1's new secret to be used while r2 is broken", func() bool {
		tok1, err = get("r1")
		return err == nil && tok1 != first1
	})
	waitFor(t, "the log to name r2 and its file", func() bool { return keptLogged(logs, "r2", v2.path("creds.json")) })
	if tok2, err := get("r2"); err != nil || tok2 != first2 {
		t.Fatalf("broken r2: GetToken = new token %v, %v; want its running token", tok2 != first2, err)
	}
	if strings.Contains(logs.String(), "config reload failed") {
		t.Errorf("r2's broken file failed the whole re-read:\n%s", logs)
	}

	// Fix r2 with its rotated secret.
	if err := idp.AddClient(rot2); err != nil {
		t.Fatal(err)
	}
	v2.update(map[string]string{"creds.json": good2})
	var tok2 string
	waitFor(t, "r2's fixed file to be applied", func() bool {
		tok2, err = get("r2")
		return err == nil && tok2 != first2
	})

	// A new tenant whose file is broken is not added.
	broken := filepath.Join(t.TempDir(), "r3.json")
	if err := os.WriteFile(broken, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(tenants+fmt.Sprintf("  - name: r3\n    token_url: %s\n    credentials_file: %s\n", idp.TokenURL(), broken)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Reread(); err != nil {
		t.Fatalf("Reread with a new broken tenant: %v, want the others applied", err)
	}
	if !strings.Contains(logs.String(), "tenant not added: its files could not be loaded") {
		t.Error("the new broken tenant r3 was not logged")
	}
	if _, err := get("r3"); status.Code(err) != codes.NotFound {
		t.Errorf("GetToken r3 = %v, want NOT_FOUND", err)
	}
	logtest.AssertNone(t, map[string]string{"logs": logs.String()}, map[string]string{
		"r1 secret": c1.Secret, "r1 new secret": rot1.Secret, "r2 secret": c2.Secret, "r2 new secret": rot2.Secret,
		"r2 new secret prefix": rot2.Secret[:20], "r1 token": tok1, "r2 token": tok2,
	})
}

// TestStartFailsOnBrokenTenantFile: at start, a tenant's broken file
// fails New even with KeepTenantsOnFileError; only a re-read keeps a
// running tenant.
func TestStartFailsOnBrokenTenantFile(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "acme.json")
	if err := os.WriteFile(broken, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:0\ntenants:\n  - name: acme\n    credentials_file: acme.json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadWith(path, config.Options{KeepTenantsOnFileError: true})
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(cfg, daemon.Options{})
	if err == nil {
		d.Close()
		t.Fatal("New started a tenant whose credentials file is broken")
	}
	if !strings.Contains(err.Error(), broken) {
		t.Errorf("New: %v, want the error naming %s", err, broken)
	}
}

// TestWatchIntervalFallback swaps a symlinked directory above the watched
// ones, which no file system event on a watched directory reports; the
// interval's content comparison picks the new secret up.
func TestWatchIntervalFallback(t *testing.T) {
	client := devidp.NewClient()
	idp := startIdP(t, client)
	root := t.TempDir()
	write := func(dir, secret string) {
		if err := os.Mkdir(filepath.Join(root, dir), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, dir, "acme.json"), []byte(credentialsJSON(t, client.ID, secret)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("v1", client.Secret)
	if err := os.Symlink("v1", filepath.Join(root, "current")); err != nil {
		t.Fatal(err)
	}
	f := startWatched(t, idp, filepath.Join(root, "current", "acme.json"), "watch:\n  interval: 1s\n")
	first, err := f.get(t)
	if err != nil {
		t.Fatal(err)
	}

	rotated := devidp.Client{ID: client.ID, Secret: devidp.NewClient().Secret}
	if err := idp.AddClient(rotated); err != nil {
		t.Fatal(err)
	}
	write("v2", rotated.Secret)
	if err := os.Symlink("v2", filepath.Join(root, "next")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, "next"), filepath.Join(root, "current")); err != nil {
		t.Fatal(err)
	}
	var tok string
	waitFor(t, "the interval check to apply the new secret", func() bool {
		tok, err = f.get(t)
		return err == nil && tok != first
	})
	logtest.AssertNone(t, map[string]string{"logs": f.logs.String()},
		map[string]string{"secret": client.Secret, "new secret": rotated.Secret, "token": tok})
}

// TestWatchEnvironment: without a config file, the KOGNIC_CREDENTIALS
// file is watched as well.
func TestWatchEnvironment(t *testing.T) {
	client := devidp.NewClient()
	idp := startIdP(t, client)
	path := filepath.Join(t.TempDir(), "creds.json")
	if err := os.WriteFile(path, []byte(credentialsJSON(t, client.ID, client.Secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{creds.EnvCredentials: path, "KOGNIC_AUTH_SERVER": idp.URL()}
	logs := &logtest.Buffer{}
	log := jsonLogger(logs)
	load := func() (*config.Config, error) {
		cfg, err := config.FromEnvWith(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, config.Options{Logger: log})
		if err == nil {
			cfg.Listen = "127.0.0.1:0"
		}
		return cfg, err
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	d := brokertest.Run(t, cfg, daemon.Options{Logger: log, Load: load})
	c := api(t, d)
	get := func() (string, error) {
		resp, err := c.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "default"})
		return resp.GetToken().GetAccessToken(), err
	}
	first, err := get()
	if err != nil {
		t.Fatal(err)
	}
	rotated := devidp.Client{ID: client.ID, Secret: devidp.NewClient().Secret}
	if err := idp.AddClient(rotated); err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(credentialsJSON(t, rotated.ID, rotated.Secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // as editors and config tools replace files
		t.Fatal(err)
	}
	var tok string
	waitFor(t, "a token fetched with the new secret", func() bool {
		tok, err = get()
		return err == nil && tok != first
	})
	logtest.AssertNone(t, map[string]string{"logs": logs.String()},
		map[string]string{"secret": client.Secret, "new secret": rotated.Secret, "token": tok})
}

// TestRereadWithoutLoad: a daemon given no Options.Load cannot re-read.
func TestRereadWithoutLoad(t *testing.T) {
	client := devidp.NewClient()
	idp := startIdP(t, client)
	cfg := &config.Config{Listen: "127.0.0.1:0", Tenants: []config.Tenant{{
		Name: "acme", TokenURL: idp.TokenURL(), ClientID: client.ID, ClientSecret: creds.Secret(client.Secret), AuthStyle: config.AuthStyleBody,
	}}}
	d, err := daemon.New(cfg, daemon.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Reread(); err == nil || !strings.Contains(err.Error(), "Options.Load") {
		t.Errorf("Reread = %v, want an error naming Options.Load", err)
	}
}

// TestWatchConfigFileAddsFiles: an edited config file (saved by rename)
// adds a tenant whose secret file lives in a directory not watched
// before; the tenant starts, and the new file is watched from then on: a
// fix of its secret is applied without SIGHUP.
func TestWatchConfigFileAddsFiles(t *testing.T) {
	acme, globex := devidp.NewClient(), devidp.NewClient()
	idp := startIdP(t, acme, globex)
	acmePath := filepath.Join(t.TempDir(), "acme.json")
	if err := os.WriteFile(acmePath, []byte(credentialsJSON(t, acme.ID, acme.Secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	f := startWatched(t, idp, acmePath, "watch:\n  interval: 1h\n")
	if _, err := f.get(t); err != nil {
		t.Fatal(err)
	}

	secretPath := filepath.Join(t.TempDir(), "globex.secret")
	wrong := devidp.NewClient().Secret
	if err := os.WriteFile(secretPath, []byte(wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgData, err := os.ReadFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	tenant := fmt.Sprintf("  - name: globex\n    token_url: %s\n    client_id: %s\n    client_secret_file: %s\n",
		idp.TokenURL(), globex.ID, secretPath)
	cfgData = []byte(strings.Replace(string(cfgData), "watch:", tenant+"watch:", 1))
	tmp := f.path + ".swp"
	if err := os.WriteFile(tmp, cfgData, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		t.Fatal(err)
	}
	// The re-read is logged after Reload returns, by when the new tenant
	// has started and its secret file's directory is watched: only then
	// is a change to that file bound to be seen.
	waitFor(t, "the re-read that adds globex", func() bool {
		for _, l := range logLines(f.logs, "configuration re-read") {
			if fmt.Sprint(l["tenants_added"]) == "[globex]" {
				return true
			}
		}
		return false
	})
	waitFor(t, "the new tenant globex to ask the IdP for a token", func() bool { return idp.RequestsFor(globex.ID) > 0 })

	if err := os.WriteFile(secretPath, []byte(globex.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "globex's fixed secret to be used", func() bool { return idp.IssuedFor(globex.ID) > 0 })
	resp, err := f.api.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "globex"})
	if err != nil {
		t.Fatalf("GetToken globex: %v", err)
	}
	logtest.AssertNone(t, map[string]string{"logs": f.logs.String()}, map[string]string{
		"acme secret": acme.Secret, "globex secret": globex.Secret, "wrong secret": wrong,
		"token": resp.GetToken().GetAccessToken(),
	})
}

// TestRereadStormBounded (issue 10 D1): 50 re-reads (SIGHUPs) of an
// unchanged configuration whose tenant the IdP rejects (invalid_client,
// both credentials of a rotation) retry the tenant once, not 50 times:
// at most once per broker.ReloadRetryInterval per key.
func TestRereadStormBounded(t *testing.T) {
	f := faultidp.Start()
	t.Cleanup(f.Close)
	f.SetDefault(faultidp.OAuthError(401, "invalid_client", "bad secret"))
	dir := t.TempDir()
	for name, secret := range map[string]string{"new.secret": "n3w-s3cr3t\n", "old.secret": "0ld-s3cr3t\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(secret), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "broker.yaml")
	yaml := fmt.Sprintf("listen: 127.0.0.1:0\nshutdown:\n  drain: 0s\nwatch:\n  enabled: false\ntenants:\n  - name: acme\n    token_url: %s\n    client_id: c\n    client_secret_files: [new.secret, old.secret]\n", f.TokenURL())
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func() (*config.Config, error) {
		return config.LoadWith(path, config.Options{KeepTenantsOnFileError: true})
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	d := brokertest.Run(t, cfg, daemon.Options{Load: load})
	c := api(t, d)
	if _, err := c.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "acme"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("GetToken = %v, want FAILED_PRECONDITION", err)
	}
	before := f.Requests() // 2: both credentials tried
	for range 50 {
		if err := d.Reread(); err != nil {
			t.Fatal(err)
		}
	}
	// GetToken waits for a retry still in flight.
	if _, err := c.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "acme"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("GetToken after the storm = %v, want FAILED_PRECONDITION", err)
	}
	if n := f.Requests() - before; n > 2 {
		t.Errorf("50 re-reads caused %d IdP requests, want at most 2 (one retry, both credentials)", n)
	}
}
