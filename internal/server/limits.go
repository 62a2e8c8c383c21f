package server

import (
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/tokenbroker/tokenbroker/broker/limits"
)

// Keepalive: clients ping every 30 s so that a watch on a dead replica
// fails over quickly.
const (
	keepaliveTime    = time.Minute
	keepaliveTimeout = 20 * time.Second
	keepaliveMinTime = 20 * time.Second
)

// serverOptions are the transport limits as grpc.ServerOptions.
func serverOptions(l limits.Limits) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		// Allow the clients' pings; answer faster ones with GOAWAY.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
	}
	ka := keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}
	if l.MaxConnectionIdle > 0 {
		ka.MaxConnectionIdle = l.MaxConnectionIdle
	}
	opts = append(opts, grpc.KeepaliveParams(ka))
	if l.MaxMessageBytes > 0 {
		opts = append(opts, grpc.MaxRecvMsgSize(l.MaxMessageBytes))
	}
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
// at once. At MaxConnections in total, Accept never waits: a newcomer
// from the peer IP holding the most connections (ties included) is
// closed at once; a newcomer from any other IP is accepted and the newest
// connection of the IP holding the most is closed instead, so the
// addresses that hold most connections cannot keep others out.
func LimitListener(lis net.Listener, l limits.Limits) net.Listener {
	l = l.WithDefaults()
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
