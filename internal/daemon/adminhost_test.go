package daemon_test

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// TestAdminAnswersOnlyKnownHosts: a web page that rebinds its own name to
// the admin listener's address sends its own name as Host; the listener
// answers only an IP literal, localhost or a name in admin.hosts, and
// 421 Misdirected Request to anything else, on every path (before: the
// status page to any Host).
func TestAdminAnswersOnlyKnownHosts(t *testing.T) {
	client := devidp.NewClient()
	idp := startIdP(t, client)
	dir := t.TempDir()
	yaml := fmt.Sprintf("listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n  hosts: [tokenbroker.monitoring.svc]\ntenants:\n  - name: acme\n    token_url: %s\n    client_id: %s\n    client_secret_file: s\n", idp.TokenURL(), client.ID)
	testpki.WriteFile(t, filepath.Join(dir, "s"), []byte(client.Secret))
	cfg, err := config.ParseWith([]byte(yaml), "broker.yaml", dir, config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := brokertest.Run(t, cfg, daemon.Options{Logger: jsonLogger(&logtest.Buffer{})})
	_, port, _ := strings.Cut(d.AdminAddr().String(), ":")
	for _, tc := range []struct {
		host string
		want int
	}{
		{"127.0.0.1:" + port, 200},
		{"127.0.0.1", 200},
		{"[::1]:" + port, 200},
		{"localhost:" + port, 200},
		{"LocalHost", 200},
		{"tokenbroker.monitoring.svc:" + port, 200},
		{"TokenBroker.Monitoring.SVC", 200},
		{"attacker.example:" + port, 421},
		{"attacker.example", 421},
		{"localhost.attacker.example", 421},
		{"127.0.0.1.nip.io:" + port, 421},
		{"tokenbroker.monitoring.svc.attacker.example", 421},
		{"localhost.", 421},
	} {
		for _, path := range []string{"/status.json", "/", "/metrics", "/healthz", "/readyz"} {
			req, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+d.AdminAddr().String()+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tc.host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got := resp.StatusCode
			if path == "/readyz" && got == 503 {
				got = 200 // not ready yet: answered all the same
			}
			if got != tc.want {
				t.Errorf("Host %q %s: %d, want %d", tc.host, path, resp.StatusCode, tc.want)
			}
			if tc.want == 421 && strings.Contains(string(body), "acme") {
				t.Errorf("Host %q %s: the answer names the tenant", tc.host, path)
			}
		}
	}
}
