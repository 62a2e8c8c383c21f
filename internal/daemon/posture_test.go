package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/broker/config"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// keyedConfig is a plaintext loopback broker with one API key caller:
// %[1]s token URL, %[2]s client id, %[3]s the key's SHA-256.
const keyedConfig = `listen: 127.0.0.1:0
shutdown:
  drain: 0s
tenants:
  - name: acme
    token_url: %[1]s
    client_id: %[2]s
    client_secret_file: idp.secret
callers:
  - name: ci
    api_key_sha256: %[3]s
    tenants: ["*"]
`

// keyedBroker is a daemon run from keyedConfig as `broker serve` runs it
// (Options.Load: the file is watched).
type keyedBroker struct {
	d    *daemon.Daemon
	path string
	yaml string // the config as first written
	key  string
	logs *logtest.Buffer
	api  tbv1.TokenBrokerServiceClient
}

// startKeyed runs keyedConfig; withoutCallers leaves its callers out
// (open mode).
func startKeyed(t *testing.T, withoutCallers bool) *keyedBroker {
	t.Helper()
	client := devidp.NewClient()
	idp := startIdP(t, client)
	dir := t.TempDir()
	testpki.WriteFile(t, filepath.Join(dir, "idp.secret"), []byte(client.Secret+"\n"))
	k := &keyedBroker{path: filepath.Join(dir, "broker.yaml"), key: brokertest.RandomKey(t), logs: &logtest.Buffer{}}
	k.yaml = fmt.Sprintf(keyedConfig, idp.TokenURL(), client.ID, brokertest.SHA256Hex(k.key))
	if withoutCallers {
		k.yaml = k.yaml[:strings.Index(k.yaml, "callers:")]
	}
	testpki.WriteFile(t, k.path, []byte(k.yaml))
	log := jsonLogger(k.logs)
	load := func() (*config.Config, error) {
		return config.LoadWith(k.path, config.Options{Logger: log, KeepTenantsOnFileError: true})
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	k.d = brokertest.Run(t, cfg, daemon.Options{Logger: log, Load: load})
	k.api = api(t, k.d)
	return k
}

// poll calls GetToken every 50 ms until stop, anonymously and with the
// API key, and counts the anonymous successes and the keyed failures.
func (k *keyedBroker) poll(stop <-chan struct{}) (wait func() (anonOK, keyedFailed, polls int)) {
	var wg sync.WaitGroup
	var anon, failed, n int
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if _, err := k.api.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: "acme"}); err == nil {
				anon++
			}
			if _, err := k.api.GetToken(brokertest.Bearer(ctx, k.key), &tbv1.GetTokenRequest{Tenant: "acme"}); err != nil {
				failed++
			}
			cancel()
			n++
		}
	})
	return func() (int, int, int) { wg.Wait(); return anon, failed, n }
}

