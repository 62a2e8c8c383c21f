package authn

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

func peerCredSupported() error { return nil }

// peerCred reads the connection's SO_PEERCRED.
func peerCred(c *net.UnixConn) (*UnixPeer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if credErr != nil {
		return nil, fmt.Errorf("authn: SO_PEERCRED: %w", credErr)
	}
	return NewUnixPeer(cred.Uid, cred.Gid, cred.Pid), nil
}
