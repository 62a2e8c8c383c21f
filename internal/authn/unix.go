package authn

import (
	"net"
	"strconv"

	"google.golang.org/grpc/credentials"
)

// UnixPeer is the kernel's word on the process at the other end of a Unix
// socket connection (SO_PEERCRED at its connect), as the connection's
// RemoteAddr, so that it reaches PeerOf and the connection caps.
type UnixPeer struct {
	UID, GID uint32
	// PID is 0 when the peer runs in a PID namespace the broker cannot
	// see (another container).
	PID  int32
	ids  [2]Identity
	addr string
}

// NewUnixPeer returns the peer with these credentials.
func NewUnixPeer(uid, gid uint32, pid int32) *UnixPeer {
	u := strconv.FormatUint(uint64(uid), 10)
	return &UnixPeer{UID: uid, GID: gid, PID: pid,
		ids:  [2]Identity{{KindUnixUID, u}, {KindUnixGID, strconv.FormatUint(uint64(gid), 10)}},
		addr: "uid=" + u + ":pid=" + strconv.FormatInt(int64(pid), 10)}
}

// Network implements net.Addr.
func (u *UnixPeer) Network() string { return "unix" }

// String is "uid=1000:pid=4242": shaped as host:port, so that what is
// counted per peer address (connections, anonymous calls, denials) is
// counted per uid on the socket.
func (u *UnixPeer) String() string { return u.addr }

// Identities are the peer's identities in the order the policy matches
// them: its uid, then its gid.
func (u *UnixPeer) Identities() [2]Identity { return u.ids }

// NewUnixListener returns l with each accepted connection's RemoteAddr
// its *UnixPeer. It fails where the kernel does not name socket peers
// (SO_PEERCRED is Linux's).
func NewUnixListener(l *net.UnixListener) (net.Listener, error) {
	if err := peerCredSupported(); err != nil {
		return nil, err
	}
	return &unixListener{UnixListener: l}, nil
}

type unixListener struct{ *net.UnixListener }

// Accept returns the next connection whose credentials the kernel gave;
// one it cannot (which a connected Unix socket always has) is closed:
// an error here would stop the server.
func (l *unixListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		p, err := peerCred(c)
		if err != nil {
			_ = c.Close()
			continue
		}
		return &unixConn{UnixConn: c, peer: p}, nil
	}
}

type unixConn struct {
	*net.UnixConn
	peer *UnixPeer
}

func (c *unixConn) RemoteAddr() net.Addr { return c.peer }

// SocketCredentials returns server transport credentials that hand every
// connection to tcp (TLS) but a Unix socket's (NewUnixListener), whose
// callers the kernel names, on the host: these get no handshake.
func SocketCredentials(tcp credentials.TransportCredentials) credentials.TransportCredentials {
	return &socketCreds{TransportCredentials: tcp}
}

type socketCreds struct {
	credentials.TransportCredentials
}

// unixAuthInfo is a Unix socket's AuthInfo: private to the host, as
// grpc's local credentials rate it.
type unixAuthInfo struct{ credentials.CommonAuthInfo }

func (unixAuthInfo) AuthType() string { return "unix" }

func (s *socketCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if _, ok := conn.RemoteAddr().(*UnixPeer); ok {
		return conn, unixAuthInfo{credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
	}
	return s.TransportCredentials.ServerHandshake(conn)
}

func (s *socketCreds) Clone() credentials.TransportCredentials {
	return &socketCreds{TransportCredentials: s.TransportCredentials.Clone()}
}
