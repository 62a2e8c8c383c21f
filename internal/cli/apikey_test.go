package cli

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/testpki"
)

// The commands start clientlib's goroutines and these tests a broker.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestAPIKeyToLoopbackBroker: --api-key-file without TLS authenticates
// `broker token` and `broker call` to a broker on a loopback plaintext
// listener (elsewhere it is refused, see TestTokenBadArguments), and it is
// the key that does: a wrong one is refused.
func TestAPIKeyToLoopbackBroker(t *testing.T) {
	c := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{c}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	dir := t.TempDir()
	key, wrong := brokertest.RandomKey(t), brokertest.RandomKey(t)
	keyFile, wrongFile := filepath.Join(dir, "ci.key"), filepath.Join(dir, "wrong.key")
	testpki.WriteFile(t, keyFile, []byte(key+"\n"))
	testpki.WriteFile(t, wrongFile, []byte(wrong+"\n"))
	testpki.WriteFile(t, filepath.Join(dir, "idp.secret"), []byte(c.Secret+"\n"))
	cfgFile := filepath.Join(dir, "broker.yaml")
	testpki.WriteFile(t, cfgFile, fmt.Appendf(nil, `listen: 127.0.0.1:0
tenants:
  - name: team-a
    token_url: %s
    client_id: %s
    client_secret_file: idp.secret
callers:
  - name: ci
    api_key_sha256: %s
    tenants: [team-a]
`, idp.TokenURL(), c.ID, brokertest.SHA256Hex(key)))
	cfg, err := config.LoadWith(cfgFile, config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr := brokertest.Run(t, cfg, daemon.Options{}).Addr().String()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || strings.Count(tok, ".") != 2 {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"data": [{"id": 1}]}`)
	}))
	t.Cleanup(api.Close)

	for _, tc := range []struct {
		name, keyFile string
		run           func(args []string, stdout *strings.Builder) error
		want, err     string
	}{
		{name: "token", keyFile: keyFile, run: func(args []string, stdout *strings.Builder) error {
			return Token(t.Context(), args, envOf(), stdout, &strings.Builder{})
		}},
		{name: "token, wrong key", keyFile: wrongFile, err: "token: Unauthenticated: API key not recognised", run: func(args []string, stdout *strings.Builder) error {
			return Token(t.Context(), args, envOf(), stdout, &strings.Builder{})
		}},
		{name: "call", keyFile: keyFile, want: "id\n1\n", run: func(args []string, stdout *strings.Builder) error {
			return Call(t.Context(), append([]string{"get", api.URL, "--format", "csv"}, args...), envOf(), stdout, &strings.Builder{})
		}},
		{name: "call, wrong key", keyFile: wrongFile, err: "call: clientlib: tenant \"team-a\": …", run: func(args []string, stdout *strings.Builder) error {
			return Call(t.Context(), append([]string{"get", api.URL}, args...), envOf(), stdout, &strings.Builder{})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout strings.Builder
			err := tc.run([]string{"--addr", addr, "--tenant", "team-a", "--api-key-file", tc.keyFile, "--timeout", "10s"}, &stdout)
			if tc.err != "" {
				checkErr(t, err, tc.err)
				if !strings.Contains(err.Error(), "Unauthenticated") {
					t.Errorf("error %v: want the broker's Unauthenticated", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != "" && stdout.String() != tc.want {
				t.Errorf("stdout %q, want %q", stdout.String(), tc.want)
			}
			if tc.want == "" && strings.Count(stdout.String(), ".") != 2 {
				t.Errorf("stdout %q, want a JWT", stdout.String())
			}
			if strings.Contains(stdout.String()+fmt.Sprint(err), key) {
				t.Error("the API key was printed")
			}
		})
	}
}
