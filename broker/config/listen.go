package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The gRPC listeners: listen is one entry or a list of at most one
// host:port and one unix:///path; unix_socket sets the socket's file.

// Defaults of unix_socket.mode (owner and group may connect) and dir_mode
// (the directories the broker creates); Linux's sun_path holds 107 bytes.
const (
	DefaultSocketMode    fs.FileMode = 0o660
	DefaultSocketDirMode fs.FileMode = 0o750
	MaxSocketPath                    = 107
)

// Socket is the gRPC listener on a Unix socket, whose callers the kernel
// identifies (unix_uid, unix_gid). Zero Mode and DirMode mean the defaults.
type Socket struct {
	Path    string      // absolute, from listen's unix:///path; "" for none
	Mode    fs.FileMode // the socket file's permissions: who may connect at all
	Group   string      // a group name or id; "" leaves the broker's own
	DirMode fs.FileMode // of the directories created; never world-writable
}

// FileMode is Mode or its default.
func (s Socket) FileMode() fs.FileMode {
	if s.Mode == 0 {
		return DefaultSocketMode
	}
	return s.Mode
}

// DirFileMode is DirMode or its default.
func (s Socket) DirFileMode() fs.FileMode {
	if s.DirMode == 0 {
		return DefaultSocketDirMode
	}
	return s.DirMode
}

// GroupID is Group's id, looked up unless it is a number; -1 for "".
func (s Socket) GroupID() (int, error) {
	if s.Group == "" {
		return -1, nil
	}
	if id, err := strconv.ParseUint(s.Group, 10, 32); err == nil && id < 1<<32-1 {
		return int(id), nil
	}
	g, err := user.LookupGroup(s.Group)
	if err != nil {
		return -1, fmt.Errorf("group %q: %w; give an existing group name or a numeric gid", s.Group, err)
	}
	return strconv.Atoi(g.Gid)
}

// SplitListen sorts listen entries (the listen key, or --listen flags)
// into the host:port and the socket path, each "" if absent.
func SplitListen(entries []string) (addr, socket string, err error) {
	if len(entries) == 0 {
		return "", "", errors.New("no address; give a host:port or unix:///path")
	}
	for _, e := range entries {
		path, err := listenEntry(e)
		switch {
		case err != nil:
			return "", "", err
		case path != "" && socket != "":
			return "", "", fmt.Errorf("two Unix sockets, %s and %s; the broker listens on one host:port and one socket at most", "unix://"+socket, e)
		case path != "":
			socket = path
		case addr != "":
			return "", "", fmt.Errorf("two addresses, %s and %s; the broker listens on one host:port and one socket at most", addr, e)
		default:
			addr = e
		}
	}
	return addr, socket, nil
}

