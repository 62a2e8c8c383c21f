package server_test

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/tokenbroker/tokenbroker/broker/limits"
)

// TestConnectionCaps: connections from one IP beyond the cap are closed
// at once; silent connections are closed after the handshake timeout;
// idle HTTP/2 connections get GOAWAY after MaxConnectionIdle; beyond the
// total cap a connection waits until another closes.
func TestConnectionCaps(t *testing.T) {
	t.Run("per IP and handshake timeout", func(t *testing.T) {
		addr := startLimited(t, limits.Limits{MaxConnectionsPerIP: 8, HandshakeTimeout: 300 * time.Millisecond})
		const n = 20
		conns := make([]net.Conn, n)
		for i := range conns {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conns[i] = c
		}
		// Accepted connections get the server's SETTINGS; the others are
		// closed without a byte. None says anything, so after the
		// handshake timeout every connection is closed.
		var greeted, refused int
		start := time.Now()
		for _, c := range conns {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, _ := io.ReadAll(c)
			if len(got) > 0 {
				greeted++
			} else {
				refused++
			}
		}
		if greeted != 8 || refused != n-8 {
			t.Errorf("%d connections served, %d closed at once; want 8 and %d", greeted, refused, n-8)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("silent connections lived %s; handshake timeout 300ms", d)
		}
		// The slots are free again.
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Errorf("a new connection after the others closed: %v", err)
		}
	})
	t.Run("idle GOAWAY", func(t *testing.T) {
		addr := startLimited(t, limits.Limits{MaxConnectionIdle: 300 * time.Millisecond})
		c := http2Conn(t, addr)
		fr := http2.NewFramer(io.Discard, c)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("no GOAWAY on an idle connection: %v", err)
			}
			if _, ok := f.(*http2.GoAwayFrame); ok {
				return
			}
		}
	})
	t.Run("total", func(t *testing.T) {
		addr := startLimited(t, limits.Limits{MaxConnections: 3})
		var open []net.Conn
		for range 3 {
			open = append(open, http2Conn(t, addr))
		}
		for _, c := range open {
			readSettings(t, c, time.Now().Add(5*time.Second))
		}
		// At the cap, a newcomer from the IP that holds the most is
		// closed at once; Accept does not wait.
		extra, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer extra.Close()
		_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := extra.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
			t.Fatalf("a 4th connection from the same IP beyond the total of 3: %d, %v; want it closed at once", n, err)
		}
		open[0].Close()
		// A slot is free again once the server has seen the close.
		deadline := time.Now().Add(5 * time.Second)
		for {
			// Until the server has seen the close, a newcomer is closed at
			// once, possibly before its preface is written.
			again, err := tryHTTP2Conn(t, addr)
			if err == nil {
				_ = again.SetReadDeadline(deadline)
				var f http2.Frame
				f, err = http2.NewFramer(io.Discard, again).ReadFrame()
				if _, ok := f.(*http2.SettingsFrame); ok {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no slot after a connection closed: %v", err)
			}
			time.Sleep(10 * time.Millisecond) // the server's close is not observable otherwise
		}
	})
}

// dialFrom connects to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) (net.Conn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// TestConnectionCapNotStarvedByOtherAddresses (red team round 7, §3):
// 16 source addresses × the per-IP cap filled the total cap and every
// other client blocked in Accept. Now, with the total full from several
// loopback addresses, a client from another loopback address still gets
// served within a bound (the newest connection of the address holding
// the most is closed for it), and the flooding addresses get no more.
func TestConnectionCapNotStarvedByOtherAddresses(t *testing.T) {
	const perIP, total = 8, 24
	addr := startLimited(t, limits.Limits{MaxConnectionsPerIP: perIP, MaxConnections: total})
	var flood []net.Conn
	for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		for range perIP {
			c, err := dialFrom(t, src, addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
				t.Fatal(err)
			}
			_ = http2.NewFramer(c, nil).WriteSettings()
			readSettings(t, c, time.Now().Add(5*time.Second))
			flood = append(flood, c)
		}
	}
	// The total is full; the flooding addresses get nothing more.
	c, err := dialFrom(t, "127.0.0.2", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("a flooding address got a connection beyond the total: %d, %v", n, err)
	}
	// A client from another address is served at once.
	start := time.Now()
	legit, err := dialFrom(t, "127.0.0.9", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(legit, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	_ = http2.NewFramer(legit, nil).WriteSettings()
	readSettings(t, legit, time.Now().Add(2*time.Second))
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the client from another address waited %s", d)
	}
	// Exactly one flooding connection was closed for it.
	var closed atomic.Int32
	var wg sync.WaitGroup
	for _, f := range flood {
		wg.Go(func() {
			_ = f.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			for {
				if _, err := f.Read(make([]byte, 512)); err != nil {
					if !isTimeout(err) {
						closed.Add(1)
					}
					return
				}
			}
		})
	}
	wg.Wait()
	if n := closed.Load(); n != 1 {
		t.Errorf("%d flooding connections closed, want 1", n)
	}
}

func http2Conn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := tryHTTP2Conn(t, addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tryHTTP2Conn connects and sends the client preface and SETTINGS. Its
// error is not fatal: a server at its connection cap may close the
// connection before the preface is written.
func tryHTTP2Conn(t *testing.T, addr string) (net.Conn, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return nil, err
	}
	if err := http2.NewFramer(c, nil).WriteSettings(); err != nil {
		return nil, err
	}
	return c, nil
}

func readSettings(t *testing.T, c net.Conn, deadline time.Time) {
	t.Helper()
	_ = c.SetReadDeadline(deadline)
	f, err := http2.NewFramer(io.Discard, c).ReadFrame()
	if err != nil {
		t.Fatalf("no SETTINGS from the server: %v", err)
	}
	if _, ok := f.(*http2.SettingsFrame); !ok {
		t.Fatalf("first frame %T, want SETTINGS", f)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