// lastReload returns status.json's last_reload.
func lastReload(t *testing.T, d *daemon.Daemon) (result, msg string) {
	t.Helper()
	code, body := adminGet(t, d, "/status.json")
	var st struct {
		LastReload struct{ Result, Error string } `json:"last_reload"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("status.json: %d %s", code, body)
	}
	return st.LastReload.Result, st.LastReload.Error
}

func reloads(t *testing.T, d *daemon.Daemon, result string) float64 {
	t.Helper()
	_, body := adminGet(t, d, "/metrics")
	return metricValue(body, `tokenbroker_config_reloads_total{result="`+result+`"}`)
}

// TestSlowWriterNeverOpensTheBroker is the attack on a watched config:
// the running file is truncated just before "callers:" and the rest is
// written slowly, each partial state left alone long enough for the
// watcher. An anonymous client polling GetToken every 50 ms throughout
// gets nothing (before: open mode, anonymous tokens); the refusal is
// logged at error with its reason, counted as rejected and shown on the
// status page; the API key caller is served throughout; the complete
// file applies.
func TestSlowWriterNeverOpensTheBroker(t *testing.T) {
	k := startKeyed(t, false)
	if _, err := k.api.GetToken(brokertest.Bearer(t.Context(), k.key), &tbv1.GetTokenRequest{Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
	_, err := k.api.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "acme"})
	brokertest.WantStatus(t, "anonymous before the attack", err, codes.Unauthenticated)

	stop := make(chan struct{})
	wait := k.poll(stop)
	cut := strings.Index(k.yaml, "callers:")
	if err := os.WriteFile(k.path, []byte(k.yaml[:cut]), 0o600); err != nil { // truncates, then writes the head
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the writer stalls: 4× the debounce
	eventually(t, "the refusal on the status page", func() bool {
		r, _ := lastReload(t, k.d)
		return r == "rejected"
	})
	if _, msg := lastReload(t, k.d); !strings.Contains(msg, "removes every caller") {
		t.Errorf("status.json last_reload.error = %q, want the reason", msg)
	}
	if _, page := adminGet(t, k.d, "/"); !strings.Contains(page, "Configuration reload <strong>refused</strong>") {
		t.Error("the status page does not show the refusal")
	}
	f, err := os.OpenFile(k.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(k.yaml[cut:]) {
		if _, err := f.WriteString(line); err != nil {
			t.Fatal(err)
		}
		time.Sleep(400 * time.Millisecond) // a slow writer: each partial file settles
	}
	f.Close()
	eventually(t, "the complete file applied", func() bool {
		r, _ := lastReload(t, k.d)
		return r == "success"
	})
	close(stop)
	anonOK, keyedFailed, polls := wait()
	if anonOK != 0 || keyedFailed != 0 || polls < 40 {
		t.Errorf("over %d polls: %d anonymous successes, %d failures of the API key caller; want none", polls, anonOK, keyedFailed)
	}
	if n := reloads(t, k.d, "rejected"); n < 1 {
		t.Errorf("tokenbroker_config_reloads_total{result=\"rejected\"} = %v", n)
	}
	refused := logLines(k.logs, "config reload refused; keeping the running configuration")
	if len(refused) == 0 || refused[0]["level"] != "ERROR" || !strings.Contains(fmt.Sprint(refused[0]["error"]), "removes every caller") {
		t.Errorf("refusal log: %v", refused)
	}
	if strings.Contains(k.logs.String(), "NO CALLERS CONFIGURED") {
		t.Error("the broker went to open mode")
	}
}

// TestReloadRefusedWhenItLowersSecurity: on the secured broker (TLS,
// mutual TLS, callers), reloading a file without callers and Reload of
// configurations without tls, without client_ca_file or with
// insecure_plaintext are refused with ErrLowersSecurity naming why, each
// counted as rejected and shown in status.json; the running
// configuration stays (the certificate caller is served, a caller without
// credentials is not); an unchanged file then reloads.
func TestReloadRefusedWhenItLowersSecurity(t *testing.T) {
	s := brokertest.StartSecured(t)
	d := s.Daemon
	secured := fmt.Sprintf(brokertest.SecuredConfig, s.IdP.TokenURL(), s.Client.ID, brokertest.SHA256Hex(s.APIKey))
	billing := s.API(s.WithCert(brokertest.BillingSPIFFE))
	anon := s.API(s.TLSOnly())

	mutate := func(f func(*config.Config)) func() error {
		return func() error {
			cfg, err := s.Load()
			if err != nil {
				t.Fatal(err)
			}
			f(cfg)
			return d.Reload(cfg)
		}
	}
	for i, tc := range []struct {
		name   string
		reload func() error
		why    string
	}{
		{"callers removed (file reloaded)", func() error {
			s.WriteConfig(secured[:strings.Index(secured, "callers:")] + "audit:\n  path: audit.log\n")
			defer s.WriteConfig(secured)
			return s.Reload()
		}, "it removes every caller"},
		{"tls removed", mutate(func(c *config.Config) { c.TLS = nil }), "it removes tls"},
		{"client_ca_file removed", mutate(func(c *config.Config) { c.TLS.ClientCAFile = "" }), "it removes tls.client_ca_file"},
		{"insecure_plaintext set", mutate(func(c *config.Config) { c.InsecurePlaintext = true }), "it sets insecure_plaintext"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.reload()
			if !errors.Is(err, daemon.ErrLowersSecurity) || !strings.Contains(err.Error(), tc.why) || !strings.Contains(err.Error(), "restart the broker") {
				t.Fatalf("reload: %v, want a refusal saying %q", err, tc.why)
			}
			if n := reloads(t, d, "rejected"); n != float64(i+1) {
				t.Errorf("rejected reloads = %v, want %d", n, i+1)
			}
			if r, msg := lastReload(t, d); r != "rejected" || !strings.Contains(msg, tc.why) {
				t.Errorf("status.json last_reload = %s %q", r, msg)
			}
			if _, err := s.Get(t.Context(), billing, "acme"); err != nil {
				t.Errorf("billing after the refusal: %v", err)
			}
			_, err = s.Get(t.Context(), anon, "acme")
			brokertest.WantStatus(t, "no credentials after the refusal", err, codes.Unauthenticated)
		})
	}
	if err := s.Reload(); err != nil {
		t.Fatalf("reload of the unchanged file: %v", err)
	}
	if r, _ := lastReload(t, d); r != "success" || reloads(t, d, "success") != 1 || reloads(t, d, "error") != 0 {
		t.Errorf("after a good reload: last_reload %s, success %v, error %v", r, reloads(t, d, "success"), reloads(t, d, "error"))
	}
}

// TestFailedReloadsCounted: a file that does not parse counts in
// tokenbroker_config_reloads_total{result="error"}, from SIGHUP (Reread)
// and from the file watch alike (before: 0 after any number of logged
// failures), and shows in status.json.
func TestFailedReloadsCounted(t *testing.T) {
	k := startKeyed(t, false)
	testpki.WriteFile(t, k.path, []byte(k.yaml+"bogus: 1\n"))
	if err := k.d.Reread(); err == nil || !strings.Contains(err.Error(), `unknown key "bogus"`) {
		t.Fatalf("Reread: %v", err)
	}
	if n := reloads(t, k.d, "error"); n != 1 {
		t.Errorf("after SIGHUP of a bad file: error reloads = %v, want 1", n)
	}
	if r, msg := lastReload(t, k.d); r != "error" || !strings.Contains(msg, `unknown key \"bogus\"`) && !strings.Contains(msg, `unknown key "bogus"`) {
		t.Errorf("status.json last_reload = %s %q", r, msg)
	}
	testpki.WriteFile(t, k.path, []byte(k.yaml+"tenants: []\n")) // a duplicate key, seen by the watcher
	eventually(t, "the watcher's failed reload counted", func() bool { return reloads(t, k.d, "error") == 2 })
	testpki.WriteFile(t, k.path, []byte(k.yaml))
	eventually(t, "the fixed file applied", func() bool { return reloads(t, k.d, "success") == 1 })
	if n := reloads(t, k.d, "error"); n != 2 {
		t.Errorf("error reloads = %v, want 2", n)
	}
}