// listenEntry checks one entry of listen: a host:port, or unix:// and an
// absolute path, which it returns.
func listenEntry(s string) (socket string, err error) {
	scheme, rest, isURL := strings.Cut(s, ":")
	switch {
	case !isURL || scheme != "unix" && scheme != "unix-abstract":
		return "", checkHostPort(s, DefaultListen+" or unix:///run/tokenbroker/broker.sock")
	case scheme == "unix-abstract":
		return "", fmt.Errorf("%q: an abstract socket has no file permissions (any process of the network namespace could connect); use a socket file, unix:///run/tokenbroker/broker.sock", s)
	case !strings.HasPrefix(rest, "///"):
		return "", fmt.Errorf("%q: write a Unix socket as unix:// and an absolute path, e.g. unix:///run/tokenbroker/broker.sock", s)
	}
	path := rest[2:]
	switch {
	case filepath.Clean(path) != path || path == "/":
		return "", fmt.Errorf("%q: the socket path must be clean (no \"..\", \"//\" or trailing \"/\"), e.g. unix:///run/tokenbroker/broker.sock", s)
	case strings.ContainsFunc(path, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return "", fmt.Errorf("%q: the socket path holds a control character", s)
	case len(path) > MaxSocketPath:
		return "", fmt.Errorf("%q: the socket path is %d bytes; the kernel takes at most %d", s, len(path), MaxSocketPath)
	}
	return path, nil
}

// checkHostPort checks a host:port whose port is a number; the error
// shows example.
func checkHostPort(s, example string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	_, port, err := net.SplitHostPort(s)
	if err == nil {
		if _, perr := strconv.ParseUint(port, 10, 16); perr != nil {
			err = fmt.Errorf("port %q is not a number from 0 to 65535", port)
		}
	}
	if err != nil {
		msg := err.Error()
		if ae, ok := errors.AsType[*net.AddrError](err); ok {
			msg = ae.Err
		}
		return fmt.Errorf("%q is not host:port (%s); use e.g. %s", s, msg, example)
	}
	return nil
}

// listenDoc is the listen key: one entry or a list of them.
type listenDoc struct {
	entries []string
	set     bool   // by UnmarshalYAML, which yaml.v3 skips for null
	list    bool   // written as a list: errors name listen[i]
	bad     string // the kind of node given instead, e.g. "a mapping"
}

func (l *listenDoc) UnmarshalYAML(n *yaml.Node) error {
	n = resolve(n)
	*l = listenDoc{set: true}
	switch {
	case n.Kind == yaml.SequenceNode:
		l.list = true
		for _, e := range n.Content {
			if e = resolve(e); e.Kind != yaml.ScalarNode || e.ShortTag() == "!!null" {
				l.bad = kindName(e) + " in the list"
				return nil
			}
			l.entries = append(l.entries, e.Value)
		}
	case n.Kind == yaml.ScalarNode && n.ShortTag() != "!!null":
		l.entries = []string{n.Value}
	default:
		l.bad = kindName(n)
	}
	return nil
}

// unixSocketDoc is the unix_socket section; modes are octal strings.
type unixSocketDoc struct {
	Mode    string `yaml:"mode"`
	Group   string `yaml:"group"`
	DirMode string `yaml:"dir_mode"`
}

// listen checks the listen key and the unix_socket section into cfg.
func (p *parser) listen(d *fileDoc, cfg *Config) error {
	l := d.Listen
	if !l.set && p.has("listen") {
		l.bad = "nothing"
	}
	if l.bad != "" {
		return p.errf("listen", "must be host:port, unix:///path or a list of at most one of each, got %s; write e.g. [%s, unix:///run/tokenbroker/broker.sock]", l.bad, DefaultListen)
	}
	if len(l.entries) == 0 {
		return p.errf("listen", "must not be empty; give a host:port, a unix:///path or both, e.g. [%s, unix:///run/tokenbroker/broker.sock]", DefaultListen)
	}
	for i, e := range l.entries {
		field := "listen"
		if l.list {
			field = fmt.Sprintf("listen[%d]", i)
		}
		if _, err := listenEntry(e); err != nil {
			return p.errf(field, "%w", err)
		}
	}
	var err error
	if cfg.Listen, cfg.Socket.Path, err = SplitListen(l.entries); err != nil {
		return p.errf("listen", "%w", err)
	}
	return p.unixSocket(d.UnixSocket, &cfg.Socket)
}

// unixSocket checks the unix_socket section into s.
func (p *parser) unixSocket(d *unixSocketDoc, s *Socket) error {
	if d == nil {
		return nil
	}
	for _, f := range []struct {
		key, v string
		into   *fs.FileMode
		need   fs.FileMode // bits that must be set
		deny   fs.FileMode // bits that must not be
		fix    string
	}{
		{"mode", d.Mode, &s.Mode, 0o600, 0, `e.g. "0660": the broker's user and group may connect`},
		{"dir_mode", d.DirMode, &s.DirMode, 0o700, 0o022, `e.g. "0750": writable by the broker's user only; its group or others could replace the socket`},
	} {
		if f.v == "" {
			continue
		}
		m, err := strconv.ParseUint(f.v, 8, 32)
		switch {
		case err != nil || m > 0o777:
			return p.errf("unix_socket."+f.key, "%q is not a file mode; write permission bits in octal, %s", f.v, f.fix)
		case fs.FileMode(m)&f.need != f.need || fs.FileMode(m)&f.deny != 0:
			return p.errf("unix_socket."+f.key, "%04o: %s", m, f.fix)
		}
		*f.into = fs.FileMode(m)
	}
	s.Group = d.Group
	if _, err := s.GroupID(); err != nil {
		return p.errf("unix_socket.group", "%w", err)
	}
	return nil
}
