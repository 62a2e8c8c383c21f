package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/server"
)

// staleProbe bounds the connect that tells a stale socket from a live one.
const staleProbe = time.Second

// socketListener is the gRPC listener on a Unix socket: its file appears
// at its path only with its mode and group set, and Close removes it if
// it is still the one the broker made.
type socketListener struct {
	net.Listener // authn.NewUnixListener's, with the connection caps
	path         string
	made         os.FileInfo
}

// listenSocket prepares s's directory, removes a stale socket at its path
// (never a live one or anything else), and listens there: the socket is
// bound under a temporary name, given its mode and group, then linked to
// its path, so that no one connects before they apply.
func listenSocket(s config.Socket, l limits.Limits) (_ *socketListener, err error) {
	fail := func(err error) error { return fmt.Errorf("daemon: listen unix://%s: %w", s.Path, err) }
	gid, err := s.GroupID()
	if err != nil {
		return nil, fail(fmt.Errorf("unix_socket.group: %w", err))
	}
	dir := filepath.Dir(s.Path)
	if err := socketDir(dir, s.DirFileMode(), gid); err != nil {
		return nil, fail(err)
	}
	if err := removeStale(s.Path); err != nil {
		return nil, fail(err)
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".tb%08x", rand.Uint32()))
	if len(tmp) > config.MaxSocketPath {
		return nil, fail(fmt.Errorf("the directory's path is too long for the broker's temporary name %s (at most %d bytes); choose a shorter path", tmp, config.MaxSocketPath))
	}
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fail(err)
	}
	lis.SetUnlinkOnClose(false) // the socket lives at s.Path, removed by Close
	defer func() {
		_ = os.Remove(tmp)
		if err != nil {
			_ = lis.Close()
		}
	}()
	if err := os.Chmod(tmp, s.FileMode()); err != nil {
		return nil, fail(err)
	}
	if gid >= 0 {
		if err := os.Lchown(tmp, -1, gid); err != nil {
			return nil, fail(fmt.Errorf("unix_socket.group %s: %w; the broker's user must belong to the group", s.Group, err))
		}
	}
	if err := os.Link(tmp, s.Path); err != nil { // never replaces what appeared meanwhile
		return nil, fail(err)
	}
	made, err := os.Lstat(s.Path)
	if err != nil {
		return nil, fail(err)
	}
	ul, err := authn.NewUnixListener(lis)
	if err != nil {
		_ = os.Remove(s.Path)
		return nil, fail(err)
	}
	return &socketListener{Listener: server.LimitListener(ul, l), path: s.Path, made: made}, nil
}

// Addr is the socket's path.
func (s *socketListener) Addr() net.Addr { return &net.UnixAddr{Name: s.path, Net: "unix"} }

// Close closes the listener and removes the socket file, unless another
// file took its place.
func (s *socketListener) Close() error {
	err := s.Listener.Close()
	if fi, serr := os.Lstat(s.path); serr == nil && os.SameFile(fi, s.made) {
		if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return rerr
		}
	}
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// socketDir creates dir's missing directories with mode (and group gid if
// not -1), and refuses an existing one that others may write without the
// sticky bit: they could replace the socket.
func socketDir(dir string, mode fs.FileMode, gid int) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := socketDir(filepath.Dir(dir), mode, gid); err != nil {
			return err
		}
		if err := os.Mkdir(dir, mode); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := os.Chmod(dir, mode); err != nil { // the umask narrowed it
			return err
		}
		if gid >= 0 {
			return os.Lchown(dir, -1, gid)
		}
		return nil
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	case fi.Mode().Perm()&0o002 != 0 && fi.Mode()&fs.ModeSticky == 0:
		return fmt.Errorf("directory %s is writable by every user (mode %04o), who could replace the socket; use a directory only the broker's user can write, e.g. /run/tokenbroker", dir, fi.Mode().Perm())
	}
	return nil
}

// removeStale removes the socket at path if nothing answers on it: a
// broker that did not shut down left it. Anything else at path, a live
// socket or one it cannot probe, is an error naming it.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("%s is %s, not a socket; the broker replaces only a stale socket: move it away or choose another path", path, fileKind(fi.Mode()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), staleProbe)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "unix", path)
	switch {
	case err == nil:
		_ = c.Close()
		return fmt.Errorf("a process is serving on %s (another broker?); stop it, or choose another path", path)
	case !errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot tell whether the socket %s is in use (%w); remove it if it is stale", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the stale socket: %w", err)
	}
	return nil
}

// fileKind names what is at a path that is not a socket.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "a special file (" + m.Type().String() + ")"
}
