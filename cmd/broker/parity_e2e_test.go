package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The second pass of kognic-auth parity (issue 20), against the real
// binary: each test here failed on the code before it.

// credsFlag is the world's credentials file, as a flag with "~".
const credsFlag = "--credentials=~/.config/kognic/credentials.json"

// closedURL is the URL of a loopback port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

// TestParityXDGConfigHome: XDG_CONFIG_HOME moves the environments file, as
// in kognic-auth; empty, it is ignored (the XDG spec), not "./kognic/…".
func TestParityXDGConfigHome(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	w := newKognicWorld(t)
	xdg := t.TempDir()
	if err := os.MkdirAll(filepath.Join(xdg, "kognic"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(xdg, "kognic"), "environments.json", fmt.Sprintf(`{"environments":{
	  "xdg":{"host":"127.0.0.1","auth_server":%q,"credentials":"~/.config/kognic/credentials.json","scopes":["xdg:scope"]}}}`, w.idp.URL()))

	out, errOut, code := w.run(t, []string{"XDG_CONFIG_HOME=" + xdg}, "token", "--env", "xdg")
	if code != 0 || claims(t, out)["scope"] != "xdg:scope" {
		t.Fatalf("token --env xdg with XDG_CONFIG_HOME: exit %d: %s", code, errOut)
	}
	// broker call picks the environment by host from the same file.
	if out, errOut, code := w.run(t, []string{"XDG_CONFIG_HOME=" + xdg}, "call", "get", w.api.URL+"/v1/projects", "--format", "jsonl"); code != 0 || !strings.Contains(out, `"id":1`) {
		t.Errorf("call with XDG_CONFIG_HOME: exit %d: %s%s", code, out, errOut)
	}
	for _, v := range []string{"XDG_CONFIG_HOME=", "XDG_CONFIG_HOME=relative"} {
		_, errOut, code := w.run(t, []string{v}, "token", "--env", "xdg")
		want := `environment "xdg" is not in ` + filepath.Join(w.home, ".config/kognic/environments.json") + "; known environments: dev"
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("%s: exit %d, stderr %s; want ~/.config's file", v, code, errOut)
		}
	}
}

// TestParity429: broker call repeats an idempotent request answered 429
// with Retry-After, and only that.
func TestParity429(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	w := newKognicWorld(t)
	var mu sync.Mutex
	seen := map[string]int{}
	api := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Method]++
		n := seen[r.Method]
		mu.Unlock()
		if n == 1 || r.URL.Path == "/always" {
			rw.Header().Set("Retry-After", "1")
			http.Error(rw, `{"message":"slow down"}`, http.StatusTooManyRequests)
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		io.WriteString(rw, `{"ok":true}`)
	}))
	defer api.Close()
	count := func(m string) int { mu.Lock(); defer mu.Unlock(); return seen[m] }

	start := time.Now()
	out, errOut, code := w.run(t, nil, "call", "get", api.URL+"/x", "--env", "dev")
	if code != 0 || !strings.Contains(out, `"ok": true`) || count("GET") != 2 {
		t.Errorf("GET: exit %d after %d requests: %s%s; want the retry's answer", code, count("GET"), out, errOut)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Errorf("GET answered after %s: the retry did not wait for Retry-After: 1", waited)
	}
	_, errOut, code = w.run(t, nil, "call", "post", api.URL+"/x", "--env", "dev", "-d", "{}")
	if code != 1 || count("POST") != 1 || !strings.Contains(errOut, "429 Too Many Requests") {
		t.Errorf("POST: exit %d after %d requests: %s; want the 429, not repeated", code, count("POST"), errOut)
	}
}

