package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// e2eTools builds the broker binary and the pinned grpcurl and
// grpc-health-probe (tools/e2e.mod) once per test binary.
var e2eTools = sync.OnceValues(func() (map[string]string, error) {
	dir, err := os.MkdirTemp("", "tokenbroker-e2e-")
	if err != nil {
		return nil, err
	}
	modfile, err := filepath.Abs("../../tools/e2e.mod")
	if err != nil {
		return nil, err
	}
	builds := [][]string{
		{"build", "-o", filepath.Join(dir, "broker"), "."},
		{"build", "-modfile", modfile, "-o", dir + "/", "github.com/fullstorydev/grpcurl/cmd/grpcurl", "github.com/grpc-ecosystem/grpc-health-probe"},
	}
	for _, args := range builds {
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			return nil, errors.New("go " + strings.Join(args, " ") + ": " + err.Error() + "\n" + string(out))
		}
	}
	return map[string]string{
		"broker":            filepath.Join(dir, "broker"),
		"grpcurl":           filepath.Join(dir, "grpcurl"),
		"grpc-health-probe": filepath.Join(dir, "grpc-health-probe"),
	}, nil
})

// e2eConfig is the config file beside --dev: %s is the extra tenants.
const e2eConfig = `listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
shutdown:
  drain: 0s
tenants:
  - name: unreachable
    token_url: http://127.0.0.1:1/token
    client_id: id
    client_secret_file: s
%s`

