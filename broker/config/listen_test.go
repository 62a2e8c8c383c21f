package config_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os/user"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/config"
)

const listenTenant = "tenants:\n  - name: acme\n    credentials_file: acme.json\n"

func TestListen(t *testing.T) {
	for _, tt := range []struct {
		name, yaml   string
		addr, socket string
		sock         config.Socket // Mode, Group, DirMode
	}{
		{"absent: the default", "", config.DefaultListen, "", config.Socket{}},
		{"one address, as before", "listen: 0.0.0.0:50051\n", "0.0.0.0:50051", "", config.Socket{}},
		{"a socket alone", "listen: unix:///run/tokenbroker/broker.sock\n", "", "/run/tokenbroker/broker.sock", config.Socket{}},
		{"both, socket first", "listen: [unix:///run/tb.sock, 127.0.0.1:50051]\n", "127.0.0.1:50051", "/run/tb.sock", config.Socket{}},
		{"one address in a list", "listen:\n  - 127.0.0.1:0\n", "127.0.0.1:0", "", config.Socket{}},
		{"unix_socket settings", "listen: unix:///run/tb.sock\nunix_socket: {mode: \"0666\", group: \"4242\", dir_mode: \"0700\"}\n",
			"", "/run/tb.sock", config.Socket{Mode: 0o666, Group: "4242", DirMode: 0o700}},
		{"mode unquoted", "listen: unix:///run/tb.sock\nunix_socket:\n  mode: 0640\n", "", "/run/tb.sock", config.Socket{Mode: 0o640}},
		{"unix_socket without a socket: kept for --listen", "unix_socket: {mode: \"0600\"}\n", config.DefaultListen, "", config.Socket{Mode: 0o600}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.ParseWith([]byte(tt.yaml+listenTenant), "broker.yaml", "testdata", config.Options{Now: now})
			if err != nil {
				t.Fatal(err)
			}
			want := tt.sock
			want.Path = tt.socket
			if cfg.Listen != tt.addr || cfg.Socket != want {
				t.Errorf("listen %q, socket %+v; want %q, %+v", cfg.Listen, cfg.Socket, tt.addr, want)
			}
		})
	}
}

func TestSocketDefaults(t *testing.T) {
	var s config.Socket
	if s.FileMode() != 0o660 || s.DirFileMode() != 0o750 {
		t.Errorf("zero Socket: mode %04o, dir mode %04o; want 0660, 0750", s.FileMode(), s.DirFileMode())
	}
	if gid, err := s.GroupID(); gid != -1 || err != nil {
		t.Errorf("no group: %d, %v; want -1 (the broker's own)", gid, err)
	}
	if gid, err := (config.Socket{Group: "4242"}).GroupID(); gid != 4242 || err != nil {
		t.Errorf("numeric group: %d, %v", gid, err)
	}
	g, err := user.LookupGroupId("0")
	if err != nil {
		t.Skip("no group 0 in this system's group database:", err)
	}
	if gid, err := (config.Socket{Group: g.Name}).GroupID(); gid != 0 || err != nil {
		t.Errorf("group %s by name: %d, %v; want 0", g.Name, gid, err)
	}
}

