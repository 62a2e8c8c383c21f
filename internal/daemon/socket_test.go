package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker/config"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// socketClientEnv makes the test binary a client of the broker's socket
// (socketClient) instead of running tests: the tests start it as other
// users, since the kernel names a socket's peer by its process's uid.
const socketClientEnv = "TOKENBROKER_TEST_SOCKET_CLIENT"

// clientEvent is a line socketClient prints: a token's fingerprint, or
// the status a call ended with.
type clientEvent struct {
	Fingerprint string `json:"fingerprint,omitempty"`
	Code        string `json:"code,omitempty"`
	Message     string `json:"message,omitempty"`
}

// socketClient calls GetToken (or, with "watch" in $TOKENBROKER_TEST_CALL,
// WatchToken until it ends) of tenant acme at the address in
// $TOKENBROKER_TEST_SOCKET_CLIENT and prints what it got, a line each.
func socketClient() int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	enc := json.NewEncoder(os.Stdout)
	ended := func(err error) int {
		st := status.Convert(err)
		_ = enc.Encode(clientEvent{Code: st.Code().String(), Message: st.Message()})
		return 0
	}
	cc, err := grpc.NewClient(os.Getenv(socketClientEnv), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return ended(err)
	}
	defer cc.Close()
	api := tbv1.NewTokenBrokerServiceClient(cc)
	if os.Getenv("TOKENBROKER_TEST_CALL") != "watch" {
		resp, err := api.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: "acme"})
		if err != nil {
			return ended(err)
		}
		_ = enc.Encode(clientEvent{Fingerprint: audit.Fingerprint(resp.GetToken().GetAccessToken())})
		return 0
	}
	w, err := api.WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: "acme"})
	if err != nil {
		return ended(err)
	}
	for {
		m, err := w.Recv()
		if err != nil {
			return ended(err)
		}
		_ = enc.Encode(clientEvent{Fingerprint: audit.Fingerprint(m.GetToken().GetAccessToken())})
	}
}

// asUser is a client of the socket: the test binary, copied to where
// other users may run it, started as uid with primary group gid and
// supplementary groups.
type asUser struct {
	uid, gid uint32
	groups   []uint32
}

// startClient starts bin as u against the socket, calling call ("get"
// or "watch"); its printed lines arrive on the returned decoder.
func startClient(t *testing.T, bin, socket string, u asUser, call string) (*exec.Cmd, *json.Decoder) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin)
	cmd.Env = []string{socketClientEnv + "=unix://" + socket, "TOKENBROKER_TEST_CALL=" + call}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}}
	cmd.Stderr = os.Stderr

	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, json.NewDecoder(out)
}

func next(t *testing.T, who string, dec *json.Decoder) clientEvent {
	t.Helper()
	var ev clientEvent
	if err := dec.Decode(&ev); err != nil {
		t.Fatalf("%s: no answer: %v", who, err)
	}
	return ev
}

// socketServerEnv makes the test binary serve the socket at its value
// (socketServer): another process whose socket the broker must not take.
const socketServerEnv = "TOKENBROKER_TEST_SOCKET_SERVER"

// socketServer listens at path, says "ready" and accepts until killed.
func socketServer(path string) int {
	l, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	for {
		c, err := l.Accept()
		if err != nil {
			return 1
		}
		c.Close()
	}
}

// startSocketServer runs socketServer in a child process until the test
// ends.
func startSocketServer(t *testing.T, path string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), socketServerEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("socket server: %q, %v", line, err)
	}
}

