package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// kognicWorld is what the kognic-parity tests run the binary against, all
// on loopback: the dev IdP, an API that wants its tokens, a HOME with a
// credentials file and an environments file, and an environment with no
// Kognic variables of the test runner's.
type kognicWorld struct {
	idp    *devidp.Server
	client devidp.Client
	api    *httptest.Server
	home   string
	env    []string
	broker string

	mu       sync.Mutex
	apiHosts []string // the Host of every request the API got
	apiToken string   // the last token the API got
}

// seen returns the Host of every request the API got, and the last token.
func (w *kognicWorld) seen() (hosts []string, token string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.apiHosts), w.apiToken
}

// claims decodes a JWT's payload without verifying it.
func claims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT (%d parts)", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	var c map[string]any
	if err != nil || json.Unmarshal(raw, &c) != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	return c
}

const projects = `{"data": [{"id": 1, "name": "a", "tags": ["x"]}, {"id": 2, "name": "b|c", "extra": null}]}`

func newKognicWorld(t *testing.T) *kognicWorld {
	t.Helper()
	tools, err := e2eTools()
	if err != nil {
		t.Fatal(err)
	}
	w := &kognicWorld{client: devidp.NewClient(), home: t.TempDir(), broker: tools["broker"]}
	if w.idp, err = devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{w.client}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.idp.Close() })
	w.api = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		w.mu.Lock()
		w.apiHosts, w.apiToken = append(w.apiHosts, r.Host), tok
		w.mu.Unlock()
		if !ok || claims(t, tok)["sub"] != w.client.ID {
			http.Error(rw, `{"message":"who are you?"}`, http.StatusUnauthorized)
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/projects":
			io.WriteString(rw, projects)
		case "/v1/echo-token": // a server that puts the token in an error
			rw.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(rw, `{"message":"token %s may not do that"}`, tok)
		case "/v1/to-token": // a redirect to a path that spells the token
			http.Redirect(rw, r, "/s/"+tok, http.StatusFound)
		case "/v1/echo":
			body, _ := io.ReadAll(r.Body)
			fmt.Fprintf(rw, `{"method":%q,"type":%q,"body":%s}`, r.Method, r.Header.Get("Content-Type"), body)
		default:
			rw.WriteHeader(http.StatusNotFound)
			io.WriteString(rw, `{"message":"no such thing"}`)
		}
	}))
	t.Cleanup(w.api.Close)
	dir := filepath.Join(w.home, ".config", "kognic")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "credentials.json", fmt.Sprintf(`{"clientId":%q,"clientSecret":%q,"email":"a@example.com","userId":42,"issuer":"kognic","scopes":["file:scope"]}`,
		w.client.ID, w.client.Secret))
	writeFile(t, dir, "environments.json", fmt.Sprintf(`{"default_environment":"dev","environments":{
	  "dev":{"host":"127.0.0.1","auth_server":%q,"credentials":"~/.config/kognic/credentials.json","scopes":["env:scope"]}}}`, w.idp.URL()))
	// Only what the binary needs: no KOGNIC_* or TOKENBROKER_* of the runner's.
	w.env = []string{"HOME=" + w.home, "PATH=" + os.Getenv("PATH")}
	return w
}

