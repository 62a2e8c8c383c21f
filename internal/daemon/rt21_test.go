package daemon_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/internal/daemon"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// Red team, issue 21: Unix socket callers and the socket file.

// nextWithin is next, bounded: a stream that should have ended but did
// not fails the test after d instead of waiting for the client's timeout.
func nextWithin(t *testing.T, who string, dec *json.Decoder, d time.Duration) clientEvent {
	t.Helper()
	got := make(chan clientEvent, 1)
	go func() {
		var ev clientEvent
		if err := dec.Decode(&ev); err != nil {
			ev.Code = "client output ended: " + err.Error()
		}
		got <- ev
	}()
	select {
	case ev := <-got:
		return ev
	case <-time.After(d):
		t.Fatalf("%s: nothing within %s (the stream is still open)", who, d)
		return clientEvent{}
	}
}

// TestRT21WatchEndsWhenItsUIDGetsItsOwnCaller: a peer matched by its gid
// (caller batch) watches acme; a reload makes its uid a caller of its own
// (narrow, which may not use acme). The uid's caller wins for new calls,
// so the open watch lost the right and must end PERMISSION_DENIED, as a
// removed caller's does. It stayed open and kept receiving acme's tokens
// as batch: resolve looks the stream's caller up by the identity it was
// admitted with (unix_gid=4243), never re-running uid-then-gid.
func TestRT21WatchEndsWhenItsUIDGetsItsOwnCaller(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the socket's client runs as uid 1003, which only root may start")
	}
	dir := openDir(t)
	bin := clientBinary(t, dir)
	socket := filepath.Join(dir, "run", "broker.sock")
	auditOut, logs := &logtest.Buffer{}, &logtest.Buffer{}
	_, reload, _ := socketBroker(t, dir, socket, "callers:\n  - {name: batch, unix_gid: 4243, tenants: [acme]}\n", auditOut, logs)

	peer := asUser{uid: 1003, gid: 4243, groups: []uint32{4242}}
	_, watch := startClient(t, bin, socket, peer, "watch")
	if ev := nextWithin(t, "watch of uid 1003", watch, 20*time.Second); ev.Fingerprint == "" {
		t.Fatalf("watch of uid 1003 (caller batch by its gid): %+v, want a token", ev)
	}
	if err := reload("callers:\n  - {name: narrow, unix_uid: 1003, tenants: [\"none-*\"]}\n  - {name: batch, unix_gid: 4243, tenants: [acme]}\n"); err != nil {
		t.Fatal(err)
	}
	// The policy now denies uid 1003 acme…
	_, get := startClient(t, bin, socket, peer, "get")
	if ev := nextWithin(t, "GetToken of uid 1003", get, 20*time.Second); ev.Code != codes.PermissionDenied.String() || !strings.Contains(ev.Message, `caller "narrow"`) {
		t.Fatalf("GetToken of uid 1003 after the reload: %+v, want PermissionDenied naming caller narrow", ev)
	}
	// …so its open watch must have ended by the time Reload returned.
	if ev := nextWithin(t, "watch of uid 1003", watch, 5*time.Second); ev.Code != codes.PermissionDenied.String() {
		t.Errorf("watch of uid 1003 after its uid became caller narrow: %+v, want PermissionDenied", ev)
	}
}

