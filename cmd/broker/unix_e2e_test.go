package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// unixE2EConfig serves only a Unix socket (%[1]s) to caller billing, uid
// 1000; the socket's group 4242 may connect.
const unixE2EConfig = `listen: unix://%[1]s
unix_socket: {mode: "0660", group: "4242"}
admin: {listen: ""}
shutdown: {drain: 0s}
tenants:
  - name: unreachable
    token_url: http://127.0.0.1:1/token
    client_id: id
    client_secret_file: s
callers:
  - name: billing
    unix_uid: 1000
    tenants: [demo]
`

// TestUnixSocketEndToEnd runs `serve --dev` on a Unix socket only and
// calls it, as the README shows, from processes of two other users:
// `broker token --addr unix:///…` and grpcurl -unix as uid 1000 (caller
// billing) get the token; grpcurl as uid 1001 is refused
// PERMISSION_DENIED; the audit trail names both by their uid; SIGTERM
// removes the socket.
func TestUnixSocketEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the socket's clients run as uid 1000 and 1001, which only root may start")
	}
	tools, err := e2eTools()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "tokenbroker-unix-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the clients run the binaries from here
		t.Fatal(err)
	}
	for _, name := range []string{"broker", "grpcurl"} {
		copyExecutable(t, tools[name], filepath.Join(dir, name))
	}
	socket := filepath.Join(dir, "run", "broker.sock")
	writeFile(t, dir, "s", "FAKE-e2e-secret\n")
	cfgPath := writeFile(t, dir, "broker.yaml", fmt.Sprintf(unixE2EConfig, socket))
	srv := exec.Command(filepath.Join(dir, "broker"), "serve", "--dev", "--config", cfgPath, "--log-format", "json")
	srv.Env = append(os.Environ(), "KOGNIC_CREDENTIALS=", "KOGNIC_CLIENT_ID=", "KOGNIC_CLIENT_SECRET=")
	stdout := &logtest.Buffer{} // the audit trail
	srv.Stdout = stdout
	stderr, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		if srv.ProcessState == nil {
			_ = srv.Process.Kill()
		}
	})
	logs := &logtest.Buffer{}
	if got := listeningSocket(t, io.TeeReader(stderr, logs)); got != socket {
		t.Fatalf("listening on socket %q, want %s:\n%s", got, socket, logs)
	}
	go func() { exited <- srv.Wait() }()

	// runAs runs one of the copied binaries as uid, in the socket's group.
	runAs := func(uid uint32, name string, args ...string) (string, string, error) {
		cmd := exec.CommandContext(t.Context(), filepath.Join(dir, name), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: 4242}}
		cmd.Env = []string{"HOME=/nonexistent"}
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), err
	}
	getToken := readmeGRPCurlUnix(t, socket, "demo")

	tok, errOut, err := runAs(1000, "broker", "token", "--addr", "unix://"+socket, "--tenant", "demo")
	tok = strings.TrimSpace(tok)
	if err != nil || strings.Count(tok, ".") != 2 {
		t.Fatalf("broker token as uid 1000: %v\n%s", err, errOut)
	}
	out, errOut, err := runAs(1000, "grpcurl", getToken...)
	if err != nil || !strings.Contains(out, `"accessToken": "`+tok+`"`) {
		t.Errorf("grpcurl -unix as uid 1000: %v\n%s%s", err, out, errOut)
	}
	out, errOut, err = runAs(1001, "grpcurl", getToken...)
	if err == nil || !strings.Contains(errOut, "Code: PermissionDenied") || !strings.Contains(errOut, "uid 1001 (gid 4242) on the broker's Unix socket is not a caller") || strings.Contains(out, "accessToken") {
		t.Errorf("grpcurl -unix as uid 1001: %v\n%s%s", err, out, errOut)
	}

	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("broker exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("broker did not stop")
	}
	if _, err := os.Lstat(socket); !os.IsNotExist(err) {
		t.Errorf("socket after SIGTERM: %v, want it removed", err)
	}

	var issued, denied int
	for _, ln := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var r audit.Record
		if json.Unmarshal([]byte(ln), &r) != nil {
			continue
		}
		switch {
		case r.Event == audit.EventIssue && r.Caller == "billing" && r.Identity == "unix_uid=1000" && r.TokenFingerprint == audit.Fingerprint(tok):
			issued++
			t.Logf("audit: %s", ln)
		case r.Event == audit.EventDeny && r.Identity == "unix_uid=1001" && r.Peer == "uid=1001" && r.Code == "PermissionDenied":
			denied++
			t.Logf("audit: %s", ln)
		}
	}
	if issued != 2 || denied != 1 {
		t.Errorf("audit: %d issue lines of unix_uid=1000 (want 2), %d deny lines of unix_uid=1001 (want 1):\n%s", issued, denied, stdout)
	}
	if strings.Contains(stdout.String(), tok) {
		t.Error("the audit trail holds the token")
	}
}

// readmeGRPCurlUnix is the README's `grpcurl -plaintext -unix` line as
// arguments, for the socket at path and tenant.
func readmeGRPCurlUnix(t *testing.T, path, tenant string) []string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range strings.Split(string(readme), "\n") {
		if !strings.HasPrefix(ln, "grpcurl -plaintext -unix ") {
			continue
		}
		var args []string
		for _, f := range strings.Fields(ln)[1:] {
			f = strings.Trim(f, "'")
			f = strings.ReplaceAll(f, `"tenant":"acme"`, `"tenant":"`+tenant+`"`)
			args = append(args, strings.ReplaceAll(f, "/run/tokenbroker/broker.sock", path))
		}
		return args
	}
	t.Fatal("the README has no grpcurl -plaintext -unix line")
	return nil
}

// listeningSocket reads the broker's JSON log up to its "listening" line
// and returns the socket named there.
func listeningSocket(t *testing.T, logs io.Reader) string {
	t.Helper()
	sc := bufio.NewScanner(logs)
	for sc.Scan() {
		var line struct{ Msg, Socket string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
			go func() { _, _ = io.Copy(io.Discard, logs) }() // keep the pipe flowing
			return line.Socket
		}
	}
	return "" // the broker exited before listening
}

func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