func (w *kognicWorld) run(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), w.broker, args...)
	cmd.Env = append(append([]string(nil), w.env...), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// startBroker runs `broker serve` with one tenant "acme" on the test's IdP
// and returns its address.
func (w *kognicWorld) startBroker(t *testing.T) string {
	t.Helper()
	cfg := writeFile(t, t.TempDir(), "broker.yaml", fmt.Sprintf("admin:\n  listen: 127.0.0.1:0\ntenants:\n  - name: acme\n    token_url: %s\n    credentials_file: ~/.config/kognic/credentials.json\n", w.idp.TokenURL()))
	srv := exec.Command(w.broker, "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--log-format", "json")
	srv.Env = w.env
	logs, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	return listenAddr(t, logs)
}

func TestKognicToken(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	w := newKognicWorld(t)
	addr := w.startBroker(t)
	creds := "--credentials=~/.config/kognic/credentials.json" // "~" as the shell would leave it inside a flag
	for _, tc := range []struct {
		name      string
		env, args []string
		wantScope string
	}{
		{"direct, --credentials with ~, the file's scopes", nil, []string{"token", creds, "--server", w.idp.URL()}, "file:scope"},
		{"direct, --scopes wins", nil, []string{"token", creds, "--server", w.idp.URL(), "--scopes", "a b"}, "a b"},
		{"direct, --env: the environment's scopes and auth server", nil, []string{"token", "--env", "dev"}, "env:scope"},
		{"direct, KOGNIC_CREDENTIALS with ~", []string{"KOGNIC_CREDENTIALS=~/.config/kognic/credentials.json", "KOGNIC_AUTH_SERVER=" + w.idp.URL()}, []string{"token"}, "file:scope"},
		{"broker, --addr", nil, []string{"token", "--addr", addr, "--tenant", "acme"}, "file:scope"},
		{"broker, TOKENBROKER_ADDR", []string{"TOKENBROKER_ADDR=" + addr, "TOKENBROKER_TENANT=acme"}, []string{"token", "--scopes", "b"}, "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := w.run(t, tc.env, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			c := claims(t, out)
			if c["sub"] != w.client.ID || c["scope"] != tc.wantScope {
				t.Errorf("token for %v with scope %v, want %s with %q", c["sub"], c["scope"], w.client.ID, tc.wantScope)
			}
			out, errOut, code = w.run(t, tc.env, append(tc.args, "--decode")...)
			var decoded struct{ Header, Payload map[string]any }
			if code != 0 || json.Unmarshal([]byte(out), &decoded) != nil || decoded.Header["alg"] != "HS256" || decoded.Payload["sub"] != w.client.ID {
				t.Errorf("--decode: exit %d, output:\n%s%s", code, out, errOut)
			}
		})
	}
	t.Run("keyring credentials are refused by name", func(t *testing.T) {
		f := writeFile(t, t.TempDir(), "envs.json", `{"environments":{"k":{"host":"h","auth_server":"https://a","credentials":"keyring://k"}}}`)
		_, errOut, code := w.run(t, nil, "token", "--env", "k", "--env-config-file-path", f)
		if code != 1 || !strings.Contains(errOut, "environments.k.credentials: the keyring:// scheme is not supported") {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
}

func TestKognicCall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	w := newKognicWorld(t)
	addr := w.startBroker(t)
	url := w.api.URL + "/v1/projects"
	want := map[string]string{
		"json": `{
  "data": [
    {
      "id": 1,
      "name": "a",
      "tags": [
        "x"
      ]
    },
    {
      "id": 2,
      "name": "b|c",
      "extra": null
    }
  ]
}
`,
		"jsonl": `{"id":1,"name":"a","tags":["x"]}
{"id":2,"name":"b|c","extra":null}
`,
		"csv": `id,name,tags,extra
1,a,"[""x""]",
2,b|c,,
`,
		"tsv": "id\tname\ttags\textra\n1\ta\t\"[\"\"x\"\"]\"\t\n2\tb|c\t\t\n",
		"table": `| id | name | tags  | extra |
|----|------|-------|-------|
| 1  | a    | ["x"] |       |
| 2  | b\|c |       |       |
`,
	}
	modes := map[string][]string{
		"direct, environment by host": nil,
		"direct, --env":               {"--env", "dev"},
		"broker":                      {"--addr", addr, "--tenant", "acme"},
	}
	for mode, extra := range modes {
		for format, wantOut := range want {
			t.Run(mode+"/"+format, func(t *testing.T) {
				out, errOut, code := w.run(t, nil, append([]string{"call", "get", url, "--format", format}, extra...)...)
				if code != 0 || out != wantOut {
					t.Errorf("exit %d, stdout:\n%s\nwant:\n%s\nstderr: %s", code, out, wantOut, errOut)
				}
			})
		}
	}
	t.Run("POST with -d @file and -H", func(t *testing.T) {
		body := writeFile(t, t.TempDir(), "body.json", `{"name": "test"}`)
		out, errOut, code := w.run(t, nil, "call", "POST", w.api.URL+"/v1/echo", "-d", "@"+body, "-H", "X-Trace: 1")
		if code != 0 || !strings.Contains(out, `"method": "POST"`) || !strings.Contains(out, `"type": "application/json"`) || !strings.Contains(out, `"name": "test"`) {
			t.Errorf("exit %d:\n%s%s", code, out, errOut)
		}
	})
	t.Run("404 exits 1 with the status and body on stderr", func(t *testing.T) {
		out, errOut, code := w.run(t, nil, "call", "get", w.api.URL+"/v1/nothing?q=1")
		wantErr := "broker: call: GET " + w.api.URL + `/v1/nothing: 404 Not Found: {"message":"no such thing"}` + "\n"
		if code != 1 || out != "" || errOut != wantErr {
			t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant:\n%s", code, out, errOut, wantErr)
		}
	})
	t.Run("no environment and no credentials", func(t *testing.T) {
		_, errOut, code := w.run(t, []string{"HOME=" + t.TempDir()}, "call", "get", "https://app.kognic.com/v1/projects")
		if code != 1 || !strings.Contains(errOut, "no token source configured") {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
	t.Run("a host no environment names gets no token", func(t *testing.T) {
		// localhost is the API too, but the environments name 127.0.0.1
		// only: default_environment is no fallback, as it is in kog.
		other := strings.Replace(url, "127.0.0.1", "localhost", 1)
		before, _ := w.seen()
		out, errOut, code := w.run(t, nil, "call", "get", other)
		after, _ := w.seen()
		wantErr := `broker: call: GET ` + other + `: clientlib: no environment for host "localhost", so no token is sent there: the environments of ` +
			filepath.Join(w.home, ".config/kognic/environments.json") + ` are dev (127.0.0.1), and the KOGNIC_* variables serve only app.kognic.com; add the host to an environment, or name the environment to use (WithEnvironment; --env in broker call)` + "\n"
		if code != 1 || out != "" || errOut != wantErr || len(after) != len(before) {
			t.Errorf("exit %d, %d requests reached the API, stdout %q, stderr:\n%s\nwant:\n%s", code, len(after)-len(before), out, errOut, wantErr)
		}
		// Naming the environment is the explicit choice.
		if out, errOut, code := w.run(t, nil, "call", "get", other, "--env", "dev"); code != 0 || out != want["json"] {
			t.Errorf("--env dev: exit %d, stdout:\n%s\nstderr: %s", code, out, errOut)
		}
	})
	t.Run("an error body never shows the token", func(t *testing.T) {
		_, errOut, code := w.run(t, nil, "call", "get", w.api.URL+"/v1/echo-token")
		_, tok := w.seen()
		wantErr := "broker: call: GET " + w.api.URL + `/v1/echo-token: 403 Forbidden: {"message":"token [REDACTED] may not do that"}` + "\n"
		switch {
		case tok == "" || strings.Contains(errOut, tok):
			t.Errorf("exit %d: stderr shows the token the API got", code)
		case code != 1 || errOut != wantErr:
			t.Errorf("exit %d, stderr:\n%s\nwant:\n%s", code, errOut, wantErr)
		}
	})
	t.Run("an error about a URL that spells the token never shows it", func(t *testing.T) {
		_, errOut, code := w.run(t, nil, "call", "get", w.api.URL+"/v1/to-token")
		_, tok := w.seen()
		wantErr := "broker: call: GET " + w.api.URL + "/v1/to-token failed; the details are withheld: they echo the token\n"
		switch {
		case tok == "" || strings.Contains(errOut, tok[len(tok)-16:]):
			t.Errorf("exit %d: stderr shows the token the API got:\n%s", code, errOut)
		case code != 1 || errOut != wantErr:
			t.Errorf("exit %d, stderr:\n%s\nwant:\n%s", code, errOut, wantErr)
		}
	})
}
