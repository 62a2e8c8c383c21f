package config_test

import (
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/config"
)

func Example() {
	yaml := `
tenants:
  - name: acme
    credentials_file: acme.json   # resolved against the base directory
    scopes: [write:inputs, read:inputs]
`
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg, err := config.ParseWith([]byte(yaml), "broker.yaml", "testdata", config.Options{Now: now})
	if err != nil {
		fmt.Println(err)
		return
	}
	t := cfg.Tenants[0]
	fmt.Println(cfg.Listen)
	fmt.Println(t.Name, t.TokenURL, t.AuthStyle)
	fmt.Println(t.ClientID, t.ClientSecret, t.Scopes)

	_, err = config.ParseWith([]byte("tenants:\n  - name: acme\n    credentials_file: acme.json\n    scope: [x]\n"), "broker.yaml", "testdata", config.Options{Now: now})
	fmt.Println(err)
	// Output:
	// 127.0.0.1:50051
	// acme https://auth.app.kognic.com/v1/auth/oauth/token body
	// fake-acme-client [REDACTED] [read:inputs write:inputs]
	// config: broker.yaml:4: tenants[0]: unknown key "scope"; allowed keys: name, auth_server, token_url, credentials_file, credentials_files, client_id, client_secret_file, client_secret_files, client_assertion_key_file, client_assertion_key_files, key_id, assertion_audience, scopes, auth_style, allow_insecure_http, ca_file
}