// clientBinary copies the test binary into a directory every user may
// enter, so that socket clients can run as other users.
func clientBinary(t *testing.T, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin := filepath.Join(dir, "client")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// openDir is a temporary directory every user may enter.
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tokenbroker-socket-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// socketConfig is a broker on loopback and on a socket, with tenant acme
// at the development IdP: %[1]s is the socket, %[2]s the token URL,
// %[3]s the client id, %[4]s the callers section.
const socketConfig = `listen: [127.0.0.1:0, unix://%[1]s]
unix_socket: {mode: "0660", group: "4242"}
admin: {listen: ""}
shutdown: {drain: 0s}
tenants:
  - name: acme
    token_url: %[2]s
    client_id: %[3]s
    client_secret_file: idp.secret
%[4]s`

// socketBroker writes socketConfig with callers into dir and starts its
// daemon; stop shuts it down and waits.
func socketBroker(t *testing.T, dir, socket, callers string, auditOut, logs io.Writer) (d *daemon.Daemon, reload func(callers string) error, stop func()) {
	t.Helper()
	client := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	if err := os.WriteFile(filepath.Join(dir, "idp.secret"), []byte(client.Secret), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "broker.yaml")
	load := func(callers string) (*config.Config, error) {
		if err := os.WriteFile(path, fmt.Appendf(nil, socketConfig, socket, idp.TokenURL(), client.ID, callers), 0o600); err != nil {
			return nil, err
		}
		return config.LoadWith(path, config.Options{Logger: jsonLogger(logs)})
	}
	cfg, err := load(callers)
	if err != nil {
		t.Fatal(err)
	}
	if d, err = daemon.New(cfg, daemon.Options{Logger: jsonLogger(logs), AuditOutput: auditOut}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("daemon Run: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	reload = func(callers string) error {
		cfg, err := load(callers)
		if err != nil {
			return err
		}
		return d.Reload(cfg)
	}
	return d, reload, stop
}

func auditLines(t *testing.T, b *logtest.Buffer) []audit.Record {
	t.Helper()
	var out []audit.Record
	for _, ln := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if ln == "" {
			continue
		}
		var r audit.Record
		if err := json.Unmarshal([]byte(ln), &r); err != nil {
			t.Fatalf("audit line %q: %v", ln, err)
		}
		out = append(out, r)
	}
	return out
}

// TestSocketCallersByUID runs the broker on a Unix socket (mode 0660,
// group 4242) and calls it from processes of other users: the kernel's
// uid names the caller. A matched uid gets its token and its audit line
// names it; an unmatched uid is refused and audited; a gid caller is
// matched by the primary gid only; a user outside the socket's group
// cannot connect at all; a reload that removes a uid's caller ends its
// watch PERMISSION_DENIED; the socket is gone after shutdown.
func TestSocketCallersByUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the socket's clients run as other uids (uid 1000-1003), which only root may start")
	}
	dir := openDir(t)
	bin := clientBinary(t, dir)
	socket := filepath.Join(dir, "run", "broker.sock")
	const callers = `callers:
  - {name: billing, unix_uid: 1000, tenants: [acme]}
  - {name: batch, unix_gid: 4243, tenants: [acme]}
`
	auditOut, logs := &logtest.Buffer{}, &logtest.Buffer{}
	_, reload, stop := socketBroker(t, dir, socket, callers, auditOut, logs)

	// The socket file: created with its mode and group, in a directory
	// the broker made 0750 with that group.
	for path, want := range map[string]fs.FileMode{socket: fs.ModeSocket | 0o660, filepath.Dir(socket): fs.ModeDir | 0o750} {
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want || fi.Sys().(*syscall.Stat_t).Gid != 4242 {
			t.Errorf("%s: mode %s, gid %d; want %s, gid 4242", path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid, want)
		}
	}

	billing := asUser{uid: 1000, gid: 4242}
	stranger := asUser{uid: 1001, gid: 4244, groups: []uint32{4242}} // may connect, is no caller
	batch := asUser{uid: 1003, gid: 4243, groups: []uint32{4242}}
	outsider := asUser{uid: 1002, gid: 4245} // not in the socket's group

	cmd, dec := startClient(t, bin, socket, billing, "get")
	got := next(t, "uid 1000", dec)
	if got.Fingerprint == "" {
		t.Fatalf("uid 1000 (caller billing) got no token: %+v", got)
	}
	billingPID := cmd.Process.Pid
	_, dec = startClient(t, bin, socket, stranger, "get")
	if ev := next(t, "uid 1001", dec); ev.Code != codes.PermissionDenied.String() || !strings.Contains(ev.Message, "uid 1001 (gid 4244) on the broker's Unix socket is not a caller") {
		t.Errorf("uid 1001 (no caller): %+v, want PermissionDenied naming it", ev)
	}
	_, dec = startClient(t, bin, socket, batch, "get")
	if ev := next(t, "uid 1003", dec); ev.Fingerprint == "" {
		t.Errorf("uid 1003 of primary gid 4243 (caller batch): %+v, want a token", ev)
	}
	_, dec = startClient(t, bin, socket, outsider, "get")
	if ev := next(t, "uid 1002", dec); ev.Code != codes.Unavailable.String() || !strings.Contains(ev.Message, "permission denied") {
		t.Errorf("uid 1002, outside the socket's group: %+v, want the kernel to refuse the connection", ev)
	}

	var issued, denied *audit.Record
	recs := auditLines(t, auditOut)
	for i, r := range recs {
		switch {
		case r.Event == audit.EventIssue && r.Identity == "unix_uid=1000":
			issued = &recs[i]
		case r.Event == audit.EventDeny && r.Identity == "unix_uid=1001":
			denied = &recs[i]
		case r.Identity == "unix_uid=1002" || strings.HasPrefix(r.Peer, "uid=1002:"):
			t.Errorf("uid 1002 never reached the broker, yet it is audited: %+v", r)
		}
	}
	if issued == nil || issued.Caller != "billing" || issued.Peer != fmt.Sprintf("uid=1000:pid=%d", billingPID) || issued.TokenFingerprint != got.Fingerprint {
		t.Errorf("issue line of uid 1000: %+v; want caller billing, peer uid=1000:pid=%d, fingerprint %s", issued, billingPID, got.Fingerprint)
	}
	// Denial lines name the peer without its port (here: pid), as they
	// collapse per address.
	if denied == nil || denied.Caller != "" || denied.Code != "PermissionDenied" || denied.Peer != "uid=1001" {
		t.Errorf("deny line of uid 1001: %+v", denied)
	}
	if !strings.Contains(auditOut.String(), `"identity":"unix_gid=4243"`) {
		t.Errorf("no audit line names caller batch by its gid:\n%s", auditOut)
	}
	if !strings.Contains(logs.String(), `"caller":"billing"`) || !strings.Contains(logs.String(), fmt.Sprintf(`"peer.address":"uid=1000:pid=%d"`, billingPID)) {
		t.Errorf("the request log does not name caller billing and its peer:\n%s", logs)
	}

	// A reload that removes billing ends its open watch.
	cmd, dec = startClient(t, bin, socket, billing, "watch")
	if ev := next(t, "watch of uid 1000", dec); ev.Fingerprint == "" {
		t.Fatalf("watch of uid 1000: %+v", ev)
	}
	if err := reload("callers:\n  - {name: batch, unix_gid: 4243, tenants: [acme]}\n"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, "watch of uid 1000", dec); ev.Code != codes.PermissionDenied.String() {
		t.Errorf("watch of uid 1000 after its caller was removed: %+v, want PermissionDenied", ev)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("watch client: %v", err)
	}

	stop()
	if _, err := os.Lstat(socket); !os.IsNotExist(err) {
		t.Errorf("socket after shutdown: %v, want it removed", err)
	}
}