// TestNoCallersWarningOnce: a broker without callers warns NO CALLERS
// CONFIGURED once, at start, not again on each reload (before: once per
// reload, SIGHUP or file change).
func TestNoCallersWarningOnce(t *testing.T) {
	k := startKeyed(t, true)
	warnings := func() int { return strings.Count(k.logs.String(), "NO CALLERS CONFIGURED") }
	if n := warnings(); n != 1 {
		t.Fatalf("%d warnings at start, want 1", n)
	}
	for range 3 {
		if err := k.d.Reread(); err != nil {
			t.Fatal(err)
		}
	}
	if n := warnings(); n != 1 {
		t.Errorf("%d NO CALLERS CONFIGURED warnings after 3 SIGHUPs, want 1 (at start)", n)
	}
	testpki.WriteFile(t, k.path, []byte(k.yaml+"strict_file_permissions: false\n"))
	eventually(t, "the changed file applied", func() bool { return reloads(t, k.d, "success") >= 4 })
	if n := reloads(t, k.d, "success"); n != 4 {
		t.Errorf("%v successful reloads, want 4; logs:\n%s", n, k.logs.String())
	}
	if n := warnings(); n != 1 {
		t.Errorf("%d NO CALLERS CONFIGURED warnings after 4 reloads, want 1 (at start)", n)
	}
	if _, err := k.api.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "acme"}); err != nil {
		t.Errorf("open mode after the reloads: %v", err)
	}
}

