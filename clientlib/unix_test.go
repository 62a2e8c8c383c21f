package clientlib_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/clientlib"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
)

// TestBrokerOnUnixSocket: TOKENBROKER_ADDR (and WithBroker) take a
// unix:///path target; the broker there names this process by its uid.
func TestBrokerOnUnixSocket(t *testing.T) {
	c := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{c}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s"), []byte(c.Secret), 0o600); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "broker.sock")
	cfg, err := config.ParseWith(fmt.Appendf(nil, "listen: unix://%s\ntenants:\n  - {name: acme, token_url: %s, client_id: %s, client_secret_file: s}\n"+
		"callers:\n  - {name: me, unix_uid: %d, tenants: [acme]}\n", socket, idp.TokenURL(), c.ID, os.Geteuid()), "broker.yaml", dir, config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.Run(t, cfg, daemon.Options{})
	for name, opts := range map[string][]clientlib.Option{
		"TOKENBROKER_ADDR": {clientlib.WithEnv(func(k string) (string, bool) {
			v, ok := map[string]string{"TOKENBROKER_ADDR": "unix://" + socket, "TOKENBROKER_TENANT": "acme"}[k]
			return v, ok
		})},
		"WithBroker": {clientlib.WithEnv(nil), clientlib.WithBroker("unix://"+socket, "acme")},
	} {
		t.Run(name, func(t *testing.T) {
			hc, err := clientlib.NewHTTPClient(t.Context(), opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer hc.Close()
			tok, err := hc.Source().TokenContext(t.Context())
			if err != nil || strings.Count(tok.AccessToken, ".") != 2 {
				t.Errorf("token over the socket: %v", err)
			}
		})
	}
}
