//go:build unix

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// fifoConfig: shutdown takes at most fifoShutdown; %s is the secret file,
// %s the callers section.
const fifoConfig = `listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
shutdown:
  drain: 0s
  timeout: 1s
tenants:
  - name: unreachable
    token_url: http://127.0.0.1:1/token
    client_id: id
    client_secret_file: %s
%s`

// fifoShutdown is shutdown.timeout in fifoConfig.
const fifoShutdown = time.Second

const fifoCallers = "callers:\n  - name: ci\n    api_key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n    tenants: [\"*\"]\n"

// startBinary runs `broker serve --config path` with JSON logs into logs;
// exited receives its exit.
func startBinary(t *testing.T, path string, logs io.Writer) (*exec.Cmd, <-chan error) {
	t.Helper()
	tools, err := e2eTools()
	if err != nil {
		t.Fatal(err)
	}
	srv := exec.Command(tools["broker"], "serve", "--config", path, "--log-format", "json")
	srv.Env = append(os.Environ(), "KOGNIC_CREDENTIALS=", "KOGNIC_CLIENT_ID=", "KOGNIC_CLIENT_SECRET=")
	srv.Stderr = logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() {
		if srv.ProcessState == nil {
			_ = srv.Process.Kill()
			<-exited
		}
	})
	return srv, exited
}

// waitLog polls the broker's log for a line matching re.
func waitLog(t *testing.T, logs *logtest.Buffer, what string, re *regexp.Regexp) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if m := re.FindString(logs.String()); m != "" {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log of %s:\n%s", what, logs.String())
		}
		time.Sleep(20 * time.Millisecond) // another process: its log is the only signal
	}
}

// TestServeFIFOAtStart runs the binary with a FIFO as a tenant's
// client_secret_file: it exits at once with an error naming the path and
// its type (before: it hung in open(2) and ignored SIGTERM).
func TestServeFIFOAtStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.secret")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, dir, "broker.yaml", fmt.Sprintf(fifoConfig, "fifo.secret", ""))
	logs := &logtest.Buffer{}
	srv, exited := startBinary(t, cfg, logs)
	var err error
	select {
	case err = <-exited:
	case <-time.After(3 * time.Second):
		start := time.Now()
		_ = srv.Process.Signal(syscall.SIGTERM)
		select {
		case err = <-exited:
			t.Errorf("did not exit on its own; exited %s after SIGTERM", time.Since(start))
		case <-time.After(fifoShutdown + time.Second):
			t.Fatalf("still running %s after SIGTERM:\n%s", fifoShutdown+time.Second, logs.String())
		}
	}
	if code := srv.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit %v (code %d), want 1", err, code)
	}
	if want := fifo + ": cannot open file: is a named pipe (FIFO), not a regular file"; !strings.Contains(logs.String(), want) {
		t.Errorf("stderr does not say %q:\n%s", want, logs.String())
	}
}

// TestServeFIFOAtRuntime replaces the secret file of a running binary by
// a FIFO: the watcher reports it and goes on, a SIGHUP that removes every
// caller is refused and counted, and SIGTERM ends the process within
// shutdown.timeout plus a second (before: the watcher blocked, "stopped"
// was logged but the process never exited).
func TestServeFIFOAtRuntime(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	dir := t.TempDir()
	secret := writeFile(t, dir, "s", "FAKE-fifo-e2e-secret\n")
	cfg := writeFile(t, dir, "broker.yaml", fmt.Sprintf(fifoConfig, "s", fifoCallers))
	logs := &logtest.Buffer{}
	srv, exited := startBinary(t, cfg, logs)
	line := waitLog(t, logs, "listening", regexp.MustCompile(`\{[^\n]*"msg":"listening"[^\n]*\}`))
	var l struct{ Admin string }
	if err := json.Unmarshal([]byte(line), &l); err != nil || l.Admin == "" {
		t.Fatalf("listening line %s: %v", line, err)
	}
	waitLog(t, logs, "the watcher", regexp.MustCompile(`"msg":"watching configuration files"`))

	if err := os.Remove(secret); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(secret, 0o600); err != nil {
		t.Fatal(err)
	}
	waitLog(t, logs, "the FIFO", regexp.MustCompile(regexp.QuoteMeta(secret+": cannot open file: is a named pipe (FIFO), not a regular file")))

	// SIGHUP of a file without callers: refused, counted, the
	// process still responsive.
	writeFile(t, dir, "broker.yaml", fmt.Sprintf(fifoConfig, "s", ""))
	if err := srv.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, logs, "the refusal", regexp.MustCompile(`"level":"ERROR","msg":"config reload refused; keeping the running configuration","error":"daemon: reload refused: the change would lower the broker's security: it removes every caller`))
	resp, err := http.Get("http://" + l.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	rejected := ""
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), `tokenbroker_config_reloads_total{result="rejected"} `); ok {
			rejected = v
		}
	}
	if rejected == "" || rejected == "0" {
		t.Errorf("tokenbroker_config_reloads_total{result=\"rejected\"} = %q after the SIGHUP", rejected)
	}

	start := time.Now()
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit: %v, want status 0", err)
		}
		t.Logf("exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(fifoShutdown + time.Second):
		t.Fatalf("still running %s after SIGTERM:\n%s", fifoShutdown+time.Second, logs.String())
	}
	if strings.Contains(logs.String(), "FAKE-fifo-e2e-secret") {
		t.Error("the secret appears in the logs")
	}
}

// TestClientEndsOnSIGTERMWhileBlocked: `broker call -d @FIFO` waits for the
// FIFO's writer as curl does, but SIGTERM ends it within clientGrace (red
// team, issue 16: E; before, it ignored SIGTERM).
func TestClientEndsOnSIGTERMWhileBlocked(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	tools, err := e2eTools()
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(t.TempDir(), "body")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tools["broker"], "call", "post", "http://127.0.0.1:1/x", "-d", "@"+fifo)
	cmd.Env = append(os.Environ(), "KOGNIC_CLIENT_ID=id", "KOGNIC_CLIENT_SECRET=secret", "KOGNIC_CREDENTIALS=")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		t.Fatalf("exited before the FIFO had a writer: %v\n%s", err, stderr.String())
	case <-time.After(500 * time.Millisecond): // it is blocked in open(2); nothing to wait on
	}
	start := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if took := time.Since(start); took > clientGrace+time.Second {
			t.Errorf("exited %s after SIGTERM, want within %s", took, clientGrace+time.Second)
		}
	case <-time.After(clientGrace + 3*time.Second):
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("still running %s after SIGTERM", clientGrace+3*time.Second)
	}
}
