package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
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
// bound in a private (0700) temporary directory, given its mode and group,
// then linked to its path, so that no one connects before they apply.
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
	private, err := os.MkdirTemp(dir, ".tb")
	if err != nil {
		return nil, fail(err)
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, "s")
	if len(tmp) > config.MaxSocketPath {
		return nil, fail(fmt.Errorf("the directory's path is too long for the broker's temporary name %s (at most %d bytes); choose a shorter path", tmp, config.MaxSocketPath))
	}
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fail(err)
	}
	lis.SetUnlinkOnClose(false) // the socket lives at s.Path, removed by Close
	defer func() {
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
// not -1), and refuses one that another user could replace the socket in
// (see trustedDir).
func socketDir(dir string, mode fs.FileMode, gid int) error {
	if err := makeSocketDir(dir, mode, gid); err != nil {
		return err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if err := trustedDir(d); err != nil {
			return err
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// trustedDir refuses a directory owned by another user than root or the
// broker's, or that its group or every user may write without the sticky
// bit: they could rename the socket (or a directory above it) away.
func trustedDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	const fix = "; use a directory that only root or the broker's user owns and can write, e.g. /run/tokenbroker"
	perm := fi.Mode().Perm()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("directory %s belongs to uid %d, who could replace the socket%s", dir, st.Uid, fix)
	}
	if perm&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("directory %s is writable by its group or every user (mode %04o), who could replace the socket%s", dir, perm, fix)
	}
	return nil
}

// makeSocketDir creates dir and its missing parents with mode and gid.
func makeSocketDir(dir string, mode fs.FileMode, gid int) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := makeSocketDir(filepath.Dir(dir), mode, gid); err != nil {
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