func TestListenErrors(t *testing.T) {
	const eg = "e.g. [127.0.0.1:50051, unix:///run/tokenbroker/broker.sock]"
	for _, tt := range []struct{ name, yaml, want string }{
		{"two addresses", "listen: [127.0.0.1:1, 127.0.0.1:2]\n",
			"config: broker.yaml:1: listen: two addresses, 127.0.0.1:1 and 127.0.0.1:2; the broker listens on one host:port and one socket at most"},
		{"two sockets", "listen: [unix:///a.sock, unix:///b.sock]\n",
			"config: broker.yaml:1: listen: two Unix sockets, unix:///a.sock and unix:///b.sock; the broker listens on one host:port and one socket at most"},
		{"empty list", "listen: []\n", "config: broker.yaml:1: listen: must not be empty; give a host:port, a unix:///path or both, " + eg},
		{"null", "listen:\n", "config: broker.yaml:1: listen: must be host:port, unix:///path or a list of at most one of each, got nothing; write " + eg},
		{"a mapping in the list", "listen:\n  - {unix: /a.sock}\n", "config: broker.yaml:2: listen: must be host:port, unix:///path or a list of at most one of each, got a mapping in the list; write " + eg},
		{"bad entry names its index", "listen: [127.0.0.1:0, 'localhost']\n",
			`config: broker.yaml:1: listen[1]: "localhost" is not host:port (missing port in address); use e.g. 127.0.0.1:50051 or unix:///run/tokenbroker/broker.sock`},
		{"relative socket", "listen: unix:run/tb.sock\n",
			`config: broker.yaml:1: listen: "unix:run/tb.sock": write a Unix socket as unix:// and an absolute path, e.g. unix:///run/tokenbroker/broker.sock`},
		{"socket with a host", "listen: unix://run/tb.sock\n",
			`config: broker.yaml:1: listen: "unix://run/tb.sock": write a Unix socket as unix:// and an absolute path, e.g. unix:///run/tokenbroker/broker.sock`},
		{"unclean socket path", "listen: unix:///run/../tmp/tb.sock\n",
			`config: broker.yaml:1: listen: "unix:///run/../tmp/tb.sock": the socket path must be clean (no "..", "//" or trailing "/"), e.g. unix:///run/tokenbroker/broker.sock`},
		{"socket path too long", "listen: unix:///" + strings.Repeat("d", 107) + "\n",
			`config: broker.yaml:1: listen: "unix:///` + strings.Repeat("d", 107) + `": the socket path is 108 bytes; the kernel takes at most 107`},
		{"abstract socket", "listen: unix-abstract:tokenbroker\n",
			`config: broker.yaml:1: listen: "unix-abstract:tokenbroker": an abstract socket has no file permissions (any process of the network namespace could connect); use a socket file, unix:///run/tokenbroker/broker.sock`},
		{"mode not octal", "unix_socket: {mode: rw-rw----}\n",
			`config: broker.yaml:1: unix_socket.mode: "rw-rw----" is not a file mode; write permission bits in octal, e.g. "0660": the broker's user and group may connect`},
		{"mode with setuid", "unix_socket: {mode: \"4660\"}\n",
			`config: broker.yaml:1: unix_socket.mode: "4660" is not a file mode; write permission bits in octal, e.g. "0660": the broker's user and group may connect`},
		{"mode shutting the owner out", "unix_socket: {mode: \"0060\"}\n",
			`config: broker.yaml:1: unix_socket.mode: 0060: e.g. "0660": the broker's user and group may connect`},
		{"dir_mode writable by others", "unix_socket: {dir_mode: \"0777\"}\n",
			`config: broker.yaml:1: unix_socket.dir_mode: 0777: e.g. "0750": writable by the broker's user only; its group or others could replace the socket`},
		{"dir_mode writable by the group", "unix_socket: {dir_mode: \"0770\"}\n",
			`config: broker.yaml:1: unix_socket.dir_mode: 0770: e.g. "0750": writable by the broker's user only; its group or others could replace the socket`},
		{"unknown group", "unix_socket: {group: no-such-group-tb}\n",
			`config: broker.yaml:1: unix_socket.group: group "no-such-group-tb": group: unknown group no-such-group-tb; give an existing group name or a numeric gid`},
		{"unknown key", "unix_socket: {owner: root}\n",
			`config: broker.yaml:1: unix_socket: unknown key "owner"; allowed keys: mode, group, dir_mode`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.ParseWith([]byte(tt.yaml+listenTenant), "broker.yaml", "testdata", config.Options{Now: now})
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error:\n got %v\nwant %s", err, tt.want)
			}
			if _, ok := errors.AsType[*config.Error](err); !ok {
				t.Errorf("error is %T, want *config.Error", err)
			}
		})
	}
}

