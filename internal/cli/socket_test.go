package cli

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// TestUnixSocketBroker: `broker token` and `broker call` reach a broker on
// a Unix socket by --addr unix:///path or TOKENBROKER_ADDR, as the uid
// this test runs as (a caller by unix_uid); an API key is sent there
// without TLS (the socket is local) and decides; --tls is refused.
func TestUnixSocketBroker(t *testing.T) {
	c := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{c}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	dir := t.TempDir()
	key := brokertest.RandomKey(t)
	keyFile, wrongFile := filepath.Join(dir, "ci.key"), filepath.Join(dir, "wrong.key")
	testpki.WriteFile(t, keyFile, []byte(key+"\n"))
	testpki.WriteFile(t, wrongFile, []byte(brokertest.RandomKey(t)+"\n"))
	testpki.WriteFile(t, filepath.Join(dir, "idp.secret"), []byte(c.Secret+"\n"))
	socket := filepath.Join(dir, "run", "broker.sock")
	cfgFile := filepath.Join(dir, "broker.yaml")
	testpki.WriteFile(t, cfgFile, fmt.Appendf(nil, `listen: unix://%s
tenants:
  - {name: team-a, token_url: %s, client_id: %s, client_secret_file: idp.secret}
  - {name: team-b, token_url: %s, client_id: %s, client_secret_file: idp.secret}
callers:
  - {name: me, unix_uid: %d, tenants: [team-a]}
  - {name: ci, api_key_sha256: %s, tenants: [team-b]}
`, socket, idp.TokenURL(), c.ID, idp.TokenURL(), c.ID, os.Geteuid(), brokertest.SHA256Hex(key)))
	cfg, err := config.LoadWith(cfgFile, config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.Run(t, cfg, daemon.Options{})
	addr := "unix://" + socket
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); !ok || strings.Count(tok, ".") != 2 {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(api.Close)

	for _, tc := range []struct {
		name string
		env  []string
		args []string
		err  string // "": a JWT on stdout
	}{
		{"--addr unix:///path", nil, []string{"--addr", addr, "--tenant", "team-a"}, ""},
		{"TOKENBROKER_ADDR", []string{"TOKENBROKER_ADDR", addr, "TOKENBROKER_TENANT", "team-a"}, nil, ""},
		{"a tenant the uid may not use", nil, []string{"--addr", addr, "--tenant", "team-b"},
			`token: PermissionDenied: caller "me" may not use tenant "team-b"; ask the broker's operator to allow it`},
		{"API key over the socket", nil, []string{"--addr", addr, "--tenant", "team-b", "--api-key-file", keyFile}, ""},
		{"a wrong API key is refused, not the uid taken", nil, []string{"--addr", addr, "--tenant", "team-a", "--api-key-file", wrongFile},
			"token: Unauthenticated: API key not recognised"},
		{"--tls", nil, []string{"--addr", addr, "--tenant", "team-a", "--tls"},
			"token: the --tls* flags do not apply to " + addr + ": the broker serves its Unix socket without TLS (the socket does not leave the host); drop them"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout strings.Builder
			err := Token(t.Context(), append(tc.args, "--timeout", "10s"), envOf(tc.env...), &stdout, &strings.Builder{})
			if tc.err != "" {
				checkErr(t, err, tc.err)
				return
			}
			if err != nil || strings.Count(stdout.String(), ".") != 2 {
				t.Fatalf("stdout %q, %v; want a JWT", stdout.String(), err)
			}
		})
	}
	var stdout strings.Builder
	if err := Call(t.Context(), []string{"get", api.URL, "--addr", addr, "--tenant", "team-a", "--timeout", "10s"}, envOf(), &stdout, &strings.Builder{}); err != nil || stdout.String() != "ok\n" {
		t.Errorf("call over the socket: %q, %v", stdout.String(), err)
	}
}