// TestParityUnreachableAuthServer: a refused connection to the auth server
// fails at once (it took 30 s and 60 s), naming the auth server.
func TestParityUnreachableAuthServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	w := newKognicWorld(t)
	down := closedURL(t)
	envs := writeFile(t, t.TempDir(), "envs.json", fmt.Sprintf(`{"environments":{
	  "down":{"host":"127.0.0.1","auth_server":%q,"credentials":"~/.config/kognic/credentials.json"}}}`, down))
	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"token", "broker: token: clientlib: no token from the auth server (its URL from WithAuthServer, the credentials from WithCredentialsFile): upstream: token request to " +
			down + "/v1/auth/oauth/token failed: connection refused", []string{"token", credsFlag, "--server", down}},
		{"call", "broker: call: GET " + w.api.URL + "/v1/projects: clientlib: no token from the auth server (its URL and the credentials from environment \"down\" of " +
			envs + "): upstream: token request to " + down + "/v1/auth/oauth/token failed: connection refused",
			[]string{"call", "get", w.api.URL + "/v1/projects", "--env-config-file-path", envs}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			out, errOut, code := w.run(t, nil, tc.args...)
			took := time.Since(start)
			if code != 1 || out != "" || !strings.Contains(errOut, tc.want) || strings.Contains(errOut, w.client.Secret) {
				t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant:\n%s…", code, out, errOut, tc.want)
			}
			if took > 5*time.Second {
				t.Errorf("failed after %s, want at once", took)
			}
			if n := strings.Count(errOut, "\n"); n > 2 {
				t.Errorf("%d lines on stderr, want the error (and one warning at most):\n%s", n, errOut)
			}
		})
	}
}

// TestParityEnvWithCredentials: --env N --credentials F combine when N
// names no credentials, and are refused, naming both, when it does.
func TestParityEnvWithCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	w := newKognicWorld(t)
	envs := writeFile(t, t.TempDir(), "envs.json", fmt.Sprintf(`{"environments":{
	  "bare":{"host":"127.0.0.1","auth_server":%q,"scopes":["bare:scope"]},
	  "named":{"host":"localhost","auth_server":%q,"credentials":"~/.config/kognic/credentials.json"}}}`, w.idp.URL(), w.idp.URL()))
	out, errOut, code := w.run(t, nil, "token", "--env", "bare", "--env-config-file-path", envs, credsFlag)
	if code != 0 {
		t.Fatalf("token --env bare --credentials: exit %d: %s", code, errOut)
	}
	if c := claims(t, out); c["sub"] != w.client.ID || c["scope"] != "bare:scope" {
		t.Errorf("token for %v with scope %v, want the file's client with the environment's scope", c["sub"], c["scope"])
	}
	if out, errOut, code := w.run(t, nil, "call", "get", w.api.URL+"/v1/projects", "--env", "bare", "--env-config-file-path", envs, credsFlag, "--format", "jsonl"); code != 0 || !strings.Contains(out, `"id":1`) {
		t.Errorf("call --env bare --credentials: exit %d: %s%s", code, out, errOut)
	}
	_, errOut, code = w.run(t, nil, "token", "--env", "named", "--env-config-file-path", envs, credsFlag)
	want := "broker: token: clientlib: WithCredentialsFile (~/.config/kognic/credentials.json) and environment \"named\" of " + envs + " (credentials " +
		filepath.Join(w.home, ".config/kognic/credentials.json") + ") both name credentials; drop one of them (--credentials or --env in broker token and broker call), or remove the environment's credentials key\n"
	if code != 1 || errOut != want {
		t.Errorf("both name credentials: exit %d, stderr:\n%s\nwant:\n%s", code, errOut, want)
	}
}

// TestParityScopeSpellings: kognic-auth's --scopes a b, kog's --scope, and
// --scopes a,b.
func TestParityScopeSpellings(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	w := newKognicWorld(t)
	for _, args := range [][]string{
		{"--scopes", "a", "b"},
		{"--scopes", "a", "b", "--decode=false"},
		{"--scope", "a", "--scope", "b"},
		{"--scopes", "a,b"},
		{"--scopes", "a b"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, errOut, code := w.run(t, nil, append([]string{"token", credsFlag, "--server", w.idp.URL()}, args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if c := claims(t, out); c["scope"] != "a b" {
				t.Errorf("scope %v, want \"a b\"", c["scope"])
			}
		})
	}
}

// TestParityTokenIgnoresDefaultEnvironment: like kognic-auth
// get-access-token, broker token without --env does not read the
// environments file, default_environment included.
func TestParityTokenIgnoresDefaultEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	w := newKognicWorld(t) // its default_environment is "dev"
	_, errOut, code := w.run(t, nil, "token")
	if code != 1 || !strings.Contains(errOut, "no token source configured") {
		t.Errorf("exit %d: %s; want no token: KOGNIC_* unset and no --env", code, errOut)
	}
}
