// Package pyclient runs Python's OAuth2 clients, which nobody here
// wrote, against a token endpoint: authlib's OAuth2Session set up as
// kognic-auth's RequestsAuthSession sets it up, authlib with Basic, and
// requests-oauthlib's BackendApplicationClient (Debian's python3-authlib
// and python3-requests-oauthlib). The script reports the SHA-256 of the
// token it got, never the token.
package pyclient

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
)

//go:embed client.py
var script string

// Clients are the clients Run knows, with the module each needs and the
// Debian package that has it.
var Clients = []struct{ Name, Module, Package string }{
	{"kognic-auth", "authlib", "python3-authlib"},
	{"authlib-basic", "authlib", "python3-authlib"},
	{"requests-oauthlib", "requests_oauthlib", "python3-requests-oauthlib"},
}

// Result is what a client got.
type Result struct {
	TokenSHA256 string  `json:"token_sha256"`
	TokenType   string  `json:"token_type"`
	ExpiresIn   float64 `json:"expires_in"`
	// WrongKey is the error code the client got with the wrong secret.
	WrongKey string `json:"wrong_key"`
	// Output is the script's stdout and stderr.
	Output string `json:"-"`
}

// Python returns a python3 that imports module: $TOKENBROKER_PYTHON,
// Debian's /usr/bin/python3 (where apt installs the modules), or the
// first python3 on PATH; "" if none does.
func Python(module string) string {
	cands := []string{os.Getenv("TOKENBROKER_PYTHON"), "/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		cands = append(cands, p)
	}
	for _, p := range cands {
		if p != "" && exec.Command(p, "-c", "import "+module).Run() == nil {
			return p
		}
	}
	return ""
}

// Run runs client against the endpoint at base (the URL before the
// token path, as KOGNIC_AUTH_SERVER takes it) with clientID, secret and
// a wrong secret. Without a python3 that has the client's module it
// skips t, unless TOKENBROKER_REQUIRE_PYTHON=1 (set in CI) makes that a
// failure.
func Run(t *testing.T, client, base, clientID, secret, wrong string) Result {
	t.Helper()
	var module, pkg string
	for _, c := range Clients {
		if c.Name == client {
			module, pkg = c.Module, c.Package
		}
	}
	py := Python(module)
	if py == "" {
		msg := "no python3 with " + module + " (Debian: apt-get install " + pkg + "; .ci/run installs it)"
		if os.Getenv("TOKENBROKER_REQUIRE_PYTHON") == "1" {
			t.Fatal(msg + ", and TOKENBROKER_REQUIRE_PYTHON=1")
		}
		t.Skip(msg)
	}
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(t.Context(), py, "-", client)
	cmd.Stdin = bytes.NewBufferString(script)
	cmd.Env = append(os.Environ(), "KOGNIC_AUTH_SERVER="+base, "TB_CLIENT_ID="+clientID, "TB_CLIENT_SECRET="+secret, "TB_WRONG_SECRET="+wrong)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", py, client, err, out.String(), errOut.String())
	}
	var r Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%s output %q: %v", client, out.String(), err)
	}
	r.Output = out.String() + errOut.String()
	return r
}
