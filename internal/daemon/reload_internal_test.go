package daemon

import (
	"errors"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/config"
)

// TestLowers is the one rule of what a reload may not do, over every
// posture change: losing callers, tls, the client CA or
// require_client_cert, gaining insecure_plaintext or a wider socket is
// refused, each reason named; raising the posture or keeping it is not.
func TestLowers(t *testing.T) {
	mtls := &config.TLS{CertFile: "c", KeyFile: "k", ClientCAFile: "ca", RequireClientCert: true}
	full := &config.Config{Callers: []config.Caller{{Name: "a"}}, TLS: mtls}
	scoped := &config.Config{Callers: []config.Caller{{Name: "a", Scopes: []string{"read:*"}}}, TLS: mtls}
	with := func(f func(*config.Config)) *config.Config {
		c := *full
		tls := *mtls
		c.TLS = &tls
		f(&c)
		return &c
	}
	for _, tc := range []struct {
		name          string
		running, next *config.Config
		why           []string // nil: allowed
	}{
		{"unchanged", full, full, nil},
		{"callers removed", full, with(func(c *config.Config) { c.Callers = nil }), []string{"it removes every caller"}},
		{"tls removed", full, with(func(c *config.Config) { c.TLS = nil }), []string{"it removes tls (a plaintext listener)"}},
		{"client CA removed", full, with(func(c *config.Config) { c.TLS.ClientCAFile, c.TLS.RequireClientCert = "", false }), []string{"it removes tls.client_ca_file"}},
		{"client cert no longer required", full, with(func(c *config.Config) { c.TLS.RequireClientCert = false }), []string{"it turns tls.require_client_cert off"}},
		{"insecure_plaintext set", full, with(func(c *config.Config) { c.InsecurePlaintext = true }), []string{"it sets insecure_plaintext"}},
		{"all at once", full, &config.Config{InsecurePlaintext: true}, []string{"it removes every caller", "it removes tls", "it sets insecure_plaintext"}},
		{"open mode stays open", &config.Config{}, &config.Config{}, nil},
		{"callers and tls added", &config.Config{}, full, nil},
		{"insecure_plaintext cleared", &config.Config{InsecurePlaintext: true}, &config.Config{}, nil},
		{"other certificate files", full, with(func(c *config.Config) { c.TLS.CertFile, c.TLS.ClientCAFile = "c2", "ca2" }), nil},
		// A file cut short before a caller's scopes (red team, issue 16: A).
		{"scopes allow-list removed", scoped, with(func(c *config.Config) { c.Callers = []config.Caller{{Name: "a"}} }), []string{`it removes caller "a"'s scopes allow-list`}},
		{"scopes allow-list changed", scoped, with(func(c *config.Config) { c.Callers = []config.Caller{{Name: "a", Scopes: []string{"write:*"}}} }), nil},
		{"scoped caller removed", scoped, with(func(c *config.Config) { c.Callers = []config.Caller{{Name: "b"}} }), nil},
		{"scopes allow-list added", full, scoped, nil},
		// Restart-only, but a reload must not carry a wider socket along.
		{"socket mode widened", full, with(func(c *config.Config) { c.Socket.Mode = 0o666 }), []string{"it widens unix_socket.mode from 0660 to 0666"}},
		{"socket mode narrowed", full, with(func(c *config.Config) { c.Socket.Mode = 0o600 }), nil},
		{"socket group changed", full, with(func(c *config.Config) { c.Socket.Group = "staff" }), []string{`it changes unix_socket.group from "" to "staff"`}},
		{"socket added", full, with(func(c *config.Config) { c.Socket.Path = "/run/tb.sock" }), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := lowers(postureOf(tc.running), postureOf(tc.next))
			if tc.why == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrLowersSecurity) {
				t.Fatalf("err %v, want ErrLowersSecurity", err)
			}
			for _, w := range tc.why {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v\ndoes not say %q", err, w)
				}
			}
		})
	}
}