// TestRT21SocketDirOthersCanReplace: the broker checks the socket's
// directory only for write by every user, yet anyone else who can write
// it can replace the socket (rename it away, bind their own) and so be
// the broker to its clients: API keys sent on the socket, fake tokens.
// A directory another user owns (e.g. pre-created in a sticky /tmp), or
// one the socket's group may write (dir_mode "0770", or an existing
// directory), must be refused like a world-writable one.
func TestRT21SocketDirOthersCanReplace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the directories belong to other users")
	}
	logs := &logtest.Buffer{}
	t.Run("owned by another user", func(t *testing.T) {
		dir := filepath.Join(openDir(t), "tokenbroker")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, 1001, 1001); err != nil {
			t.Fatal(err)
		}
		if d, err := listenOn(t, filepath.Join(dir, "b.sock"), logs); err == nil {
			d.Close()
			t.Errorf("New accepted a socket directory owned by uid 1001, who can replace the socket")
		}
	})
	t.Run("existing directory writable by the socket's group", func(t *testing.T) {
		dir := filepath.Join(openDir(t), "tokenbroker")
		if err := os.Mkdir(dir, 0o770); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o770); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, 0, 4242); err != nil {
			t.Fatal(err)
		}
		cfg := &config.Config{Socket: config.Socket{Path: filepath.Join(dir, "b.sock"), Group: "4242"}}
		if d, err := daemon.New(cfg, daemon.Options{Logger: jsonLogger(logs)}); err == nil {
			d.Close()
			t.Errorf("New accepted a socket directory of mode 0770, group 4242: every client in the socket's group can replace the socket")
		}
	})
	t.Run("dir_mode writable by the group", func(t *testing.T) {
		dir := openDir(t)
		if err := os.WriteFile(filepath.Join(dir, "s"), []byte("FAKE-secret"), 0o600); err != nil {
			t.Fatal(err)
		}
		yaml := fmt.Sprintf("listen: unix://%s/run/b.sock\nunix_socket: {mode: \"0660\", group: \"4242\", dir_mode: \"0770\"}\nadmin: {listen: \"\"}\n"+
			"tenants:\n  - {name: acme, token_url: http://127.0.0.1:1/t, client_id: c, client_secret_file: s}\n", dir)
		cfg, err := config.ParseWith([]byte(yaml), "broker.yaml", dir, config.Options{})
		if err != nil {
			return // refused at load: fine
		}
		if d, err := daemon.New(cfg, daemon.Options{Logger: jsonLogger(logs)}); err == nil {
			d.Close()
			t.Errorf("dir_mode \"0770\" accepted: the broker made %s/run writable by group 4242, whose members can replace the socket", dir)
		}
	})
}

// socketRacerEnv makes the test binary race the broker's temporary
// socket name in the directory it names (socketRacer).
const socketRacerEnv = "TOKENBROKER_TEST_SOCKET_RACER"

// socketRacer waits for the broker's temporary sockets (.tb*) to appear
// in dir and connects to each at once; it prints "connected" and exits as
// soon as one connect succeeds, and says "ready" first.
func socketRacer(dir string) int {
	fd, err := syscall.InotifyInit()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_CREATE); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	buf := make([]byte, 4096)
	for {
		n, err := syscall.Read(fd, buf)
		if err != nil {
			return 1
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := strings.TrimRight(string(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)]), "\x00")
			off += syscall.SizeofInotifyEvent + int(ev.Len)
			if !strings.HasPrefix(name, ".tb") {
				continue
			}
			// Bound, not listening yet: refused; the mode applied: EACCES; gone: ENOENT.
			for end := time.Now().Add(20 * time.Millisecond); time.Now().Before(end); {
				c, err := net.Dial("unix", filepath.Join(dir, name))
				if err == nil {
					c.Close()
					fmt.Println("connected")
					return 0
				}
				if !errors.Is(err, syscall.ECONNREFUSED) {
					break
				}
			}
		}
	}
}

// TestRT21SocketModeBeforeConnect: the socket is bound under a temporary
// name, then chmod'ed, then linked to its path, "so no one connects
// before the mode applies". But the temporary socket is created with the
// process umask's mode (0777 under umask 0) in the same directory, which
// others may enter: a user outside the socket's group (uid 1002, for
// whom mode 0660 should mean "permission denied") who watches the
// directory connects between bind and chmod, and the connection outlives
// the chmod. In open mode that peer gets tokens. Bounded: 1000 starts or
// 10 s (the race was won within 4 to 700 starts).
func TestRT21SocketModeBeforeConnect(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the racer runs as uid 1002")
	}
	dir := openDir(t)
	bin := clientBinary(t, dir)
	sockDir := filepath.Join(dir, "run")
	if err := os.Mkdir(sockDir, 0o755); err != nil { // others may enter, as /run
		t.Fatal(err)
	}
	if err := os.Chmod(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), bin)
	cmd.Env = []string{socketRacerEnv + "=" + sockDir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1002, Gid: 4245}}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 2)
	go func() {
		defer close(lines)
		for sc := bufio.NewScanner(out); sc.Scan(); {
			lines <- sc.Text()
		}
	}()
	if l := <-lines; l != "ready" {
		t.Fatalf("racer: %q", l)
	}

	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(sockDir, "b.sock")
	logs := &logtest.Buffer{}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < 1000 && time.Now().Before(deadline); i++ {
		cfg := &config.Config{Socket: config.Socket{Path: path, Group: "4242"}}
		d, err := daemon.New(cfg, daemon.Options{Logger: jsonLogger(logs)})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case l := <-lines:
			d.Close()
			t.Fatalf("start %d: uid 1002, outside group 4242, connected to the broker's socket (mode 0660) under umask 0: racer says %q", i+1, l)
		case <-time.After(5 * time.Millisecond):
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
