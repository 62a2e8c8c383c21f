//go:build !linux

package authn

import (
	"errors"
	"net"
)

var errNoPeerCred = errors.New("authn: callers on a Unix socket are identified by SO_PEERCRED, which only Linux has; listen on host:port here")

func peerCredSupported() error { return errNoPeerCred }

func peerCred(*net.UnixConn) (*UnixPeer, error) { return nil, errNoPeerCred }
