package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func envFunc(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestServeBadInput runs the real command on bad input and checks the exact
// error a user sees.
func TestServeBadInput(t *testing.T) {
	dir := t.TempDir()
	goodCreds := `{"clientId":"id","clientSecret":"cli-secret-xyz","email":"a@b.c","userId":1,"issuer":"kognic"}`
	writeFile(t, dir, "good.json", goodCreds)
	writeFile(t, dir, "nosecret.json", `{"clientId":"id","email":"a@b.c","userId":1,"issuer":"kognic"}`)
	writeFile(t, dir, "expired.json", `{"clientId":"id","clientSecret":"cli-secret-xyz","email":"a@b.c","userId":1,"issuer":"kognic","expires":"2020-01-01T00:00:00Z"}`)
	writeFile(t, dir, "garbage.json", `clientSecret=cli-secret-xyz`)
	cfg := func(name, body string) string { return writeFile(t, dir, name, body) }

	for _, tc := range []struct {
		name string
		args []string
		env  func(string) string
		want string
	}{
		{"nothing configured", []string{"serve"}, envFunc(),
			"config: no --config given and no credentials in the environment: set KOGNIC_CREDENTIALS to a credentials file, or KOGNIC_CLIENT_ID and KOGNIC_CLIENT_SECRET, or pass --config broker.yaml, or run with --dev for a local demo identity provider"},
		{"client id without secret", []string{"serve"}, envFunc("KOGNIC_CLIENT_ID", "abc"),
			"credentials: KOGNIC_CLIENT_ID is set but KOGNIC_CLIENT_SECRET is not; set both, or set KOGNIC_CREDENTIALS to a credentials file"},
		{"credentials file without clientSecret", []string{"serve"}, envFunc("KOGNIC_CREDENTIALS", filepath.Join(dir, "nosecret.json")),
			`credentials: KOGNIC_CREDENTIALS=` + filepath.Join(dir, "nosecret.json") + `: missing required key "clientSecret"; regenerate the file in the Kognic app or add the key`},
		{"expired credentials", []string{"serve"}, envFunc("KOGNIC_CREDENTIALS", filepath.Join(dir, "expired.json")),
			`credentials: KOGNIC_CREDENTIALS=` + filepath.Join(dir, "expired.json") + `: credentials expired at 2020-01-01T00:00:00Z (key "expires"); generate new credentials in the Kognic app`},
		{"credentials not JSON", []string{"serve"}, envFunc("KOGNIC_CREDENTIALS", filepath.Join(dir, "garbage.json")),
			`credentials: KOGNIC_CREDENTIALS=` + filepath.Join(dir, "garbage.json") + `: not a JSON object: invalid JSON syntax at byte offset 1; use the JSON file from "Generate Credentials" in the Kognic app`},
		{"unknown config key", []string{"serve", "--config", cfg("unknown.yaml", "listen: 127.0.0.1:0\ntenants:\n  - name: acme\n    credentials_file: good.json\n    scope: [a]\n")}, envFunc(),
			`config: ` + filepath.Join(dir, "unknown.yaml") + `:5: tenants[0]: unknown key "scope"; allowed keys: name, auth_server, token_url, credentials_file, credentials_files, client_id, client_secret_file, client_secret_files, client_assertion_key_file, client_assertion_key_files, key_id, assertion_audience, scopes, auth_style, allow_insecure_http, ca_file`},
		{"bad tenant name in config", []string{"serve", "--config", cfg("badname.yaml", "tenants:\n  - name: Acme\n    credentials_file: good.json\n")}, envFunc(),
			`config: ` + filepath.Join(dir, "badname.yaml") + `:2: tenants[0].name: tenant name "Acme": must match [a-z0-9][a-z0-9-]{0,62} (lower-case letters, digits, hyphens)`},
		{"missing config file", []string{"serve", "--config", filepath.Join(dir, "nope.yaml")}, envFunc(),
			`config: cannot read config file: open ` + filepath.Join(dir, "nope.yaml") + `: no such file or directory`},
		{"dev on a public address", []string{"serve", "--dev", "--listen", "0.0.0.0:0"}, envFunc(),
			`daemon: --dev serves tokens to anyone who connects, so it listens on loopback only; "0.0.0.0:0" is not a loopback address (try --listen 127.0.0.1:50051)`},
		{"two --listen addresses", []string{"serve", "--dev", "--listen", "127.0.0.1:0", "--listen", "127.0.0.1:1"}, envFunc(),
			`daemon: --listen: two addresses, 127.0.0.1:0 and 127.0.0.1:1; the broker listens on one host:port and one socket at most`},
		{"relative socket", []string{"serve", "--dev", "--listen", "unix:broker.sock"}, envFunc(),
			`daemon: --listen: "unix:broker.sock": write a Unix socket as unix:// and an absolute path, e.g. unix:///run/tokenbroker/broker.sock`},
		{"bad log level", []string{"serve", "--dev", "--log-level", "loud"}, envFunc(),
			`--log-level "loud": want debug, info, warn or error`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			err := run(t.Context(), tc.args, tc.env, io.Discard, &stderr)
			if err == nil {
				t.Fatal("serve succeeded, want an error")
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n got: %s\nwant: %s", err, tc.want)
			}
			if strings.Contains(err.Error()+stderr.String(), "cli-secret-xyz") {
				t.Error("the client secret appears in the output")
			}
		})
	}
}

// listenAddr reads the broker's JSON log until it reports its address.
func listenAddr(t *testing.T, logs io.Reader) string {
	t.Helper()
	sc := bufio.NewScanner(logs)
	for sc.Scan() {
		var line struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
			go func() { _, _ = io.Copy(io.Discard, logs) }() // keep the pipe flowing
			return line.Addr
		}
	}
	t.Fatalf("broker exited before listening: %v", sc.Err())
	return ""
}
