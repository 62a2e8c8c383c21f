package kognic_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/kognic"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestFromEnv(t *testing.T) {
	const id, secret = "KOGNIC_CLIENT_ID", "KOGNIC_CLIENT_SECRET"
	for _, tc := range []struct {
		name      string
		lookup    func(string) (string, bool)
		tokenURL  string
		wantErr   string
		wantIs    error
		wantError bool // an *kognic.Error
	}{
		{name: "defaults", lookup: env(id, "c", secret, "FAKE-s"), tokenURL: "https://auth.app.kognic.com/v1/auth/oauth/token"},
		{name: "auth server with slash", lookup: env(id, "c", secret, "FAKE-s", "KOGNIC_AUTH_SERVER", "https://auth.example/"), tokenURL: "https://auth.example/v1/auth/oauth/token"},
		{name: "loopback http", lookup: env(id, "c", secret, "FAKE-s", "KOGNIC_AUTH_SERVER", "http://127.0.0.1:9"), tokenURL: "http://127.0.0.1:9/v1/auth/oauth/token"},
		{name: "nothing", lookup: env(), wantIs: creds.ErrNoCredentials, wantErr: "credentials: none found"},
		{name: "plain http", lookup: env(id, "c", secret, "FAKE-s", "KOGNIC_AUTH_SERVER", "http://auth.example"), wantIs: upstream.ErrInsecureURL, wantError: true,
			wantErr: "kognic: KOGNIC_AUTH_SERVER: insecure upstream URL http://auth.example: http sends the client secret in clear text"},
		{name: "query", lookup: env(id, "c", secret, "FAKE-s", "KOGNIC_AUTH_SERVER", "https://auth.example?x=1"), wantError: true,
			wantErr: `kognic: KOGNIC_AUTH_SERVER: "https://auth.example" must not have a query or fragment; use e.g. https://auth.app.kognic.com`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := kognic.FromEnv(tc.lookup, kognic.Options{Now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)})
			if tc.wantErr == "" {
				if err != nil || c.TokenURL != tc.tokenURL || c.Credentials.ID != "c" || c.Credentials.Secret.Reveal() != "FAKE-s" {
					t.Fatalf("FromEnv = %+v, %v; want token URL %s", c, err, tc.tokenURL)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want prefix %q", err, tc.wantErr)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("errors.Is(err, %v) = false", tc.wantIs)
			}
			if _, ok := errors.AsType[*kognic.Error](err); ok != tc.wantError {
				t.Errorf("error is %T", err)
			}
		})
	}
}

func ExampleFromEnv() {
	lookup := env("KOGNIC_CLIENT_ID", "my-client", "KOGNIC_CLIENT_SECRET", "not-a-real-secret")
	c, err := kognic.FromEnv(lookup, kognic.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.TokenURL)
	fmt.Println(c.Credentials)
	// Output:
	// https://auth.app.kognic.com/v1/auth/oauth/token
	// client my-client from KOGNIC_CLIENT_ID/KOGNIC_CLIENT_SECRET
}
