package authn

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
)

// accepted connects to l and returns the server side of the connection.
func accepted(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	c, err := net.Dial(l.Addr().Network(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func listenUnix(t *testing.T) net.Listener {
	t.Helper()
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "s.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewUnixListener(ul)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestUnixListener: a connection accepted on the socket carries the
// kernel's word on its peer, this process, as its RemoteAddr, and
// PeerOf makes it a local peer with uid and gid identities.
func TestUnixListener(t *testing.T) {
	c := accepted(t, listenUnix(t))
	u, ok := c.RemoteAddr().(*UnixPeer)
	if !ok {
		t.Fatalf("RemoteAddr is %T, want *UnixPeer", c.RemoteAddr())
	}
	if u.UID != uint32(os.Geteuid()) || u.GID != uint32(os.Getegid()) || u.PID != int32(os.Getpid()) {
		t.Errorf("peer uid %d gid %d pid %d; this process is %d, %d, %d", u.UID, u.GID, u.PID, os.Geteuid(), os.Getegid(), os.Getpid())
	}
	p := PeerOf(peer.NewContext(context.Background(), &peer.Peer{Addr: c.RemoteAddr()}))
	if p.Unix != u || !p.Loopback || p.TLS || p.Addr != u.String() {
		t.Errorf("PeerOf: %+v", p)
	}
	ids := u.Identities()
	if ids[0].String() != "unix_uid="+itoa(os.Geteuid()) || ids[1].String() != "unix_gid="+itoa(os.Getegid()) {
		t.Errorf("identities %v", ids)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestUnixPeerAddr(t *testing.T) {
	u := NewUnixPeer(1000, 100, 4242)
	if u.String() != "uid=1000:pid=4242" || u.Network() != "unix" {
		t.Errorf("%s %s", u.Network(), u)
	}
	// The per-address limits and denial lines count it by its uid.
	if host, _, err := net.SplitHostPort(u.String()); host != "uid=1000" || err != nil {
		t.Errorf("host %q, %v", host, err)
	}
	if ids := u.Identities(); ids != [2]Identity{{KindUnixUID, "1000"}, {KindUnixGID, "100"}} {
		t.Errorf("identities %v", ids)
	}
}

// TestSocketCredentials: a socket's connections skip the wrapped
// handshake; other connections get it.
func TestSocketCredentials(t *testing.T) {
	creds := SocketCredentials(insecure.NewCredentials())
	_, info, err := creds.ServerHandshake(accepted(t, listenUnix(t)))
	if err != nil || info.AuthType() != "unix" {
		t.Errorf("socket: %v, %v", info, err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	_, info, err = creds.ServerHandshake(accepted(t, tcp))
	if err != nil || info.AuthType() != "insecure" {
		t.Errorf("tcp: %v, %v", info, err)
	}
	if creds.Clone().Info() != creds.Info() {
		t.Error("Clone changes Info")
	}
}