// TestEndToEndDev builds the binary, runs `serve --dev --config` and talks
// to it with grpcurl, grpc-health-probe and `broker token`, as the README
// does; then SIGHUP reloads the config file and SIGTERM drains. It is the
// one test of real signals; the daemon's own tests call Reload directly.
func TestEndToEndDev(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	tools, err := e2eTools()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "broker.yaml")
	writeFile(t, dir, "s", "FAKE-e2e-secret\n")
	writeFile(t, dir, "broker.yaml", fmt.Sprintf(e2eConfig, ""))
	srv := exec.Command(tools["broker"], "serve", "--dev", "--config", cfgPath, "--log-format", "json")
	srv.Env = append(os.Environ(), "KOGNIC_CREDENTIALS=", "KOGNIC_CLIENT_ID=", "KOGNIC_CLIENT_SECRET=")
	stderr, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		if srv.ProcessState == nil {
			_ = srv.Process.Kill()
		}
	})
	addr := listenAddr(t, io.TeeReader(stderr, logs))
	go func() { exited <- srv.Wait() }()

	run := func(name string, args ...string) (string, string, error) {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), tools[name], args...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), err
	}
	grpcurl := func(args ...string) (string, string, error) {
		return run("grpcurl", append([]string{"-plaintext"}, args...)...)
	}
	var issued []string

	t.Run("reflection lists the services", func(t *testing.T) {
		out, errOut, err := grpcurl(addr, "list")
		if err != nil {
			t.Fatalf("grpcurl list: %v\n%s", err, errOut)
		}
		for _, svc := range []string{"tokenbroker.v1.TokenBrokerService", "grpc.health.v1.Health"} {
			if !strings.Contains(out, svc) {
				t.Errorf("grpcurl list misses %s:\n%s", svc, out)
			}
		}
	})

	var tok struct {
		Token struct {
			AccessToken, TokenType, Tenant, Version, ExpireTime string
		}
	}
	t.Run("GetToken", func(t *testing.T) {
		out, errOut, err := grpcurl("-d", `{"tenant":"demo","minValid":"120s"}`, addr, "tokenbroker.v1.TokenBrokerService/GetToken")
		if err != nil {
			t.Fatalf("grpcurl GetToken: %v\n%s", err, errOut)
		}
		if err := json.Unmarshal([]byte(out), &tok); err != nil {
			t.Fatalf("GetToken output is not JSON: %v", err)
		}
		issued = append(issued, tok.Token.AccessToken)
		exp, err := time.Parse(time.RFC3339, tok.Token.ExpireTime)
		if tok.Token.Tenant != "demo" || tok.Token.TokenType != "Bearer" || strings.Count(tok.Token.AccessToken, ".") != 2 || err != nil || time.Until(exp) < 2*time.Minute {
			t.Errorf("token: tenant %q, type %q, JWT-shaped %v, expires %q (%v)", tok.Token.Tenant, tok.Token.TokenType,
				strings.Count(tok.Token.AccessToken, ".") == 2, tok.Token.ExpireTime, err)
		}
	})

	t.Run("GetToken of demo-jwt (private_key_jwt)", func(t *testing.T) { demoJWT(t, tools["broker"], addr) })

	t.Run("WatchToken pushes the replacement of an invalidated token", func(t *testing.T) {
		watch := exec.CommandContext(t.Context(), tools["grpcurl"], "-plaintext", "-d", `{"tenant":"demo"}`, addr, "tokenbroker.v1.TokenBrokerService/WatchToken")
		stdout, err := watch.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := watch.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = watch.Process.Kill(); _ = watch.Wait() }()
		dec := json.NewDecoder(stdout)
		var first, second struct {
			Token  struct{ AccessToken, Version string }
			Status struct{ State string }
		}
		if err := dec.Decode(&first); err != nil {
			t.Fatalf("first watch message: %v", err)
		}
		if first.Status.State != "TOKEN_STATE_READY" || first.Token.AccessToken != tok.Token.AccessToken {
			t.Fatalf("first message: state %s, same token as GetToken: %v", first.Status.State, first.Token.AccessToken == tok.Token.AccessToken)
		}
		_, errOut, err := grpcurl("-d", `{"tenant":"demo","tokenSha256":"`+broker.Fingerprint(first.Token.AccessToken)+`"}`, addr, "tokenbroker.v1.TokenBrokerService/InvalidateToken")
		if err != nil {
			t.Fatalf("InvalidateToken: %v\n%s", err, errOut)
		}
		if err := dec.Decode(&second); err != nil {
			t.Fatalf("second watch message: %v", err)
		}
		issued = append(issued, second.Token.AccessToken)
		// Versions increase over all tenants (demo-jwt's tokens count too).
		v1, _ := strconv.Atoi(first.Token.Version)
		if v2, err := strconv.Atoi(second.Token.Version); err != nil || v2 <= v1 || second.Token.AccessToken == first.Token.AccessToken {
			t.Errorf("pushed version %q after %q, want a higher one with a new token", second.Token.Version, first.Token.Version)
		}
	})

	t.Run("bad input gets INVALID_ARGUMENT", func(t *testing.T) {
		_, errOut, err := grpcurl("-d", `{"tenant":"Demo!"}`, addr, "tokenbroker.v1.TokenBrokerService/GetToken")
		if err == nil || !strings.Contains(errOut, "Code: InvalidArgument") || !strings.Contains(errOut, `tenant name "Demo!"`) {
			t.Errorf("grpcurl err %v, stderr:\n%s", err, errOut)
		}
	})

	t.Run("ListTenants", func(t *testing.T) {
		out, errOut, err := grpcurl(addr, "tokenbroker.v1.TokenBrokerService/ListTenants")
		if err != nil {
			t.Fatalf("%v\n%s", err, errOut)
		}
		if !strings.Contains(out, `"name": "demo"`) || !strings.Contains(out, "TOKEN_STATE_READY") {
			t.Errorf("ListTenants:\n%s", out)
		}
	})

	t.Run("grpc-health-probe", func(t *testing.T) {
		for _, tc := range []struct {
			service string
			ok      bool
		}{{"", true}, {"tenant/demo", true}, {"tenant/nobody", false}} {
			out, errOut, err := run("grpc-health-probe", "-addr", addr, "-service", tc.service)
			if (err == nil) != tc.ok {
				t.Errorf("service %q: err %v, want ok=%v\n%s%s", tc.service, err, tc.ok, out, errOut)
			}
			if tc.ok && !strings.Contains(out+errOut, "status: SERVING") {
				t.Errorf("service %q: %s%s", tc.service, out, errOut)
			}
		}
	})

	t.Run("broker token --decode", func(t *testing.T) {
		out, errOut, err := run("broker", "token", "--addr", addr, "--tenant", "demo", "--decode")
		if err != nil {
			t.Fatalf("%v\n%s", err, errOut)
		}
		if !strings.Contains(out, `"alg": "HS256"`) || !strings.Contains(out, `"sub": "dev-`) {
			t.Errorf("decoded token:\n%s", out)
		}
		plain, _, err := run("broker", "token", "--addr", addr, "--tenant", "demo")
		if err != nil || strings.TrimSpace(plain) != latest(issued) {
			t.Errorf("broker token printed a token other than the current one (err %v)", err)
		}
	})

	t.Run("broker call to the dev IdP's resource endpoint, as the README does", func(t *testing.T) {
		idp := regexp.MustCompile(`"msg":"devidp: started","url":"(http://[^"]+)"`).FindStringSubmatch(logs.String())
		if idp == nil {
			t.Fatalf("no devidp start line:\n%s", logs)
		}
		out, errOut, err := run("broker", "call", "get", idp[1]+"/v1/whoami", "--addr", addr, "--tenant", "demo")
		if err != nil || !strings.Contains(out, `"client_id": "dev-`) {
			t.Errorf("broker call: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
		}
	})

	t.Run("SIGHUP reloads the config file", func(t *testing.T) {
		writeFile(t, dir, "broker.yaml", fmt.Sprintf(e2eConfig, "  - name: added\n    token_url: http://127.0.0.1:1/token\n    client_id: id\n    client_secret_file: s\n"))
		if err := srv.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), `"msg":"config reloaded"`); {
			if time.Now().After(deadline) {
				t.Fatalf("no reload logged:\n%s", logs.String())
			}
			time.Sleep(20 * time.Millisecond) // another process: its log is the only signal
		}
		out, errOut, err := grpcurl(addr, "tokenbroker.v1.TokenBrokerService/ListTenants")
		if err != nil {
			t.Fatalf("%v\n%s", err, errOut)
		}
		for _, name := range []string{"added", "unreachable", "demo"} {
			if !strings.Contains(out, `"name": "`+name+`"`) {
				t.Errorf("after SIGHUP ListTenants misses %s:\n%s", name, out)
			}
		}
	})

	t.Run("SIGTERM stops the broker cleanly", func(t *testing.T) {
		if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("broker exited with %v, want status 0", err)
			}
		case <-time.After(config.DefaultShutdownTimeout + 5*time.Second):
			t.Fatal("broker did not stop within its shutdown bound")
		}
		out := logs.String()
		if !strings.Contains(out, `"msg":"stopped"`) {
			t.Errorf("no clean stop in the logs:\n%s", out)
		}
		if !strings.Contains(out, "DEVELOPMENT MODE") {
			t.Error("--dev did not announce itself loudly")
		}
		for _, tok := range issued {
			if tok != "" && strings.Contains(out, tok) {
				t.Error("the broker's logs contain an issued access token")
			}
		}
	})
}

// demoJWT gets a token of --dev's private_key_jwt tenant.
func demoJWT(t *testing.T, brokerBin, addr string) {
	out, err := exec.CommandContext(t.Context(), brokerBin, "token", "--addr", addr, "--tenant", "demo-jwt", "--decode").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"sub": "dev-`) || !strings.Contains(string(out), `-jwt"`) {
		t.Errorf("broker token --tenant demo-jwt --decode: %v\n%s", err, out)
	}
}

// latest returns the last token issued, which the broker serves now.
func latest(issued []string) string {
	if len(issued) == 0 {
		return ""
	}
	return issued[len(issued)-1]
}
