package daemon_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker/config"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// TestWatchTenantsDir: tenants_dir is watched like the config file, with
// no SIGHUP and an interval far too long to matter. A key added to the
// Kubernetes ConfigMap volume starts its tenant; a tenant file broken in
// place (so that its name key is lost) keeps that tenant's running
// configuration and names the file; a
// file written next to them (by renaming a dot-file) starts its tenant; a
// key removed from the volume ends its tenant.
func TestWatchTenantsDir(t *testing.T) {
	acme, globex, initech := devidp.NewClient(), devidp.NewClient(), devidp.NewClient()
	idp := startIdP(t, acme, globex, initech)
	dir := t.TempDir()
	tenant := func(c devidp.Client) string {
		secret := filepath.Join(dir, c.ID+".secret")
		if err := os.WriteFile(secret, []byte(c.Secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("token_url: %s\nclient_id: %s\nclient_secret_file: %s\n", idp.TokenURL(), c.ID, secret)
	}
	acmeFile, globexFile := tenant(acme), "name: globex\n"+tenant(globex)
	vol := newSecretVolume(t, map[string]string{"acme.yaml": acmeFile})
	path := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:0\nwatch:\n  interval: 1h\ntenants_dir: "+vol.dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	log := jsonLogger(logs)
	load := func() (*config.Config, error) {
		return config.LoadWith(path, config.Options{Logger: log, KeepTenantsOnFileError: true})
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	c := api(t, brokertest.Run(t, cfg, daemon.Options{Logger: log, Load: load}))
	get := func(tenant string) (string, error) {
		resp, err := c.GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: tenant})
		return resp.GetToken().GetAccessToken(), err
	}
	if _, err := get("acme"); err != nil {
		t.Fatal(err)
	}

	vol.update(map[string]string{"acme.yaml": acmeFile, "g.yaml": globexFile})
	var first string
	waitFor(t, "the added tenant globex to serve", func() bool {
		first, err = get("globex")
		return err == nil
	})

	vol.update(map[string]string{"acme.yaml": acmeFile, "g.yaml": "name: [globex\n"})
	waitFor(t, "the broken g.yaml to be logged", func() bool { return keptLogged(logs, "globex", vol.path("g.yaml")) })
	if tok, err := get("globex"); err != nil || tok != first {
		t.Fatalf("broken g.yaml: GetToken = new token %v, %v; want the running token", tok != first, err)
	}

	tmp := filepath.Join(vol.dir, ".initech.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(tenant(initech)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(vol.dir, "initech.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the written tenant initech to serve", func() bool {
		_, err := get("initech")
		return err == nil
	})

	// The kubelet removes a dropped key's symlink after the swap.
	vol.update(map[string]string{"g.yaml": globexFile})
	if err := os.Remove(vol.path("acme.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removed tenant acme to end", func() bool {
		_, err := get("acme")
		return status.Code(err) == codes.NotFound
	})
	if _, err := get("globex"); err != nil {
		t.Errorf("globex after its file was fixed: %v", err)
	}
	logtest.AssertNone(t, map[string]string{"logs": logs.String()}, map[string]string{
		"acme secret": acme.Secret, "globex secret": globex.Secret, "initech secret": initech.Secret, "globex token": first,
	})
}