func TestSplitListen(t *testing.T) {
	addr, sock, err := config.SplitListen([]string{"unix:///run/tb.sock", "127.0.0.1:0"})
	if addr != "127.0.0.1:0" || sock != "/run/tb.sock" || err != nil {
		t.Errorf("SplitListen: %q, %q, %v", addr, sock, err)
	}
	if _, _, err := config.SplitListen(nil); err == nil {
		t.Error("no entries: no error")
	}
}

func TestUnixCallers(t *testing.T) {
	const sock = "listen: unix:///run/tb.sock\n"
	cfg, err := config.ParseWith([]byte(sock+listenTenant+
		"callers:\n  - {name: billing, unix_uid: 1000, tenants: [acme]}\n  - {name: ops, unix_gid: 0, tenants: ['*']}\n"),
		"broker.yaml", "testdata", config.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	b, ops := cfg.Callers[0], cfg.Callers[1]
	if b.UnixUID == nil || *b.UnixUID != 1000 || b.UnixGID != nil || ops.UnixGID == nil || *ops.UnixGID != 0 {
		t.Errorf("callers: %+v, %+v", b, ops)
	}
	if b.UsesCertificate() || !b.UsesSocket() {
		t.Error("a unix_uid caller needs no certificate, and a socket")
	}

	var logs bytes.Buffer
	if _, err := config.ParseWith([]byte(sock+listenTenant+"callers:\n  - {name: root, unix_uid: 0, tenants: [acme]}\n"),
		"broker.yaml", "testdata", config.Options{Now: now, Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "id 0 (root)") || !strings.Contains(logs.String(), "config=broker.yaml:6") {
		t.Errorf("uid 0 is not warned about with its line:\n%s", logs.String())
	}

	for _, tt := range []struct{ name, callers, want string }{
		{"uid and gid", "  - {name: b, unix_uid: 1000, unix_gid: 1000, tenants: [acme]}\n",
			`config: broker.yaml:6: callers[0]: caller "b" has both unix_uid and unix_gid; set exactly one of spiffe_id, dns_name, common_name, api_key_sha256, unix_uid, unix_gid`},
		{"uid and api key", "  - {name: b, api_key_sha256: " + strings.Repeat("a", 64) + ", unix_uid: 1000, tenants: [acme]}\n",
			`config: broker.yaml:6: callers[0]: caller "b" has both api_key_sha256 and unix_uid; set exactly one of spiffe_id, dns_name, common_name, api_key_sha256, unix_uid, unix_gid`},
		{"negative uid", "  - {name: b, unix_uid: -1, tenants: [acme]}\n",
			`config: broker.yaml:6: callers[0].unix_uid: must be a user id, a whole number, got -1; write e.g. 1000`},
		{"fractional gid", "  - {name: b, unix_gid: 1000.5, tenants: [acme]}\n",
			`config: broker.yaml:6: callers[0].unix_gid: must be a group id, a whole number, got 1000.5; write e.g. 1000`},
		{"uid as a name", "  - {name: b, unix_uid: billing, tenants: [acme]}\n",
			`config: broker.yaml:6: callers[0].unix_uid: must be a user id, a whole number, got the string "billing"; write e.g. 1000`},
		{"gid (uid_t)-1", "  - {name: b, unix_gid: 4294967295, tenants: [acme]}\n",
			"config: broker.yaml:6: callers[0].unix_gid: 4294967295 is (uid_t)-1, no one's id; give the number `id -u NAME` (or `id -g NAME`) prints"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.ParseWith([]byte(sock+listenTenant+"callers:\n"+tt.callers), "broker.yaml", "testdata", config.Options{Now: now})
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error:\n got %v\nwant %s", err, tt.want)
			}
		})
	}
}
