package daemon_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
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
	idp    *devidp.Server
	client devidp.Client
	d      *daemon.Daemon
	api    tbv1.TokenBrokerServiceClient
	logs   *logtest.Buffer
	path   string // the config file
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
	load := func() (*config.Config, error) { return config.LoadWith(f.path, config.Options{Logger: log}) }
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

// TestWatchBrokenFileKeepsServing: a credentials file replaced by a
// broken one is logged with its path and the running configuration keeps
// serving its token; nothing of the broken file's secret is logged. The
// fixed file is then applied.
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
	waitFor(t, "the failed reload to be logged", func() bool {
		return len(logLines(f.logs, "config reload failed; keeping the running configuration")) > 0
	})
	failure := logLines(f.logs, "config reload failed; keeping the running configuration")[0]
	if got := fmt.Sprint(failure["files"]); !strings.Contains(got, vol.path("acme.json")) {
		t.Errorf("the failure names files %s, want %s", got, vol.path("acme.json"))
	}
	if got := fmt.Sprint(failure["error"]); !strings.Contains(got, vol.path("acme.json")) {
		t.Errorf("the error does not name the file: %s", got)
	}
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
	// Recovery is logged once the re-read returns, just after the new
	// tenant fetched its token.
	waitFor(t, "the recovery to be logged", func() bool {
		return len(logLines(f.logs, "configuration reload succeeded again")) > 0
	})
	if n := len(logLines(f.logs, "configuration reload succeeded again")); n != 1 {
		t.Errorf("recovery logged %d times, want once:\n%s", n, f.logs)
	}
	logtest.AssertNone(t, map[string]string{"logs": f.logs.String()},
		map[string]string{"secret": client.Secret, "new secret": rotated.Secret, "secret prefix": rotated.Secret[:20], "token": tok})
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