// listenOn starts a daemon on the socket at path (and loopback), open
// mode, for the socket file tests; its error is New's.
func listenOn(t *testing.T, path string, logs io.Writer) (*daemon.Daemon, error) {
	t.Helper()
	cfg := &config.Config{Socket: config.Socket{Path: path}, Admin: config.Admin{}}
	return daemon.New(cfg, daemon.Options{Logger: jsonLogger(logs)})
}

// TestSocketFile: what the broker does with the socket's path. A stale
// socket (nothing answers) is replaced; a regular file, a symbolic link,
// or a socket another process serves on is left alone and New fails
// naming it; a directory others may write is refused; Close removes the
// socket, but not a file that replaced it.
func TestSocketFile(t *testing.T) {
	logs := &logtest.Buffer{}
	t.Run("stale socket replaced", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "b.sock")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close() // a broker that died left it behind
		d, err := listenOn(t, path, logs)
		if err != nil {
			t.Fatalf("New over a stale socket: %v", err)
		}
		defer d.Close()
		if d.SocketPath() != path || d.Addr().String() != path {
			t.Errorf("SocketPath %q, Addr %v; want %s", d.SocketPath(), d.Addr(), path)
		}
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode() != fs.ModeSocket|0o660 {
			t.Errorf("socket: %v, %v; want mode 0660 (the default)", fi, err)
		}
	})
	t.Run("regular file refused", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "b.sock")
		if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := listenOn(t, path, logs)
		want := "daemon: listen unix://" + path + ": " + path + " is a regular file, not a socket; the broker replaces only a stale socket: move it away or choose another path"
		if err == nil || err.Error() != want {
			t.Errorf("New: %v\nwant %s", err, want)
		}
		if b, _ := os.ReadFile(path); string(b) != "keep me" {
			t.Errorf("the file was touched: %q", b)
		}
	})
	t.Run("symbolic link refused", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "b.sock")
		if err := os.Symlink(filepath.Join(dir, "elsewhere"), path); err != nil {
			t.Fatal(err)
		}
		if _, err := listenOn(t, path, logs); err == nil || !strings.Contains(err.Error(), path+" is a symbolic link, not a socket") {
			t.Errorf("New: %v", err)
		}
	})
	t.Run("live socket of another process not stolen", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "b.sock")
		startSocketServer(t, path)
		_, err := listenOn(t, path, logs)
		if err == nil || !strings.Contains(err.Error(), "a process is serving on "+path+" (another broker?)") {
			t.Errorf("New: %v", err)
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("the other server's socket is gone: %v", err)
		}
		c.Close()
	})
	t.Run("world-writable directory refused", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		if _, err := listenOn(t, filepath.Join(dir, "b.sock"), logs); err == nil || !strings.Contains(err.Error(), "is writable by its group or every user (mode 0777), who could replace the socket") {
			t.Errorf("New: %v", err)
		}
	})
	t.Run("directories created 0750", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "a", "b", "b.sock")
		d, err := listenOn(t, path, logs)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		for _, p := range []string{filepath.Join(dir, "a"), filepath.Dir(path)} {
			if fi, err := os.Stat(p); err != nil || fi.Mode() != fs.ModeDir|0o750 {
				t.Errorf("%s: %v, %v; want a directory of mode 0750", p, fi, err)
			}
		}
	})
	t.Run("removed at Close unless replaced", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "b.sock")
		d, err := listenOn(t, path, logs)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("after Close: %v, want the socket removed", err)
		}
		d, err = listenOn(t, path, logs)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(path); err != nil { // an operator's hand…
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("new"), 0o600); err != nil { // …and a new file
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(path); string(b) != "new" {
			t.Errorf("Close removed a file that replaced its socket")
		}
	})
}