// TestSlowWriterNeverWidensACallersScopes is the red team's attack on a
// caller with a scopes allow-list (issue 16, finding A): the running file
// is cut just before the caller's "scopes:", then after "scopes:" with no
// value, each stalled for 4× the debounce while a SIGHUP (Reread) also
// arrives, then completed. The caller polling for a scope outside its
// allow-list every 50 ms gets nothing; the cut files are refused
// (rejected) or fail to load (error).
func TestSlowWriterNeverWidensACallersScopes(t *testing.T) {
	client := devidp.NewClient()
	idp := startIdP(t, client)
	dir := t.TempDir()
	testpki.WriteFile(t, filepath.Join(dir, "idp.secret"), []byte(client.Secret+"\n"))
	key := brokertest.RandomKey(t)
	full := fmt.Sprintf(keyedConfig, idp.TokenURL(), client.ID, brokertest.SHA256Hex(key)) + "    scopes: [\"read:*\"]\n"
	path := filepath.Join(dir, "broker.yaml")
	testpki.WriteFile(t, path, []byte(full))
	logs := &logtest.Buffer{}
	log := jsonLogger(logs)
	load := func() (*config.Config, error) {
		return config.LoadWith(path, config.Options{Logger: log, KeepTenantsOnFileError: true})
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	d := brokertest.Run(t, cfg, daemon.Options{Logger: log, Load: load})
	c := api(t, d)
	wide := &tbv1.GetTokenRequest{Tenant: "acme", Scopes: []string{"write:all"}}
	_, err = c.GetToken(brokertest.Bearer(t.Context(), key), wide)
	brokertest.WantStatus(t, "write:all before the attack", err, codes.PermissionDenied)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var granted, polls int
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if _, err := c.GetToken(brokertest.Bearer(ctx, key), wide); err == nil {
				granted++
			}
			cancel()
			polls++
		}
	})
	cut := strings.Index(full, "    scopes:")
	for _, partial := range []string{full[:cut], full[:cut] + "    scopes:\n"} {
		if err := os.WriteFile(path, []byte(partial), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = d.Reread()          // a SIGHUP while the writer stalls
		time.Sleep(time.Second) // the writer stalls: 4× the debounce; the watcher applies what settled
	}
	testpki.WriteFile(t, path, []byte(full))
	eventually(t, "the complete file applied", func() bool {
		r, _ := lastReload(t, d)
		return r == "success"
	})
	close(stop)
	wg.Wait()
	if granted != 0 || polls < 20 {
		t.Errorf("over %d polls the caller got a scope outside its allow-list %d times; want none", polls, granted)
	}
	if n := reloads(t, d, "rejected"); n < 1 {
		t.Errorf("tokenbroker_config_reloads_total{result=\"rejected\"} = %v, want the cut file refused", n)
	}
	if n := reloads(t, d, "error"); n < 1 {
		t.Errorf("tokenbroker_config_reloads_total{result=\"error\"} = %v, want \"scopes:\" without a value refused", n)
	}
}

// TestDefaultScopesFollowReload: a request without scopes from a caller
// with a scopes allow-list is checked against the tenant's default scopes
// as the running configuration has them: allowed while they match the
// allow-list, denied once a reload changes only them to a scope outside it.
func TestDefaultScopesFollowReload(t *testing.T) {
	client := devidp.NewClient()
	idp := startIdP(t, client)
	dir := t.TempDir()
	testpki.WriteFile(t, filepath.Join(dir, "idp.secret"), []byte(client.Secret+"\n"))
	key := brokertest.RandomKey(t)
	path := filepath.Join(dir, "broker.yaml")
	load := func(scope string) *config.Config {
		t.Helper()
		yaml := fmt.Sprintf(keyedConfig, idp.TokenURL(), client.ID, brokertest.SHA256Hex(key)) + "    scopes: [\"read:*\"]\n"
		yaml = strings.Replace(yaml, "    client_secret_file: idp.secret\n", "    client_secret_file: idp.secret\n    scopes: ["+scope+"]\n", 1)
		testpki.WriteFile(t, path, []byte(yaml))
		cfg, err := config.LoadWith(path, config.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	d := brokertest.Run(t, load("read:a"), daemon.Options{})
	c := api(t, d)
	get := func() error {
		_, err := c.GetToken(brokertest.Bearer(t.Context(), key), &tbv1.GetTokenRequest{Tenant: "acme"})
		return err
	}
	if err := get(); err != nil {
		t.Fatalf("default scopes read:a within the allow-list read:*: %v", err)
	}
	if err := d.Reload(load("write:a")); err != nil {
		t.Fatal(err)
	}
	brokertest.WantStatus(t, "default scopes write:a outside the allow-list", get(), codes.PermissionDenied)
}
