package server

import (
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Defaults of ConnLimits' zero values: they bound what any peer, before
// it is authenticated, can make the server hold.
const (
	DefaultMaxHeaderListBytes  = 16 << 10 // request metadata; an API key header is < 100 bytes
	DefaultMaxStreamsPerConn   = 100
	DefaultMaxConnections      = 1024
	DefaultMaxConnectionsPerIP = 16
	DefaultHandshakeTimeout    = 5 * time.Second
	DefaultMaxConnectionIdle   = 5 * time.Minute
	DefaultKeepaliveTime       = time.Minute
	DefaultKeepaliveTimeout    = 20 * time.Second
	keepaliveMinTime           = 20 * time.Second // clients ping every 30 s
)

// ConnLimits bound connections and what arrives on them before any
// authentication; the guard caps the calls (guard.Limits). Zero values
// mean the defaults; a negative value means no limit (for tests and
// benchmarks, never production).
type ConnLimits struct {
	// MaxHeaderListBytes caps the metadata (HTTP/2 header list) of one
	// request; a larger one is refused by the transport.
	MaxHeaderListBytes int
	// MaxStreamsPerConn caps the concurrent streams (calls) of one
	// connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
	MaxStreamsPerConn int
	// MaxConnections caps open connections in total. At the cap, Accept
	// never waits: a newcomer from the peer IP holding the most
	// connections (ties included) is closed at once; a newcomer from any
	// other IP is accepted and the newest connection of the IP holding
	// the most is closed instead. So the addresses that hold most of the
	// connections cannot keep others out; only very many source addresses,
	// each holding few, can fill the cap (a network-layer matter).
	MaxConnections int
	// MaxConnectionsPerIP caps open connections from one peer IP address;
	// further ones are closed as soon as they are accepted.
	MaxConnectionsPerIP int
	// HandshakeTimeout closes a connection that has not completed its
	// TLS and HTTP/2 handshake in time.
	HandshakeTimeout time.Duration
	// MaxConnectionIdle closes (GOAWAY) a connection without calls for
	// this long.
	MaxConnectionIdle time.Duration
}

func (l ConnLimits) withDefaults() ConnLimits {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.MaxHeaderListBytes, DefaultMaxHeaderListBytes)
	def(&l.MaxStreamsPerConn, DefaultMaxStreamsPerConn)
	def(&l.MaxConnections, DefaultMaxConnections)
	def(&l.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP)
	if l.HandshakeTimeout == 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if l.MaxConnectionIdle == 0 {
		l.MaxConnectionIdle = DefaultMaxConnectionIdle
	}
	return l
}

// serverOptions are the transport limits as grpc.ServerOptions.
func (l ConnLimits) serverOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		// Clients ping every 30s so that a watch on a dead replica fails
		// over quickly; allow that, and answer faster pings with GOAWAY.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
	}
	ka := keepalive.ServerParameters{Time: DefaultKeepaliveTime, Timeout: DefaultKeepaliveTimeout}
	if l.MaxConnectionIdle > 0 {
		ka.MaxConnectionIdle = l.MaxConnectionIdle
	}
	opts = append(opts, grpc.KeepaliveParams(ka))
	if l.MaxHeaderListBytes > 0 {
		opts = append(opts, grpc.MaxHeaderListSize(uint32(l.MaxHeaderListBytes)))
	}
	if l.MaxStreamsPerConn > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(uint32(l.MaxStreamsPerConn)))
	}
	if l.HandshakeTimeout > 0 {
		opts = append(opts, grpc.ConnectionTimeout(l.HandshakeTimeout))
	}
	return opts
}

// Listener wraps lis with the connection caps of the server's limits:
// MaxConnectionsPerIP, then MaxConnections. Serve the server on it.
func (s *Server) Listener(lis net.Listener) net.Listener {
	return LimitListener(lis, s.limits)
}

// LimitListener wraps lis with the connection caps of l (defaults
// applied): connections beyond MaxConnectionsPerIP from one IP are closed
// at once; at MaxConnections in total, the policy of
// ConnLimits.MaxConnections applies. Accept never blocks on the caps.
func LimitListener(lis net.Listener, l ConnLimits) net.Listener {
	l = l.withDefaults()
	if l.MaxConnectionsPerIP <= 0 && l.MaxConnections <= 0 {
		return lis
	}
	return &capListener{Listener: lis, perIP: l.MaxConnectionsPerIP, total: l.MaxConnections, open: map[string][]*capConn{}}
}

// capListener enforces the per-IP and total connection caps.
type capListener struct {
	net.Listener
	perIP, total int // <= 0: no cap

	mu   sync.Mutex
	n    int
	open map[string][]*capConn // per IP, oldest first
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := hostOf(c.RemoteAddr())
		l.mu.Lock()
		if l.perIP > 0 && len(l.open[ip]) >= l.perIP {
			l.mu.Unlock()
			c.Close()
			continue
		}
		var victim *capConn
		if l.total > 0 && l.n >= l.total {
			top := l.mostConnectedLocked()
			if len(l.open[ip]) >= len(l.open[top]) {
				l.mu.Unlock()
				c.Close() // the newcomer's IP holds the most already
				continue
			}
			conns := l.open[top]
			victim = conns[len(conns)-1]
			l.removeLocked(victim)
		}
		cc := &capConn{Conn: c, l: l, ip: ip}
		l.open[ip] = append(l.open[ip], cc)
		l.n++
		l.mu.Unlock()
		if victim != nil {
			_ = victim.Conn.Close() // counted out already; its own Close is then a no-op
		}
		return cc, nil
	}
}

// mostConnectedLocked returns the IP holding the most connections.
func (l *capListener) mostConnectedLocked() string {
	top, most := "", -1
	for ip, conns := range l.open {
		if len(conns) > most {
			top, most = ip, len(conns)
		}
	}
	return top
}

// removeLocked counts c out, once.
func (l *capListener) removeLocked(c *capConn) {
	if c.gone {
		return
	}
	c.gone = true
	l.n--
	conns := l.open[c.ip]
	for i, o := range conns {
		if o == c {
			conns = append(conns[:i], conns[i+1:]...)
			break
		}
	}
	if len(conns) == 0 {
		delete(l.open, c.ip)
	} else {
		l.open[c.ip] = conns
	}
}

type capConn struct {
	net.Conn
	l    *capListener
	ip   string
	gone bool // guarded by l.mu
}

func (c *capConn) Close() error {
	c.l.mu.Lock()
	c.l.removeLocked(c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// hostOf returns the IP of a peer address, or the whole address if it
// has no port.
func hostOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	s := a.String()
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}