// TestSocketOpenMode: without callers the socket is served like loopback,
// to every local user who may connect.
func TestSocketOpenMode(t *testing.T) {
	f := brokertest.Start(t) // only for its IdP and client
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s"), []byte(f.Client.Secret), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.ParseWith(fmt.Appendf(nil, "listen: unix://%s/b.sock\ntenants:\n  - {name: acme, token_url: %s, client_id: %s, client_secret_file: s}\n",
		dir, f.IdP.TokenURL(), f.Client.ID), "broker.yaml", dir, config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := brokertest.Run(t, cfg, daemon.Options{})
	if d.TCPAddr() != nil {
		t.Errorf("a TCP listener at %v; listen names only the socket", d.TCPAddr())
	}
	cc, err := grpc.NewClient("unix://"+d.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := tbv1.NewTokenBrokerServiceClient(cc).GetToken(t.Context(), &tbv1.GetTokenRequest{Tenant: "acme"}); err != nil {
		t.Errorf("open mode over the socket: %v", err)
	}
}

// TestSocketBesideTLS: with tls, the TCP listener keeps TLS while the
// socket is served without it; an API key is accepted on the socket (a
// local peer), and a uid that is no caller is refused PERMISSION_DENIED.
func TestSocketBesideTLS(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "b.sock")
	s := brokertest.StartSecuredWith(t, daemon.Options{Listen: []string{"127.0.0.1:0", "unix://" + socket}})
	cc, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := tbv1.NewTokenBrokerServiceClient(cc)
	_, err = s.Get(t.Context(), api, "acme")
	brokertest.WantStatus(t, "this uid, no caller", err, codes.PermissionDenied)
	if _, err := s.Get(brokertest.Bearer(t.Context(), s.APIKey), api, "team-a"); err != nil {
		t.Errorf("API key over the socket: %v", err)
	}
	if _, err := s.Get(t.Context(), s.API(s.WithCert(brokertest.BillingSPIFFE)), "acme"); err != nil {
		t.Errorf("mTLS over TCP beside the socket: %v", err)
	}
	me := fmt.Sprintf("unix_uid=%d", os.Geteuid())
	var deny, keyIssue bool
	for _, r := range s.AuditRecords() {
		deny = deny || r.Event == audit.EventDeny && r.Identity == me && r.Code == "PermissionDenied"
		keyIssue = keyIssue || r.Event == audit.EventIssue && r.Caller == "ci" && strings.HasPrefix(r.Peer, fmt.Sprintf("uid=%d:pid=", os.Geteuid()))
	}
	if !deny || !keyIssue {
		t.Errorf("audit: denial of %s %v, API key issue over the socket %v", me, deny, keyIssue)
	}
}

// TestSocketCallersNeedASocket: a unix_uid caller on a broker without a
// socket could never connect, so New refuses it, naming the line.
func TestSocketCallersNeedASocket(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s"), []byte("FAKE-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.ParseWith([]byte("listen: 127.0.0.1:0\ntenants:\n  - {name: acme, token_url: http://127.0.0.1:1/t, client_id: c, client_secret_file: s}\ncallers:\n  - {name: billing, unix_uid: 1000, tenants: [acme]}\n"),
		"broker.yaml", dir, config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = daemon.New(cfg, daemon.Options{})
	want := `config: broker.yaml:5: callers[0]: caller "billing" is identified by its uid or gid on a Unix socket, but the broker listens on none; add a unix:///path entry to listen, e.g. listen: [127.0.0.1:50051, unix:///run/tokenbroker/broker.sock]`
	if err == nil || err.Error() != want {
		t.Errorf("New: %v\nwant %s", err, want)
	}
	d, err := daemon.New(cfg, daemon.Options{Listen: []string{"unix://" + filepath.Join(dir, "b.sock")}})
	if err != nil {
		t.Fatalf("with --listen unix://…: %v", err)
	}
	d.Close()
}
